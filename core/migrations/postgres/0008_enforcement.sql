-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Enforcement receipts (policy/enforcement.py): what each enforcement target did with each
-- asset's restricted tags, its last receipt per asset.

CREATE TABLE enforcement_receipts (
    integration_id text NOT NULL REFERENCES integrations (integration_id) ON DELETE CASCADE,
    asset_id text NOT NULL,
    tenant_id text NOT NULL,
    qualified_name text NOT NULL,
    outcome text NOT NULL,
    asset_version bigint NOT NULL,
    applied_at timestamptz NOT NULL,
    -- the rest of the receipt (target_object, desired, applied, tags, roles, statements, ...)
    body jsonb NOT NULL,
    PRIMARY KEY (integration_id, asset_id)
);
CREATE INDEX enforcement_receipts_name ON enforcement_receipts (integration_id, qualified_name);
