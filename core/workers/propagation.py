"""The propagation worker: a durable JetStream consumer of asset, issue, relationship and
propagation-request events that recomputes what flows downstream of each change (the rule is
in core/domain/propagation.py, the plan in core/lineage/propagation.md): PROPAGATED tags and
unhealthy upstream.

For a change: the downstream walk from where it happened gives the affected assets; their
upstream closure comes level by level (LineageGraph.edges_at); the assets' own tags and open
issues give each affected asset's origins; transactions of at most `chunk` assets then write
the ones whose derived state differs, each change carrying the causing event's id. Writes of
its own (events with a cause) are not followed again. A redelivered event recomputes the
same answer and writes nothing twice.

A tag change on an asset, an issue opened or resolved on it, or a PropagateDownstream request
is a job (id: the causing event's id) with its progress in the store. Edges and new assets,
which come in bulk, are looked at together per fetch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg

from core import metrics, tracing
from core.domain import rules
from core.domain.model import Direction, PropagationJob, PropagationState, WriteContext
from core.domain.propagation import origins, own_propagating, propagated, unhealthy_upstream
from core.domain.rules import Plan
from core.events.codec import events_of
from core.events.nats import (
    PROPAGATION_ACK_WAIT,
    PROPAGATION_CONSUMER,
    PROPAGATION_MAX_DELIVER,
    NatsChangeBus,
    ack_after,
    fetch,
    kept,
)
from core.events.pull import Pull
from core.ports import AssetStore, LineageGraph, OutboxRecord, Snapshot, TxRequest

log = logging.getLogger(__name__)

CHUNK = 500  # assets per transaction
FETCH = 256  # events per fetch
PARALLEL = 4  # transactions of one propagation at a time
ACTOR = "lily-propagation"

_ASSET = events_pb.ENTITY_KIND_ASSET
_JOB, _EDGE, _ARRIVAL = "job", "edge", "arrival"

Event = tuple[Msg, events_pb.ChangeEvent]


class _Progress:
    """A job's progress, written to the store as it moves (one write at a time)."""

    def __init__(self, store: AssetStore, job: PropagationJob) -> None:
        self._store = store
        self.job = job
        self._lock = asyncio.Lock()

    async def set(self, **fields: object) -> None:
        async with self._lock:
            self.job = replace(self.job, updated_at=datetime.now(UTC), **fields)  # type: ignore[arg-type]
            await self._store.put_propagation_job(self.job)

    async def add(self, done: int, changed: int) -> None:
        async with self._lock:
            j = self.job
            self.job = replace(
                j,
                assets_done=j.assets_done + done,
                assets_changed=j.assets_changed + changed,
                updated_at=datetime.now(UTC),
            )
            await self._store.put_propagation_job(self.job)


class PropagationWorker:
    def __init__(
        self,
        bus: NatsChangeBus,
        store: AssetStore,
        graph: LineageGraph,
        *,
        propagating: Iterable[str],
        max_depth: int,
        chunk: int = CHUNK,
        parallel: int = PARALLEL,
        on_commit: Callable[[Sequence[OutboxRecord]], None] = lambda records: None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._graph = graph
        self._propagating = frozenset(propagating)
        self._max_depth = max_depth
        self._chunk = chunk
        self._parallel = parallel
        self._on_commit = on_commit

    async def run(self) -> None:
        sub = await Pull.bind(self._bus.js, self._bus.changes_stream, PROPAGATION_CONSUMER)
        while True:
            if msgs := await fetch(sub, FETCH, "propagation"):
                async with kept(msgs, PROPAGATION_ACK_WAIT / 3):
                    await self.process(msgs)

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Handles a fetch: per tenant, each job on its own, edges and new assets together."""
        by_tenant: dict[str, dict[str, list[Event]]] = {}
        for msg in msgs:
            try:
                events = events_of(msg.data, msg.headers)
            except DecodeError:
                log.error("propagation: undecodable event on %s; dropped", msg.subject)
                await msg.term()
                continue
            # (a batch's events share their subject, so their kind: a bulk ingest's arrivals)
            handled = [(kind, e) for e in events if (kind := self._kind(e)) is not None]
            if not handled:
                await msg.ack()
            for kind, event in handled:
                by_tenant.setdefault(event.tenant_id, {}).setdefault(kind, []).append((msg, event))
        for tenant, kinds in by_tenant.items():
            await self._jobs(tenant, kinds.get(_JOB, []))
            batch = [*kinds.get(_EDGE, []), *kinds.get(_ARRIVAL, [])]
            if batch:
                await ack_after([m for m, _ in batch], self._batch(tenant, kinds), "propagation")

    def _kind(self, event: events_pb.ChangeEvent) -> str | None:
        """How an event is handled; None: it cannot move anything downstream."""
        if event.cause_event_id:
            return None  # our own writes (and their chains) are already complete
        if event.entity == events_pb.ENTITY_KIND_RELATIONSHIP:
            return _EDGE
        if event.entity in (events_pb.ENTITY_KIND_ISSUE, events_pb.ENTITY_KIND_PROPAGATION):
            return _JOB
        if event.entity != _ASSET:
            return None
        if event.change == events_pb.CHANGE_KIND_CREATED:
            return _ARRIVAL
        if event.change == events_pb.CHANGE_KIND_DELETED or "is_deleted" in event.changed_fields:
            return _JOB  # (deleted, or back again)
        moved = self._propagating.intersection(event.own_tags_moved)
        return _JOB if moved or event.propagate_tags_moved else None

    # -- jobs -------------------------------------------------------------------------------

    async def _jobs(self, tenant: str, jobs: Sequence[Event]) -> None:
        """Runs each job whose asset has anything downstream (one query tells which);
        requests always run, so that their job finishes."""
        if not jobs:
            return
        try:
            ids = [e.asset_id for _, e in jobs]
            feeding = {x.upstream_id for x in await self._graph.edges_at(tenant, ids, forward=True)}
        except Exception as exc:  # (each job's own failures are handled in _job)
            log.warning("propagation: cannot look at %d job(s): %s", len(jobs), exc)
            for msg, _ in jobs:
                await msg.nak(delay=2.0)
            return
        for msg, event in jobs:
            if event.entity == events_pb.ENTITY_KIND_PROPAGATION or event.asset_id in feeding:
                job = self._job(tenant, event, msg.metadata.num_delivered, msg.headers or {})
                await ack_after([msg], job, "propagation")
            else:
                await msg.ack()

    async def _job(
        self,
        tenant: str,
        event: events_pb.ChangeEvent,
        delivery: int,
        headers: Mapping[str, str],
    ) -> None:
        """One propagation from an asset, as a job with progress, in a span of the trace of
        the change that caused it. A job that is resumed (its event redelivered) starts over
        from the truth: what is already right is done."""
        with tracing.continue_trace(headers, "propagation job", job=event.event_id) as carrier:
            await self._run_job(tenant, event, delivery, carrier)

    async def _run_job(
        self,
        tenant: str,
        event: events_pb.ChangeEvent,
        delivery: int,
        carrier: Mapping[str, str],
    ) -> None:
        started = time.perf_counter()
        now = datetime.now(UTC)
        job = PropagationJob(
            tenant_id=tenant,
            job_id=event.event_id,
            asset_id=event.asset_id,
            state=PropagationState.RUNNING,
            created_at=now,
            updated_at=now,
            requested_by=event.actor,
        )
        progress = _Progress(self._store, job)

        async def begin() -> None:
            """Shows the job running at once (keeping what a resumed one had)."""
            if prior := await self._store.get_propagation_job(tenant, event.event_id):
                progress.job = replace(
                    job,
                    created_at=prior.created_at,
                    requested_by=prior.requested_by,
                    assets_changed=prior.assets_changed,
                )
            await progress.set()

        requested = event.entity == events_pb.ENTITY_KIND_PROPAGATION
        try:
            _, affected = await asyncio.gather(  # (the walk, meanwhile)
                begin(), self._walk(tenant, {event.asset_id: event.event_id}, requested)
            )
            changed = await self._recompute(tenant, affected, {event.event_id: carrier}, progress)
        except Exception as exc:
            ended = "failed" if delivery >= PROPAGATION_MAX_DELIVER else "retried"
            metrics.PROPAGATION_SECONDS.labels(ended).observe(time.perf_counter() - started)
            if delivery >= PROPAGATION_MAX_DELIVER:
                await progress.set(
                    state=PropagationState.FAILED,
                    error=f"gave up after {delivery} attempts: {exc}",
                    finished_at=datetime.now(UTC),
                )
            raise
        await progress.set(state=PropagationState.SUCCEEDED, finished_at=datetime.now(UTC))
        metrics.PROPAGATION_SECONDS.labels("succeeded").observe(time.perf_counter() - started)
        log.info(
            "propagation job %s done: %d downstream, %d changed in %.0f ms",
            event.event_id,
            len(affected),
            changed,
            (time.perf_counter() - started) * 1000,
        )

    # -- edges and new assets ---------------------------------------------------------------

    async def _batch(self, tenant: str, kinds: Mapping[str, Sequence[Event]]) -> None:
        """Edges created or deleted, and new assets, together. An edge affects its downstream
        end and everything below. A new asset with edges into it (it arrived after its
        lineage) inherits; one with tags and edges out of it is a start too."""
        starts: dict[str, str] = {}
        for _, e in kinds.get(_EDGE, []):
            starts.setdefault(e.relationship.downstream_asset_id, e.event_id)
        arrivals = [e for _, e in kinds.get(_ARRIVAL, [])]
        affected: dict[str, str] = {}
        if arrivals:
            ids = [e.asset_id for e in arrivals]
            tagged = [e.asset_id for e in arrivals if e.tags]
            into = await self._graph.edges_at(tenant, ids, forward=False)
            fed = {x.downstream_id for x in into}
            out = await self._graph.edges_at(tenant, tagged, forward=True) if tagged else []
            feeding = {x.upstream_id for x in out}
            for e in arrivals:
                if e.asset_id in feeding:
                    starts.setdefault(e.asset_id, e.event_id)
                elif e.asset_id in fed:
                    affected.setdefault(e.asset_id, e.event_id)
        affected.update(await self._walk(tenant, starts, True))
        if affected:
            traces = {
                e.event_id: tracing.trace_of(m.headers) for es in kinds.values() for m, e in es
            }
            await self._recompute(tenant, affected, traces)

    # -- the recompute ----------------------------------------------------------------------

    async def _walk(
        self, tenant: str, starts: Mapping[str, str], with_starts: bool
    ) -> dict[str, str]:
        """Everything downstream of the starts within the depth bound (with the starts
        themselves if asked), each with the cause of the first start that reached it."""
        found = dict(starts) if with_starts else {}
        if len(starts) == 1:  # one walk, in one query (a job)
            [(start, cause)] = starts.items()
            sub = await self._graph.traverse(tenant, start, Direction.DOWNSTREAM, self._max_depth)
            if not sub.truncated:
                found.update((i, cause) for i in sub.nodes if i != start)
                return found
        reached = dict(starts)
        frontier = list(starts)
        for _ in range(self._max_depth):
            if not frontier:
                break
            following = []
            for e in await self._graph.edges_at(tenant, frontier, forward=True):
                if e.downstream_id not in reached:
                    reached[e.downstream_id] = found[e.downstream_id] = reached[e.upstream_id]
                    following.append(e.downstream_id)
            frontier = following
        return found

    async def _recompute(
        self,
        tenant: str,
        affected: Mapping[str, str],
        traces: Mapping[str, Mapping[str, str]],
        progress: _Progress | None = None,
    ) -> int:
        """Writes the derived state (PROPAGATED tags, unhealthy upstream) of the affected
        assets (id -> the causing event) that is not what their upstream supplies, each
        change in the trace of its cause (`traces`, by event id); returns how many changed."""
        ids = list(affected)
        parents: dict[str, list[str]] = {}
        seen, frontier = set(ids), ids
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
        closure = sorted(seen)
        assets, issues = await asyncio.gather(
            self._store.get_many(tenant, closure), self._store.open_issue_counts(tenant, closure)
        )
        # A deleted asset supplies no tags, but its open issues still say it is unhealthy
        # (e.g. the data-quality rule that found it deleted while still used downstream).
        own = {
            i: own_propagating(() if a.is_deleted else a.tags, self._propagating, i in issues)
            for i, a in assets.items()
        }
        found = origins(ids, parents, own, self._max_depth)
        wanted = {
            i: (propagated(found[i], own), unhealthy_upstream(found[i]))
            for i in ids
            if i in own and not assets[i].is_deleted  # (not arrived yet, or deleted: nothing)
        }
        due = [  # (read again, under its locks, by each transaction)
            i for i, (tags, sick) in wanted.items() if rules.derived_differs(assets[i], tags, sick)
        ]
        if progress is not None:
            await progress.set(assets_total=len(ids), assets_done=len(ids) - len(due))
        now = datetime.now(UTC)
        contexts = {
            cause: WriteContext(
                tenant_id=tenant,
                actor=ACTOR,
                action="Propagation",
                now=now,
                cause_event_id=cause,
                trace_headers=traces.get(cause, {}),
            )
            for cause in set(affected.values())
        }
        gate = asyncio.Semaphore(self._parallel)

        async def write(chunk: list[str]) -> int:
            def plan(snapshot: Snapshot) -> Plan:
                p = Plan()
                for i in chunk:
                    if (current := snapshot.assets.get(i)) is not None:
                        tags, sick = wanted[i]
                        rules.set_derived(current, tags, sick, contexts[affected[i]], p)
                return p

            async with gate:
                result = await self._store.transact(tenant, TxRequest(chunk), plan)
                if result.changes:
                    self._on_commit(result.outbox)
                if progress is not None:
                    await progress.add(len(chunk), len(result.saves))
            return len(result.saves)

        # (disjoint chunks: their transactions may run side by side)
        step = self._chunk
        done = await asyncio.gather(*(write(due[n : n + step]) for n in range(0, len(due), step)))
        return sum(done)
