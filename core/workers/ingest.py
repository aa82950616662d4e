"""The eventual-ingest worker: drains the LILY_INGEST work queue into the asset store in
batches. Each batch is written in one transaction per tenant, with its bulk-job counters and
the stream sequences it applied (so a redelivered item is neither written nor counted twice);
messages are acknowledged only after that commit."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg

from core.domain import rules
from core.domain.errors import FieldViolation, Unavailable
from core.domain.model import AssetDraft, JobCounts, WriteContext
from core.events.nats import INGEST_CONSUMER, INGEST_STREAM, NatsChangeBus
from core.metadata import mapping
from core.metadata.service import counts_of, ingest_plan
from core.domain.rules import Plan
from core.ports import AssetStore, Snapshot, TxRequest

log = logging.getLogger(__name__)

MAX_DELIVER = 8


def encode_work_item(ctx: WriteContext, draft: AssetDraft, job_id: str) -> bytes:
    item = events_pb.IngestWorkItem(
        tenant_id=ctx.tenant_id, bulk_job_id=job_id, actor=ctx.actor, request_id=ctx.request_id,
        asset=mapping.draft_to_pb(draft),
    )
    item.accepted_at.FromDatetime(ctx.now)
    return item.SerializeToString()


@dataclass(frozen=True, slots=True)
class _Item:
    msg: Msg
    seq: int
    job_id: str
    draft: AssetDraft
    ctx: WriteContext


def _decode(msg: Msg, now: datetime) -> _Item | None:
    item = events_pb.IngestWorkItem.FromString(msg.data)
    accepted_at = item.accepted_at.ToDatetime(tzinfo=UTC)
    problems: list[FieldViolation] = []
    draft = mapping.draft_from_pb(item.asset, "asset", accepted_at, problems)
    if draft is None:
        return None
    ctx = WriteContext(
        tenant_id=item.tenant_id, actor=item.actor, action="IngestWorker", now=now,
        request_id=item.request_id,
        trace_headers={k: v for k, v in (msg.headers or {}).items() if k in ("traceparent", "tracestate")},
    )
    return _Item(msg, msg.metadata.sequence.stream, item.bulk_job_id, draft, ctx)


class IngestWorker:
    def __init__(self, bus: NatsChangeBus, store: AssetStore, *, batch: int = 1000,
                 on_commit: Callable[[], None] = lambda: None) -> None:
        self._bus = bus
        self._store = store
        self._batch = batch
        self._on_commit = on_commit
        self.applied = 0

    async def run(self) -> None:
        sub = await self._bus.js.pull_subscribe_bind(INGEST_CONSUMER, INGEST_STREAM)
        while True:
            try:
                msgs = await sub.fetch(self._batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as exc:
                log.warning("ingest worker: fetch failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            await self.process(msgs)

    async def process(self, msgs: list[Msg]) -> None:
        by_tenant: dict[str, list[Msg]] = defaultdict(list)
        for msg in msgs:
            by_tenant[msg.subject.split(".")[1]].append(msg)
        for tenant_id, group in by_tenant.items():
            try:
                await self._apply(tenant_id, group)
            except Unavailable as exc:
                log.warning("ingest worker: store unavailable (%s); retrying %d items", exc, len(group))
                for msg in group:
                    await msg.nak(delay=2.0)
            except Exception:  # the worker's per-message boundary: isolate the poison item
                log.exception("ingest worker: batch of %d failed; retrying one by one", len(group))
                for msg in group:
                    await self._apply_one(tenant_id, msg)

    async def _apply_one(self, tenant_id: str, msg: Msg) -> None:
        try:
            await self._apply(tenant_id, [msg])
        except Unavailable:
            await msg.nak(delay=2.0)
        except Exception as exc:  # per-message boundary
            deliveries = msg.metadata.num_delivered
            if deliveries < MAX_DELIVER:
                log.warning("ingest worker: item failed (delivery %d): %s", deliveries, exc)
                await msg.nak(delay=min(2.0 ** deliveries, 60.0))
                return
            log.error("ingest worker: item dead-lettered after %d deliveries: %s", deliveries, exc)
            await self._bus.dead_letter(tenant_id, "ingest", msg.data, str(exc)[:200])
            item = events_pb.IngestWorkItem.FromString(msg.data)
            if item.bulk_job_id:
                await self._store.update_job(tenant_id, item.bulk_job_id, JobCounts(write_failed=1))
            await msg.term()

    async def _apply(self, tenant_id: str, msgs: list[Msg]) -> None:
        now = datetime.now(UTC)
        items: list[_Item] = []
        for msg in msgs:
            item = _decode(msg, now)
            if item is None:  # validated on acceptance; a bad item here can never succeed
                await self._bus.dead_letter(tenant_id, "ingest", msg.data, "invalid work item")
                await msg.term()
                continue
            items.append(item)
        if not items:
            return
        decisions: dict[int, rules.Decision] = {}
        fresh: set[int] = set()

        def plan(snapshot: Snapshot) -> Plan:
            fresh.clear()
            fresh.update(snapshot.fresh_keys)
            todo = [(it.seq, it.draft, it.ctx) for it in items if it.seq in fresh]
            return ingest_plan(todo, decisions)(snapshot)

        def job_counts() -> dict[str, JobCounts]:
            per_job: dict[str, dict[int, rules.Decision]] = defaultdict(dict)
            for it in items:
                if it.job_id and it.seq in decisions:
                    per_job[it.job_id][it.seq] = decisions[it.seq]
            return {job: counts_of(d) for job, d in per_job.items()}

        ids = [rules.asset_id_for(tenant_id, it.draft.qualified_name) for it in items]
        result = await self._store.transact(
            tenant_id, TxRequest(ids, dedupe_keys=[it.seq for it in items], job_counts=job_counts),
            plan,
        )
        if result.changes:
            self._on_commit()
        for it in items:
            await it.msg.ack()
        self.applied += len(fresh)
