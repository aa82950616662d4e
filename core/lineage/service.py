"""LineageService: relationships between assets (the lineage graph), their audit entries and
change events, and walks over the graph with a summary of each asset reached."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core.domain.errors import AssetNotFound, NotFound, PermissionDenied
from core.domain.lineage import edge_change, newest_per_edge, outcome
from core.domain.model import (
    Asset,
    Direction,
    EdgeOutcome,
    LineageEdge,
    PropagationJob,
    PropagationState,
    WriteContext,
)
from core.domain.rules import Plan, new_event_id, request_propagation
from core.ports import Access, AssetStore, LineageGraph, OutboxRecord, Snapshot, TxRequest

DEFAULT_DEPTH = 3
MAX_DEPTH = 50
MAX_NODES = 10_000  # per GetLineage answer


@dataclass(frozen=True)
class EdgeResult:
    index: int
    edge: LineageEdge
    outcome: EdgeOutcome


@dataclass(frozen=True)
class LineageNode:
    asset_id: str
    depth: int
    asset: Asset | None  # None: named by an edge, not arrived yet
    open_issues: int


@dataclass(frozen=True)
class Lineage:
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool


class LineageService:
    """The lineage use cases of one cell; what the caller may see goes through `access` (see
    MetadataService)."""

    def __init__(
        self,
        graph: LineageGraph,
        store: AssetStore,
        access: Access,
        *,
        on_commit: Callable[[Sequence[OutboxRecord]], None] = lambda records: None,
    ) -> None:
        self._graph = graph
        self._store = store
        self._access = access
        self._on_commit = on_commit

    async def write(
        self, ctx: WriteContext, edges: Sequence[tuple[int, LineageEdge]]
    ) -> list[EdgeResult]:
        """Applies edges (upserts, and deletes: is_deleted) and returns what each did.

        Order: read what is stored; commit an audit entry and a ChangeEvent for each edge
        whose live state changes (through the asset store's transaction and outbox); write
        the graph; then hand the events to the relay. A failure between the commit and the
        graph write leaves events whose edges the caller's retry writes (its events are then
        sent again: at least once), never an edge written without its event. Two writers of
        one edge at the same instant may both report it CREATED; the graph keeps the newest."""
        if not edges:
            return []
        tenant = ctx.tenant_id
        latest = {e.key: e for e in newest_per_edge([e for _, e in edges])}
        stored = await self._graph.get_edges(tenant, list(latest))
        did = {key: outcome(e, stored.get(key)) for key, e in latest.items()}
        changing = [
            e for key, e in latest.items() if did[key] in (EdgeOutcome.CREATED, EdgeOutcome.DELETED)
        ]
        committed = Plan()
        if changing:
            ups = sorted({e.upstream_id for e in changing})

            def plan(snapshot: Snapshot) -> Plan:
                return Plan(
                    changes=[
                        edge_change(ctx, e, did[e.key], snapshot.assets.get(e.upstream_id))
                        for e in changing
                    ]
                )

            committed = await self._store.transact(tenant, TxRequest(ups), plan)
        # Unchanged edges are written too: a newer time with the same state is kept, so an
        # older event that arrives later stays stale.
        await self._graph.upsert_edges(
            tenant, [e for e in latest.values() if did[e.key] != EdgeOutcome.STALE]
        )
        if committed.changes:
            self._on_commit(committed.outbox)
        results = []
        for index, e in edges:
            winner = latest[e.key]
            # an older duplicate in the batch is stale against the newest one
            what = did[e.key] if e == winner else outcome(e, winner)
            results.append(EdgeResult(index, e, what))
        return results

    async def lineage(
        self,
        tenant_id: str,
        asset_id: str,
        direction: Direction,
        depth: int,
        include_deleted: bool,
    ) -> Lineage:
        """The walk from an asset (which must exist), each node with its asset (if it has
        arrived) and open issue count. Deleted assets are left out unless asked for, and so
        are, with their edges, assets the caller may not see at all (restricted_read=refuse;
        a walk from one is PermissionDenied). Nodes carry no field that redaction blanks."""
        start = await self._store.get(tenant_id, asset_id)
        if start is None or (start.is_deleted and not include_deleted):
            raise AssetNotFound(asset_id)
        sub = await self._graph.traverse(tenant_id, asset_id, direction, depth, MAX_NODES)
        ids = list(sub.nodes) or [asset_id]
        assets, issues = await asyncio.gather(
            self._store.get_many(tenant_id, ids),
            self._store.open_issue_counts(tenant_id, ids),
        )
        assets.setdefault(asset_id, start)
        hidden = {
            i for i, a in assets.items() if a.is_deleted and not include_deleted and i != asset_id
        }
        refused = {
            i
            for i, a in assets.items()
            if i not in hidden
            and self._access.read_view({t.name for t in a.tags}, "GetLineage") == "refused"
        }
        if asset_id in refused:
            raise PermissionDenied(
                f"asset {asset_id!r} carries a tag you may not read",
                metadata={"asset_id": asset_id},
            )
        hidden |= refused
        nodes = [
            LineageNode(i, sub.nodes.get(i, 0), assets.get(i), issues.get(i, 0))
            for i in ids
            if i not in hidden
        ]
        edges = [
            e for e in sub.edges if e.upstream_id not in hidden and e.downstream_id not in hidden
        ]
        return Lineage(nodes, edges, sub.truncated)

    async def propagate(self, ctx: WriteContext, asset_id: str) -> PropagationJob:
        """Asks the propagation worker to recompute everything downstream of an asset: the
        job (PENDING) is stored first, then the request is committed as an audited change
        whose event id is the job's id, then published."""
        tenant = ctx.tenant_id
        start = await self._store.get(tenant, asset_id)
        if start is None or start.is_deleted:
            raise AssetNotFound(asset_id)
        event_id = new_event_id()
        job = PropagationJob(
            tenant_id=tenant,
            job_id=event_id,
            asset_id=asset_id,
            state=PropagationState.PENDING,
            created_at=ctx.now,
            updated_at=ctx.now,
            requested_by=ctx.actor,
        )
        await self._store.put_propagation_job(job)

        def plan(snapshot: Snapshot) -> Plan:
            p = Plan()
            request_propagation(asset_id, snapshot.assets.get(asset_id), event_id, ctx, p)
            return p

        try:
            committed = await self._store.transact(tenant, TxRequest([asset_id]), plan)
        except BaseException as exc:
            failed = replace(job, state=PropagationState.FAILED, error=f"not started: {exc}")
            with contextlib.suppress(Exception):
                await self._store.put_propagation_job(failed)
            raise
        self._on_commit(committed.outbox)
        return job

    async def propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob:
        job = await self._store.get_propagation_job(tenant_id, job_id)
        if job is None:
            raise NotFound(f"propagation job {job_id!r} not found", metadata={"job_id": job_id})
        return job
