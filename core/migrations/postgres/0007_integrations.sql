-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Integrations: a tenant's connections to outside systems (policy/integrations.py). `sealed`
-- holds its secrets, encrypted with Lily's secret key (policy/secretbox.py): never stored in
-- the clear.

CREATE TABLE integrations (
    integration_id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (tenant_id),
    type text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    settings jsonb NOT NULL DEFAULT '{}',
    sealed bytea NOT NULL,
    secret_names text[] NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    credential_id text NOT NULL REFERENCES credentials (credential_id),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    secret_rotated_at timestamptz,
    -- until when the webhook secret before the last rotation is still accepted
    previous_secret_until timestamptz
);
CREATE INDEX integrations_tenant ON integrations (tenant_id, created_at);
