-- Assets, their issues and audit trail, bulk jobs, and the change-event outbox.
-- Every tenant-owned table leads its key with tenant_id.

CREATE TABLE assets (
    tenant_id             text        NOT NULL,
    asset_id              text        NOT NULL,
    qualified_name        text COLLATE "C" NOT NULL,
    asset_type            smallint    NOT NULL,
    name                  text        NOT NULL DEFAULT '',
    description           text        NOT NULL DEFAULT '',
    owners                text[]      NOT NULL DEFAULT '{}',
    data_source           text        NOT NULL DEFAULT '',
    parent_qualified_name text        NOT NULL DEFAULT '',
    parent_id             text        NOT NULL DEFAULT '',
    tags                  jsonb       NOT NULL DEFAULT '[]',
    tag_names             text[]      NOT NULL DEFAULT '{}',
    business_terms        text[]      NOT NULL DEFAULT '{}',
    attributes            jsonb       NOT NULL DEFAULT '{}',
    external_id           text        NOT NULL DEFAULT '',
    version               bigint      NOT NULL,
    is_deleted            boolean     NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    source_event_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, asset_id)
);
CREATE UNIQUE INDEX assets_by_qualified_name ON assets (tenant_id, qualified_name);
CREATE INDEX assets_by_type ON assets (tenant_id, asset_type, qualified_name);
CREATE INDEX assets_by_data_source ON assets (tenant_id, data_source, qualified_name);
CREATE INDEX assets_by_tag ON assets USING gin (tag_names);
CREATE INDEX assets_by_owner ON assets USING gin (owners);

CREATE TABLE issues (
    tenant_id   text        NOT NULL,
    asset_id    text        NOT NULL,
    issue_id    text        NOT NULL,
    source      text        NOT NULL,
    external_id text        NOT NULL,
    type        text        NOT NULL DEFAULT '',
    severity    smallint    NOT NULL DEFAULT 0,
    status      smallint    NOT NULL DEFAULT 1,
    title       text        NOT NULL DEFAULT '',
    description text        NOT NULL DEFAULT '',
    url         text        NOT NULL DEFAULT '',
    opened_at   timestamptz,
    updated_at  timestamptz,
    resolved_at timestamptz,
    PRIMARY KEY (tenant_id, asset_id, issue_id)
);

CREATE TABLE audit (
    tenant_id      text        NOT NULL,
    asset_id       text        NOT NULL,
    seq            bigint GENERATED ALWAYS AS IDENTITY,
    principal      text        NOT NULL,
    action         text        NOT NULL,
    change         smallint    NOT NULL,
    changed_fields text[]      NOT NULL,
    asset_version  bigint      NOT NULL,
    at             timestamptz NOT NULL,
    request_id     text        NOT NULL DEFAULT '',
    origin         text        NOT NULL DEFAULT '',
    event_id       text        NOT NULL,
    PRIMARY KEY (tenant_id, asset_id, seq)
);

CREATE TABLE bulk_jobs (
    tenant_id    text        NOT NULL,
    job_id       text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    closed       boolean     NOT NULL DEFAULT false,
    accepted     bigint      NOT NULL DEFAULT 0,
    written      bigint      NOT NULL DEFAULT 0,
    unchanged    bigint      NOT NULL DEFAULT 0,
    stale        bigint      NOT NULL DEFAULT 0,
    rejected     bigint      NOT NULL DEFAULT 0,
    write_failed bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    PRIMARY KEY (tenant_id, job_id)
);

-- Work items already applied, so a redelivered item is not counted twice (pruned after a day).
CREATE TABLE ingest_applied (
    tenant_id  text        NOT NULL,
    stream_seq bigint      NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, stream_seq)
);

-- Change events written in the same transaction as the change; the relay publishes them to
-- JetStream (Nats-Msg-Id = event_id) and deletes them. A global queue, ordered by id.
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text        NOT NULL,
    event_id   text        NOT NULL,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    headers    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lily_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
