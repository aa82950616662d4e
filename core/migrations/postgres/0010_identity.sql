-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Identity (policy/directory.py, policy/sessions.py): each tenant's people as its identity
-- provider (Okta) says they are, and the sessions people signed in with.

CREATE TABLE directory_people (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    user_id text NOT NULL,
    login text NOT NULL DEFAULT '',
    email text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('ACTIVE', 'SUSPENDED', 'DEPROVISIONED')),
    groups text[] NOT NULL DEFAULT '{}',
    source text NOT NULL,
    -- when the provider said what this row says (an update older than it is stale)
    observed_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX directory_people_login ON directory_people (tenant_id, lower(login));

CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    subject text NOT NULL,
    user_id text NOT NULL,
    issuer text NOT NULL,
    -- sha256 of the refresh token's secret; a refresh replaces it
    refresh_digest text NOT NULL,
    -- the identity provider's refresh token, sealed (policy/secretbox.py); empty if none
    upstream bytea NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    -- the newest access token it bought expires then (a revocation lasts until then)
    tokens_until timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_why text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_person ON sessions (tenant_id, user_id) WHERE revoked_at IS NULL;
