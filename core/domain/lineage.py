"""Lineage traversal, the same for every graph store: breadth-first, level by level, from a
start node, each store only answering "the live edges leaving these nodes"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core.domain.model import (
    Asset,
    Change,
    ChangeKind,
    Direction,
    EdgeOutcome,
    EntityKind,
    LineageEdge,
    Subgraph,
    WriteContext,
)
from core.domain.rules import new_event_id

# Traversals stop at this depth and this many nodes (a Subgraph says when it was cut short).
MAX_LINEAGE_DEPTH = 100
MAX_LINEAGE_NODES = 100_000

# The live edges from (forward) or into (not forward) these nodes, whose other end is live.
Step = Callable[[Sequence[str], bool], Awaitable[Sequence[LineageEdge]]]
# One direction's walk (forward = downstream) to a depth.
Walk = Callable[[bool, int], Awaitable[Subgraph]]


async def in_direction(direction: Direction, depth: int, walk: Walk) -> Subgraph:
    """A traversal from its one-direction walks: the depth bounded to MAX_LINEAGE_DEPTH,
    BOTH the two walks merged. Every store's traverse goes through here."""
    depth = max(0, min(depth, MAX_LINEAGE_DEPTH))
    if direction == Direction.BOTH:
        return merge(await walk(True, depth), await walk(False, depth))
    return await walk(direction == Direction.DOWNSTREAM, depth)


async def breadth_first(
    start: str, direction: Direction, depth: int, max_nodes: int, step: Step
) -> Subgraph:
    """The subgraph within `depth` hops of `start` (a live node) in `direction`. Each node is
    visited once, at its shortest distance, so cycles end; BOTH merges the two walks."""

    async def walk(forward: bool, depth: int) -> Subgraph:
        return await _walk(start, forward, depth, max_nodes, step)

    return await in_direction(direction, depth, walk)


def merge(down: Subgraph, up: Subgraph) -> Subgraph:
    """The BOTH walk: the downstream and upstream walks together (each node at its nearer
    distance)."""
    nodes = dict(up.nodes)
    for node, d in down.nodes.items():
        nodes[node] = min(d, nodes.get(node, d))
    edges = tuple(dict.fromkeys((*down.edges, *up.edges)))
    return Subgraph(nodes, edges, down.truncated or up.truncated)


async def _walk(start: str, forward: bool, depth: int, max_nodes: int, step: Step) -> Subgraph:
    nodes = {start: 0}
    edges: dict[tuple[str, str, str], LineageEdge] = {}
    frontier = [start]
    truncated = False
    for level in range(1, depth + 1):
        if not frontier or truncated:
            break
        following = []
        for edge in await step(frontier, forward):
            target = edge.downstream_id if forward else edge.upstream_id
            if target not in nodes:
                if len(nodes) >= max_nodes:
                    truncated = True
                    continue
                nodes[target] = level
                following.append(target)
            edges[(edge.upstream_id, edge.downstream_id, edge.kind)] = edge
        frontier = following
    return Subgraph(nodes, tuple(edges.values()), truncated)


def changed(edge: LineageEdge, before: LineageEdge | None) -> bool:
    """Whether writing `edge` over `before` (the stored edge, None if new) changes the stored
    row: last writer wins by source event time."""
    return before is None or before.source_event_time < edge.source_event_time


def outcome(edge: LineageEdge, before: LineageEdge | None) -> EdgeOutcome:
    """What writing `edge` over `before` did to the live graph."""
    if before is not None and before.source_event_time > edge.source_event_time:
        return EdgeOutcome.STALE
    was_live = before is not None and not before.is_deleted
    if not changed(edge, before) or was_live == (not edge.is_deleted):
        return EdgeOutcome.UNCHANGED
    return EdgeOutcome.DELETED if edge.is_deleted else EdgeOutcome.CREATED


def edge_change(
    ctx: WriteContext, edge: LineageEdge, what: EdgeOutcome, upstream: Asset | None
) -> Change:
    """The change (audit entry and ChangeEvent) of an edge created or deleted: about its
    upstream asset, which may not have arrived yet (then without name or type)."""
    return Change(
        event_id=new_event_id(),
        tenant_id=ctx.tenant_id,
        entity=EntityKind.RELATIONSHIP,
        change=ChangeKind.DELETED if what == EdgeOutcome.DELETED else ChangeKind.CREATED,
        asset_id=edge.upstream_id,
        qualified_name=upstream.qualified_name if upstream else "",
        asset_type=upstream.asset_type if upstream else None,
        asset_version=upstream.version if upstream else 0,
        changed_fields=("relationships",),
        actor=ctx.actor,
        action=ctx.action,
        occurred_at=ctx.now,
        relationship=edge,
        request_id=ctx.request_id,
        origin=ctx.origin,
        cause_event_id=ctx.cause_event_id,
        trace_headers=ctx.trace_headers,
    )


def newest_per_edge(edges: Sequence[LineageEdge]) -> list[LineageEdge]:
    """One edge per (upstream, downstream, kind): the newest by source event time (a batch
    that names an edge twice applies as if sent in time order)."""
    latest: dict[tuple[str, str, str], LineageEdge] = {}
    for e in edges:
        key = (e.upstream_id, e.downstream_id, e.kind)
        if key not in latest or latest[key].source_event_time < e.source_event_time:
            latest[key] = e
    return list(latest.values())
