"""The LineageGraph port on Postgres (the embedded profile): two tables (migration 0004), edge
upserts as one set-based statement, traversals one indexed query per level."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from core.domain.errors import Unavailable
from core.domain.lineage import MAX_LINEAGE_NODES, breadth_first, newest_per_edge
from core.domain.model import Direction, EdgeKey, LineageEdge, Subgraph
from core.postgres import BACKEND_ERRORS

_UPSERT_NODES = """
INSERT INTO lineage_nodes (tenant_id, asset_id)
SELECT $1, unnest($2::text[]) ORDER BY 2
ON CONFLICT DO NOTHING
"""
# An edge changes only for a strictly newer source event time (last writer wins).
_UPSERT_EDGES = """
INSERT INTO lineage_edges
    (tenant_id, upstream_id, downstream_id, kind, source_event_time, is_deleted)
SELECT $1, u, d, k, t, x
FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bool[]) AS e(u, d, k, t, x)
ORDER BY u, d, k
ON CONFLICT (tenant_id, upstream_id, downstream_id, kind) DO UPDATE
SET source_event_time = EXCLUDED.source_event_time, is_deleted = EXCLUDED.is_deleted
WHERE lineage_edges.source_event_time < EXCLUDED.source_event_time
"""
# The stored edges among keys; in an upsert, locked until it commits (so `before` is exact).
_EDGES = """
SELECT e.upstream_id, e.downstream_id, e.kind, e.source_event_time, e.is_deleted
FROM lineage_edges e
JOIN unnest($2::text[], $3::text[], $4::text[]) AS k(u, d, k)
  ON e.upstream_id = k.u AND e.downstream_id = k.d AND e.kind = k.k
WHERE e.tenant_id = $1
ORDER BY 1, 2, 3
"""
_BEFORE = _EDGES + "FOR UPDATE OF e"
_LIVE = "SELECT NOT is_deleted FROM lineage_nodes WHERE tenant_id = $1 AND asset_id = $2"
_STEP = {
    forward: f"""
SELECT e.upstream_id, e.downstream_id, e.kind, e.source_event_time
FROM lineage_edges e
JOIN lineage_nodes n ON n.tenant_id = e.tenant_id AND n.asset_id = e.{far}
WHERE e.tenant_id = $1 AND e.{near} = ANY($2::text[]) AND NOT e.is_deleted AND NOT n.is_deleted
"""
    for forward, near, far in (
        (True, "upstream_id", "downstream_id"),
        (False, "downstream_id", "upstream_id"),
    )
}


class PostgresLineageGraph:
    """The LineageGraph port on Postgres. See core.ports.LineageGraph for its guarantees."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert_edges(
        self, tenant_id: str, edges: Sequence[LineageEdge]
    ) -> dict[EdgeKey, LineageEdge | None]:
        rows = newest_per_edge(edges)  # (a statement may touch each row once)
        if not rows:
            return {}
        ends = sorted({e.upstream_id for e in rows} | {e.downstream_id for e in rows})
        columns = (
            [e.upstream_id for e in rows],
            [e.downstream_id for e in rows],
            [e.kind for e in rows],
        )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_UPSERT_NODES, tenant_id, ends)
                stored = await conn.fetch(_BEFORE, tenant_id, *columns)
                await conn.execute(
                    _UPSERT_EDGES,
                    tenant_id,
                    *columns,
                    [e.source_event_time for e in rows],
                    [e.is_deleted for e in rows],
                )
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"lineage store unavailable: {type(exc).__name__}") from exc
        before: dict[EdgeKey, LineageEdge | None] = dict.fromkeys((e.key for e in rows), None)
        before.update(_edges(stored))
        return before

    async def get_edges(
        self, tenant_id: str, keys: Sequence[EdgeKey]
    ) -> dict[EdgeKey, LineageEdge]:
        if not keys:
            return {}
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(_EDGES, tenant_id, *map(list, zip(*keys, strict=True)))
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"lineage store unavailable: {type(exc).__name__}") from exc
        return _edges(rows)

    async def edges_at(
        self, tenant_id: str, asset_ids: Sequence[str], forward: bool
    ) -> list[LineageEdge]:
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(_STEP[forward], tenant_id, list(asset_ids))
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"lineage store unavailable: {type(exc).__name__}") from exc
        return [LineageEdge(r[0], r[1], r[2], r[3]) for r in rows]

    async def upsert_node(self, tenant_id: str, asset_id: str) -> None:
        await self._execute(
            "INSERT INTO lineage_nodes (tenant_id, asset_id) VALUES ($1, $2)"
            " ON CONFLICT (tenant_id, asset_id) DO UPDATE SET is_deleted = false",
            tenant_id,
            asset_id,
        )

    async def delete_node(self, tenant_id: str, asset_id: str) -> bool:
        status = await self._execute(
            "UPDATE lineage_nodes SET is_deleted = true"
            " WHERE tenant_id = $1 AND asset_id = $2 AND NOT is_deleted",
            tenant_id,
            asset_id,
        )
        return status != "UPDATE 0"

    async def traverse(
        self,
        tenant_id: str,
        start: str,
        direction: Direction,
        depth: int,
        max_nodes: int = MAX_LINEAGE_NODES,
    ) -> Subgraph:
        try:
            async with self._pool.acquire() as conn:
                live = await conn.fetchval(_LIVE, tenant_id, start)
                if not live:
                    return Subgraph({}, ())

                async def step(frontier: Sequence[str], forward: bool) -> list[LineageEdge]:
                    rows = await conn.fetch(_STEP[forward], tenant_id, list(frontier))
                    return [LineageEdge(r[0], r[1], r[2], r[3]) for r in rows]

                return await breadth_first(start, direction, depth, max_nodes, step)
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"lineage store unavailable: {type(exc).__name__}") from exc

    async def _execute(self, query: str, *args: object) -> str:
        try:
            return await self._pool.execute(query, *args)
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"lineage store unavailable: {type(exc).__name__}") from exc


def _edges(rows: Sequence[asyncpg.Record]) -> dict[EdgeKey, LineageEdge]:
    return {(r[0], r[1], r[2]): LineageEdge(r[0], r[1], r[2], r[3], r[4]) for r in rows}
