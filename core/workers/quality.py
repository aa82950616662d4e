"""The data-quality worker: a durable JetStream consumer of the events that can move a rule's
condition (usage recorded; an asset deleted, restored or tagged; a lineage edge changed). It
stores the usage the events carry, then has the engine (core/quality/engine.py) evaluate the
tenant's rules on the assets concerned. A redelivered event evaluates the same facts again,
which raises or resolves nothing twice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC

from google.protobuf.message import DecodeError
from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg

from core.domain.quality import UsageWindow
from core.events.codec import events_of
from core.events.nats import (
    QUALITY_ACK_WAIT,
    QUALITY_CONSUMER,
    NatsChangeBus,
    ack_after,
    fetch,
    kept,
)
from core.events.pull import Pull
from core.quality.engine import QualityEngine

log = logging.getLogger(__name__)

FETCH = 512


def usage_window(event: events_pb.ChangeEvent) -> UsageWindow:
    u = event.usage
    return UsageWindow(
        event.asset_id,
        u.window_start.ToDatetime(UTC),
        u.window_end.ToDatetime(UTC),
        u.query_count,
        u.distinct_users,
        u.run_id,
    )


class QualityWorker:
    def __init__(self, bus: NatsChangeBus, engine: QualityEngine) -> None:
        self._bus = bus
        self._engine = engine

    async def run(self) -> None:
        sub = await Pull.bind(self._bus.js, self._bus.changes_stream, QUALITY_CONSUMER)
        while True:
            if msgs := await fetch(sub, FETCH, "quality"):
                async with kept(msgs, QUALITY_ACK_WAIT / 3):
                    await self.process(msgs)

    async def process(self, msgs: Sequence[Msg]) -> None:
        """Per tenant: its usage stored, then its rules evaluated on the assets concerned."""
        by_tenant: dict[str, list[tuple[Msg, events_pb.ChangeEvent]]] = {}
        for msg in msgs:
            try:
                found = events_of(msg.data, msg.headers)
            except DecodeError:
                log.error("quality: undecodable event on %s; dropped", msg.subject)
                await msg.term()
                continue
            # (propagation's writes, with a cause: nothing a rule looks at)
            direct = [e for e in found if not e.cause_event_id]
            if not direct:
                await msg.ack()
            for event in direct:
                by_tenant.setdefault(event.tenant_id, []).append((msg, event))
        for tenant, events in by_tenant.items():
            await ack_after([m for m, _ in events], self._tenant(tenant, events), "quality")

    async def _tenant(
        self, tenant: str, events: Sequence[tuple[Msg, events_pb.ChangeEvent]]
    ) -> None:
        usage = [usage_window(e) for _, e in events if e.entity == events_pb.ENTITY_KIND_USAGE]
        await self._engine.store.record_usage(tenant, usage)
        # (an asset deleted, restored or tagged, or an edge from it, changes what is upstream
        # of it too; usage changes only the asset's own facts)
        changed = {
            e.asset_id for _, e in events if e.asset_id and e.entity != events_pb.ENTITY_KIND_USAGE
        }
        await self._engine.on_assets(tenant, {u.asset_id for u in usage}, changed)
