-- control plane (public schema only; see core.postgres.CONTROL_MARK)
-- Data quality (core/quality): each tenant's rules, the usage it records, and the state of
-- each rule on each asset (its firings: one data-quality issue per firing).

CREATE TABLE quality_rules (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    rule_id text NOT NULL,
    type smallint NOT NULL,
    asset_id text NOT NULL DEFAULT '',
    qualified_name_prefix text NOT NULL DEFAULT '',
    threshold double precision NOT NULL DEFAULT 0,
    severity smallint NOT NULL,
    disabled boolean NOT NULL DEFAULT false,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    evaluated_at timestamptz,
    -- the schedule: when the next pass is due, and who is running one (until when)
    due_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_until timestamptz,
    PRIMARY KEY (tenant_id, rule_id)
);
CREATE INDEX quality_rules_due ON quality_rules (due_at) WHERE NOT disabled;

CREATE TABLE quality_usage (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    asset_id text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    query_count bigint NOT NULL,
    distinct_users bigint NOT NULL DEFAULT 0,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, asset_id, window_start)
);

CREATE TABLE quality_firings (
    tenant_id text NOT NULL,
    rule_id text NOT NULL,
    asset_id text NOT NULL,
    -- the count-th time the rule fired on the asset; open while its condition holds;
    -- synced once the issue says so
    count integer NOT NULL,
    open boolean NOT NULL,
    synced boolean NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id, asset_id),
    FOREIGN KEY (tenant_id, rule_id) REFERENCES quality_rules (tenant_id, rule_id) ON DELETE CASCADE
);
CREATE INDEX quality_firings_live ON quality_firings (tenant_id, rule_id) WHERE open OR NOT synced;

-- runs counted into a window (usage from OpenLineage run events: each run counts once)
CREATE TABLE quality_usage_runs (
    tenant_id text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    asset_id text NOT NULL,
    run_id text NOT NULL,
    window_start timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, asset_id, run_id)
);
