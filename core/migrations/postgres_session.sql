-- Run on every new Postgres connection of Lily's pool (core/postgres.py), not a migration:
-- session-local objects that no other connection sees.

-- Where a transaction stages the assets it saves before one INSERT and one UPDATE from it
-- (core/metadata/stores/postgres.py). Emptied at every commit; rows of a rolled-back
-- transaction vanish with it. Array and JSON fields are kept as their text forms.
CREATE TEMPORARY TABLE assets_stage (
    is_new                boolean     NOT NULL,
    asset_id              text        NOT NULL,
    qualified_name        text        NOT NULL,
    asset_type            smallint    NOT NULL,
    name                  text        NOT NULL,
    description           text        NOT NULL,
    owners                text        NOT NULL,
    data_source           text        NOT NULL,
    parent_qualified_name text        NOT NULL,
    parent_id             text        NOT NULL,
    tags                  text        NOT NULL,
    tag_names             text        NOT NULL,
    business_terms        text        NOT NULL,
    attributes            text        NOT NULL,
    external_id           text        NOT NULL,
    version               bigint      NOT NULL,
    is_deleted            boolean     NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    source_event_time     timestamptz NOT NULL,
    unhealthy_upstream    text        NOT NULL
) ON COMMIT DELETE ROWS;
