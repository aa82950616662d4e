"""The propagation worker: a durable JetStream consumer of asset and relationship changes that
recomputes the PROPAGATED tags of every asset downstream of each change (the rule is in
core/domain/propagation.py, the plan in core/lineage/propagation.md).

For one event: the downstream walk from where it happened gives the affected assets; their
upstream closure comes level by level (LineageGraph.edges_at); the assets' own tags give
each affected asset's origins per tag; transactions of at most CHUNK assets then write the
ones whose PROPAGATED tags differ, each change carrying the event's id as its cause. Writes
of its own (events with a cause) are not followed again. A redelivered event recomputes the
same answer and writes nothing twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg

from core.domain import rules
from core.domain.errors import Unavailable
from core.domain.model import Direction, WriteContext
from core.domain.propagation import origins, own_propagating, propagated
from core.domain.rules import Plan
from core.events.nats import CHANGES_STREAM, PROPAGATION_CONSUMER, NatsChangeBus, fetch
from core.ports import AssetStore, LineageGraph, OutboxRecord, Snapshot, TxRequest

log = logging.getLogger(__name__)

CHUNK = 500  # assets per transaction
FETCH = 256  # events per fetch
PARALLEL = 4  # transactions of one propagation at a time
ACTOR = "lily-propagation"


class PropagationWorker:
    def __init__(
        self,
        bus: NatsChangeBus,
        store: AssetStore,
        graph: LineageGraph,
        *,
        propagating: Iterable[str],
        max_depth: int,
        on_commit: Callable[[Sequence[OutboxRecord]], None] = lambda records: None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._graph = graph
        self._propagating = frozenset(propagating)
        self._max_depth = max_depth
        self._on_commit = on_commit

    async def run(self) -> None:
        sub = await self._bus.js.pull_subscribe_bind(PROPAGATION_CONSUMER, CHANGES_STREAM)
        while True:
            if msgs := await fetch(sub, FETCH, "propagation"):
                await self.process(msgs)

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Handles a fetch: each event on its own, except new assets, which are looked at
        together per tenant (_arrived)."""
        arrivals: dict[str, list[tuple[Msg, events_pb.ChangeEvent]]] = {}
        for msg in msgs:
            event = events_pb.ChangeEvent.FromString(msg.data)
            if self._arrival(event):
                arrivals.setdefault(event.tenant_id, []).append((msg, event))
            else:
                await self._ack_after([msg], self.handle(event))
        for tenant, items in arrivals.items():
            await self._ack_after(
                [m for m, _ in items], self._arrived(tenant, [e for _, e in items])
            )

    async def _ack_after(self, msgs: Sequence[Msg], work: Awaitable[object]) -> None:
        """Acks the messages once `work` is done; naks them (to come again) if it failed."""
        try:
            await work
        except Unavailable as exc:
            log.warning("propagation: store unavailable (%s); retrying later", exc)
            for msg in msgs:
                await msg.nak(delay=2.0)
            return
        except Exception:  # the worker's per-event boundary
            log.exception("propagation: %d event(s) failed", len(msgs))
            for msg in msgs:
                await msg.nak(delay=min(2.0**msg.metadata.num_delivered, 60.0))
            return
        for msg in msgs:
            await msg.ack()

    def _arrival(self, event: events_pb.ChangeEvent) -> bool:
        return (
            not event.cause_event_id
            and event.entity == events_pb.ENTITY_KIND_ASSET
            and event.change == events_pb.CHANGE_KIND_CREATED
        )

    async def _arrived(self, tenant: str, events: Sequence[events_pb.ChangeEvent]) -> None:
        """New assets, most of a bulk ingest, looked at together: two queries tell which have
        lineage at all. One with edges into it (it arrived after its lineage) inherits; one
        with a propagating tag and edges out of it propagates downstream."""
        ids = [e.asset_id for e in events]
        tagged = [e.asset_id for e in events if self._propagating.intersection(e.tags)]
        fed = {e.downstream_id for e in await self._graph.edges_at(tenant, ids, forward=False)}
        feeding = (
            {e.upstream_id for e in await self._graph.edges_at(tenant, tagged, forward=True)}
            if tagged
            else set()
        )
        for event in events:
            if event.asset_id in feeding:
                await self.handle(event)
            elif event.asset_id in fed:
                await self._recompute(tenant, [event.asset_id], event.event_id)

    def _start(self, event: events_pb.ChangeEvent) -> str | None:
        """Where a change that can move propagated tags happened; None if it cannot."""
        if event.cause_event_id:
            return None  # our own writes (and their chains) are already complete
        if event.entity == events_pb.ENTITY_KIND_RELATIONSHIP:
            return event.relationship.downstream_asset_id
        if event.entity != events_pb.ENTITY_KIND_ASSET:
            return None
        if event.change in (events_pb.CHANGE_KIND_CREATED, events_pb.CHANGE_KIND_DELETED):
            return event.asset_id
        moved = {*event.tags_added, *event.tags_removed}
        if moved & self._propagating or ("tags" in event.changed_fields and not moved):
            return event.asset_id
        return None

    async def handle(self, event: events_pb.ChangeEvent) -> int:
        """Propagates from one change; returns how many assets it changed."""
        start = self._start(event)
        if start is None:
            return 0
        tenant = event.tenant_id
        walk = await self._graph.traverse(tenant, start, Direction.DOWNSTREAM, self._max_depth)
        return await self._recompute(tenant, list(walk.nodes) or [start], event.event_id)

    async def _recompute(self, tenant: str, affected: list[str], cause: str) -> int:
        """Writes the PROPAGATED tags of the affected assets that are not what their upstream
        supplies; returns how many changed."""
        parents: dict[str, list[str]] = {}
        seen, frontier = set(affected), affected
        for _ in range(self._max_depth):
            if not frontier:
                break
            following = []
            for e in await self._graph.edges_at(tenant, frontier, forward=False):
                parents.setdefault(e.downstream_id, []).append(e.upstream_id)
                if e.upstream_id not in seen:
                    seen.add(e.upstream_id)
                    following.append(e.upstream_id)
            frontier = following
        assets = await self._store.get_many(tenant, sorted(seen))
        own = {
            i: own_propagating(a.tags, self._propagating)
            for i, a in assets.items()
            if not a.is_deleted
        }
        found = origins(affected, parents, own, self._max_depth)
        ctx = WriteContext(
            tenant_id=tenant,
            actor=ACTOR,
            action="Propagation",
            now=datetime.now(UTC),
            cause_event_id=cause,
        )
        wanted = {i: propagated(found[i], own) for i in affected if i in assets}
        due = [  # (read again, under its locks, by each transaction)
            i for i, tags in wanted.items() if any(rules.propagated_delta(assets[i].tags, tags))
        ]
        gate = asyncio.Semaphore(PARALLEL)

        async def write(chunk: list[str]) -> int:
            def plan(snapshot: Snapshot) -> Plan:
                p = Plan()
                for i in chunk:
                    if (current := snapshot.assets.get(i)) is not None:
                        rules.set_propagated(current, wanted[i], ctx, p)
                return p

            async with gate:
                result = await self._store.transact(tenant, TxRequest(chunk), plan)
            if result.changes:
                self._on_commit(result.outbox)
            return len(result.saves)

        # (disjoint chunks: their transactions may run side by side)
        done = await asyncio.gather(*(write(due[n : n + CHUNK]) for n in range(0, len(due), CHUNK)))
        return sum(done)
