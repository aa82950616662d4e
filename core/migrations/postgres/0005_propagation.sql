-- Propagation downstream (core/lineage/propagation.md): each asset's upstream health, and the
-- propagation jobs with their progress.

ALTER TABLE assets ADD COLUMN unhealthy_upstream text[] NOT NULL DEFAULT '{}';

CREATE TABLE propagation_jobs (
    tenant_id      text        NOT NULL,
    job_id         text        NOT NULL,
    asset_id       text        NOT NULL,
    state          smallint    NOT NULL,
    assets_total   bigint      NOT NULL DEFAULT 0,
    assets_done    bigint      NOT NULL DEFAULT 0,
    assets_changed bigint      NOT NULL DEFAULT 0,
    requested_by   text        NOT NULL DEFAULT '',
    error          text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    PRIMARY KEY (tenant_id, job_id)
);
