"""The eventual-ingest worker: drains the LILY_INGEST work queue into the asset store.

Each queue message carries the eventual-class assets of one ingest call (IngestWorkBatch). A
fetch of several messages is written in one transaction per tenant, together with its bulk-job
counters and the messages' stream sequences (dedupe keys), so a redelivered message is neither
written nor counted twice; messages are acknowledged only after that commit.

If a transaction fails for a reason other than the store being unavailable, each message is
retried alone, then item by item (each item with its own dedupe key), so one poison item cannot
hold back the rest: it is retried with back-off and dead-lettered after MAX_DELIVER attempts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats.errors
from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg

from core import tracing
from core.domain import rules
from core.domain.errors import Unavailable
from core.domain.model import AssetDraft, JobCounts, WriteContext
from core.domain.rules import Plan
from core.events.nats import (
    INGEST_ACK_WAIT,
    INGEST_CONSUMER,
    NatsChangeBus,
    fetch,
    kept,
    work_tenant,
)
from core.events.pull import Pull
from core.metadata.ingest import count_outcomes, counts_of, ingest_plan
from core.ports import AssetStore, OutboxRecord, Snapshot, TxRequest
from core.wire import common

log = logging.getLogger(__name__)

MAX_DELIVER = 8
# Dedupe keys outlive any redelivery (MAX_DELIVER back-offs of at most a minute) by far.
DEDUPE_KEEP = timedelta(days=1)
PRUNE_EVERY_S = 600.0
# Work messages stay well under NATS's default 1 MiB payload limit.
MAX_WORK_MESSAGE_BYTES = 768 * 1024
# Dedupe keys (int64): a work message's key is work_key(accepted_at, stream_seq); item i of it
# has key | (i + 1), so a message holds at most MAX_WORK_ITEMS assets.
_ITEM_BITS = 12
_SEQ_BITS = 10
MAX_WORK_ITEMS = (1 << _ITEM_BITS) - 1
_KEY_EPOCH_MS = 1_577_836_800_000  # 2020-01-01: 41 bits of milliseconds last until 2089


def work_key(accepted_at: datetime, stream_seq: int) -> int:
    """The dedupe key of a work message: when the server accepted it (ms) and its stream
    sequence (low bits). Not the sequence alone: a stream that is recreated (a new NATS, a
    reset) numbers from 1 again, and its messages would be taken for ones applied before and
    skipped. Two messages share a key only if accepted in the same millisecond with sequences
    1,024 apart, which one stream cannot do (each message is a whole ingest call)."""
    ms = int(accepted_at.timestamp() * 1000) - _KEY_EPOCH_MS
    return ((ms << _SEQ_BITS) | (stream_seq & ((1 << _SEQ_BITS) - 1))) << _ITEM_BITS


def encode_work(ctx: WriteContext, drafts: Sequence[AssetDraft], job_id: str) -> list[bytes]:
    """Queue messages for eventual-class drafts: one per ~768 KiB or MAX_WORK_ITEMS assets.
    Each asset goes in as it was submitted (draft.wire), appended to the encoded header as
    field 3."""
    header = events_pb.IngestWorkBatch(
        tenant_id=ctx.tenant_id, bulk_job_id=job_id, actor=ctx.actor, request_id=ctx.request_id
    )
    header.accepted_at.FromDatetime(ctx.now)
    head = header.SerializeToString()
    messages, chunk, size = [], [head], len(head)
    for draft in drafts:
        wire = draft.wire or common.draft_to_pb(draft).SerializeToString()
        field = _ASSETS_TAG + _varint(len(wire)) + wire
        full = size + len(field) > MAX_WORK_MESSAGE_BYTES or len(chunk) > MAX_WORK_ITEMS
        if len(chunk) > 1 and full:
            messages.append(b"".join(chunk))
            chunk, size = [head], len(head)
        chunk.append(field)
        size += len(field)
    if len(chunk) > 1:
        messages.append(b"".join(chunk))
    return messages


_ASSETS_TAG = bytes([(events_pb.IngestWorkBatch.ASSETS_FIELD_NUMBER << 3) | 2])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class _Unit:
    """Work applied (or skipped, if its key was applied before) as a whole."""

    key: int
    job_id: str
    drafts: list[AssetDraft]
    ctx: WriteContext


def _decode(
    msg: Msg, now: datetime
) -> tuple[events_pb.IngestWorkBatch, WriteContext, list[AssetDraft]]:
    batch = events_pb.IngestWorkBatch.FromString(msg.data)
    accepted_at = batch.accepted_at.ToDatetime(tzinfo=UTC)
    # A consumer span in the caller's trace; the events this work emits carry it on.
    with tracing.continue_trace(
        msg.headers or {}, "lily.ingest.receive", **{"lily.tenant": batch.tenant_id}
    ) as trace_headers:
        pass
    ctx = WriteContext(
        tenant_id=batch.tenant_id,
        actor=batch.actor,
        action="IngestWorker",
        now=now,
        request_id=batch.request_id,
        trace_headers=trace_headers,
    )
    return batch, ctx, [common.draft_from_trusted_pb(a, accepted_at) for a in batch.assets]


class IngestWorker:
    def __init__(
        self,
        bus: NatsChangeBus,
        store: AssetStore,
        *,
        batch: int = 1000,
        concurrency: int = 2,
        on_commit: Callable[[Sequence[OutboxRecord]], None] = lambda records: None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._fetch = max(1, batch // 100)  # messages per fetch; each holds up to 1,000 assets
        self._on_commit = on_commit
        self._concurrency = concurrency
        self.applied = 0

    async def run(self) -> None:
        """Runs `concurrency` fetch-and-apply loops (so Python work on one batch overlaps the
        store's work on another) and prunes old dedupe keys now and then."""
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._concurrency):
                tg.create_task(self._loop())
            tg.create_task(self._prune())

    async def _prune(self) -> None:
        while True:
            try:
                await self._store.prune_dedupe(DEDUPE_KEEP)
            except Unavailable as exc:
                log.warning("ingest worker: could not prune dedupe keys: %s", exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def _loop(self) -> None:
        sub = await Pull.bind(self._bus.js, self._bus.ingest_stream, INGEST_CONSUMER)
        while True:
            # Wait for work, then take what else is ready at once: a fetch of n that starts
            # on an empty queue would linger its whole timeout to fill the batch.
            if not (msgs := await fetch(sub, 1, "ingest worker")):
                continue
            if self._fetch > 1:
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    msgs += await sub.fetch(self._fetch - 1, timeout=0.005)
            async with kept(msgs, INGEST_ACK_WAIT / 3):
                await self.process(msgs)

    async def process(self, msgs: list[Msg]) -> None:
        by_tenant: dict[str, list[Msg]] = defaultdict(list)
        for msg in msgs:
            by_tenant[work_tenant(msg.subject)].append(msg)
        now = datetime.now(UTC)
        for tenant_id, group in by_tenant.items():
            live, units = [], []
            for msg in group:
                try:
                    batch, ctx, drafts = _decode(msg, now)
                except (ValueError, TypeError) as exc:  # can never succeed
                    await self._dead_letter(tenant_id, msg, f"undecodable work message: {exc}")
                    continue
                live.append(msg)
                key = work_key(
                    batch.accepted_at.ToDatetime(tzinfo=UTC), msg.metadata.sequence.stream
                )
                units.append(_Unit(key, batch.bulk_job_id, drafts, ctx))
            try:
                await self._apply_holding(tenant_id, live, units)
            except Exception:  # the worker's per-message boundary
                log.exception("ingest worker: batch failed; retrying its messages one by one")
                for msg, unit in zip(live, units, strict=True):
                    await self._apply_items(tenant_id, msg, unit)
                continue
            for msg in live:
                await msg.ack()

    async def _apply_holding(self, tenant_id: str, msgs: list[Msg], units: list[_Unit]) -> None:
        """Applies the units; while the store is unavailable, keeps the messages (telling
        JetStream they are in progress, so they are neither redelivered nor counted against
        their delivery limit) and tries again with a growing pause: an outage of any length
        loses nothing, and the worker takes no more work meanwhile."""
        pause = 0.5
        while True:
            try:
                await self._apply(tenant_id, units)
                return
            except Unavailable as exc:
                log.warning(
                    "ingest worker: store unavailable (%s); holding %d messages, retrying in %.1fs",
                    exc,
                    len(msgs),
                    pause,
                )
            for msg in msgs:
                await msg.in_progress()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _apply_items(self, tenant_id: str, msg: Msg, unit: _Unit) -> None:
        """Applies a message item by item; a failing item is retried later or dead-lettered."""
        failed = []
        for i, draft in enumerate(unit.drafts):
            item = _Unit(unit.key | (i + 1), unit.job_id, [draft], unit.ctx)
            try:
                await self._apply_holding(tenant_id, [msg], [item])
            except Exception as exc:  # per-item boundary
                failed.append((draft, exc))
        if not failed:
            await msg.ack()
            return
        deliveries = msg.metadata.num_delivered
        if deliveries < MAX_DELIVER:
            log.warning(
                "ingest worker: %d items failed (delivery %d), retrying: %s",
                len(failed),
                deliveries,
                failed[0][1],
            )
            await msg.nak(delay=min(2.0**deliveries, 60.0))
            return
        log.error(
            "ingest worker: %d items dead-lettered after %d deliveries: %s",
            len(failed),
            deliveries,
            failed[0][1],
        )
        poison = events_pb.IngestWorkBatch.FromString(msg.data)
        del poison.assets[:]
        poison.assets.extend(common.draft_to_pb(d) for d, _ in failed)
        await self._bus.dead_letter(
            tenant_id, "ingest", poison.SerializeToString(), str(failed[0][1])[:200]
        )
        if unit.job_id:
            await self._store.update_job(
                tenant_id, unit.job_id, JobCounts(write_failed=len(failed))
            )
        await msg.ack()

    async def _dead_letter(self, tenant_id: str, msg: Msg, reason: str) -> None:
        log.error("ingest worker: %s", reason)
        await self._bus.dead_letter(tenant_id, "ingest", msg.data, reason[:200])
        await msg.term()

    async def _apply(self, tenant_id: str, units: list[_Unit]) -> None:
        if not units:
            return
        decisions: dict[int, rules.Decision] = {}
        fresh: set[int] = set()
        numbered = [(u, [(u.key + n, d, u.ctx) for n, d in enumerate(u.drafts)]) for u in units]

        def plan(snapshot: Snapshot) -> Plan:
            fresh.clear()
            fresh.update(snapshot.fresh_keys)
            todo = [item for u, items in numbered if u.key in fresh for item in items]
            return ingest_plan(todo, decisions)(snapshot)

        def job_counts() -> dict[str, JobCounts]:
            per_job: dict[str, dict[int, rules.Decision]] = defaultdict(dict)
            for u, items in numbered:
                if u.job_id:
                    per_job[u.job_id].update(
                        (k, decisions[k]) for k, _, _ in items if k in decisions
                    )
            return {job: counts_of(d) for job, d in per_job.items() if d}

        ids = [rules.asset_id_for(tenant_id, d.qualified_name) for u in units for d in u.drafts]
        result = await self._store.transact(
            tenant_id,
            TxRequest(ids, dedupe_keys=[u.key for u in units], job_counts=job_counts),
            plan,
        )
        if result.changes:
            self._on_commit(result.outbox)
        self.applied += sum(len(u.drafts) for u in units if u.key in fresh)
        count_outcomes(Counter(d.outcome for d in decisions.values()), "EVENTUAL")
