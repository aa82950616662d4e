-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Policy: tenants, Casbin rules, credentials, Lily's signing keys, revoked tokens, denials.

CREATE TABLE tenants (
    tenant_id text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    isolation text NOT NULL CHECK (isolation IN ('SHARED', 'DEDICATED')),
    state text NOT NULL CHECK (state IN ('PROVISIONING', 'READY', 'FAILED')),
    error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Casbin's usual layout. p: v0 subject, v1 domain, v2 object, v3 action, v4 effect;
-- g: v0 subject, v1 role, v2 domain. Built-in policies are not stored (policy/builtin.csv).
CREATE TABLE casbin_rule (
    id bigserial PRIMARY KEY,
    ptype text NOT NULL CHECK (ptype IN ('p', 'g')),
    v0 text NOT NULL,
    v1 text NOT NULL,
    v2 text NOT NULL,
    v3 text NOT NULL DEFAULT '',
    v4 text NOT NULL DEFAULT '',
    v5 text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX casbin_rule_line ON casbin_rule (ptype, v0, v1, v2, v3, v4, v5);
CREATE INDEX casbin_rule_p_domain ON casbin_rule (v1) WHERE ptype = 'p';
CREATE INDEX casbin_rule_g_domain ON casbin_rule (v2) WHERE ptype = 'g';

CREATE TABLE credentials (
    credential_id text PRIMARY KEY,
    tenant_id text NOT NULL REFERENCES tenants (tenant_id),
    kind text NOT NULL CHECK (kind IN ('API_KEY', 'CLIENT')),
    subject text NOT NULL,
    secret_digest text NOT NULL,
    roles text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX credentials_tenant ON credentials (tenant_id, created_at);

CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    private_pem text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

CREATE TABLE revoked_tokens (
    jti text PRIMARY KEY,
    tenant_id text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE denials (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    at timestamptz NOT NULL,
    subject text NOT NULL,
    method text NOT NULL,
    object text NOT NULL,
    action text NOT NULL,
    code text NOT NULL,
    reason text NOT NULL,
    request_id text NOT NULL,
    origin text NOT NULL
);
CREATE INDEX denials_tenant_at ON denials (tenant_id, at DESC);
