-- The lineage graph of the embedded profile (core/lineage/stores/postgres.py): nodes are asset
-- ids, edges run upstream -> downstream; both soft-deleted. Keys lead with the tenant.
CREATE TABLE lineage_nodes (
    tenant_id  text    NOT NULL,
    asset_id   text    NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, asset_id)
);

CREATE TABLE lineage_edges (
    tenant_id         text        NOT NULL,
    upstream_id       text        NOT NULL,
    downstream_id     text        NOT NULL,
    kind              text        NOT NULL,
    source_event_time timestamptz NOT NULL,
    is_deleted        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, upstream_id, downstream_id, kind)
);
-- Upstream walks follow edges backwards.
CREATE INDEX lineage_edges_upstream_walk ON lineage_edges (tenant_id, downstream_id)
    WHERE NOT is_deleted;
