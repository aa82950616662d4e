"""What became of each delivery and destination, filed with the core (RecordDeliveries) a
batch at a time: every `every` seconds, or sooner when `batch` are waiting. The core keeps a
record unless it holds a newer one, so a batch sent twice, or late, changes nothing. While
the core cannot be reached, the records wait (at most `keep`; the oldest are let go, with a
warning: a record is what was seen, the delivery itself is on the outbound stream)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import notification_pb2 as notification_pb
from lily.v1 import notification_pb2_grpc as notification_grpc

from adapters.runtime.resolver import TRANSIENT
from adapters.spec import SEVERITY_NAMES, Notification

log = logging.getLogger(__name__)

STATUSES = {
    "queued": notification_pb.DELIVERY_STATUS_QUEUED,
    "delivered": notification_pb.DELIVERY_STATUS_DELIVERED,
    "failed": notification_pb.DELIVERY_STATUS_FAILED,
    "dead": notification_pb.DELIVERY_STATUS_DEAD,
}


def timestamp(epoch: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def seconds(ts: Timestamp) -> float:
    """A Timestamp as epoch seconds (timestamp's inverse)."""
    return ts.ToNanoseconds() / 1e9


def delivery_record(
    n: Notification,
    status: str,
    generation: int,
    attempts: int,
    *,
    destination_type: str = "",
    notification: bytes = b"",
    last_attempt: float | None = None,
    next_attempt: float | None = None,
    delivered: float | None = None,
    destination_status: int = 0,
    destination_message: str = "",
    external_ref: str = "",
) -> notification_pb.NotificationDelivery:
    """A delivery's record as of now (`notification`: as sent, with its first record)."""
    now = time.time()
    severity = SEVERITY_NAMES.index(n.severity) if n.severity in SEVERITY_NAMES else 0
    pb = notification_pb.NotificationDelivery(
        delivery_id=n.delivery_id,
        tenant_id=n.tenant_id,
        subscription_id=n.subscription_id,
        integration_id=n.integration_id,
        destination_type=destination_type,
        event_type=n.event_type,
        event_ids=list(n.event_ids[:100]),
        event_count=max(n.count, len(n.event_ids)),
        asset_id=n.asset_id,
        qualified_name=n.qualified_name,
        severity=common_pb.IssueSeverity.ValueType(severity),
        title=n.title[:4000],
        status=STATUSES[status],
        attempts=attempts,
        generation=generation,
        created_at=timestamp(n.occurred_at or now),
        updated_at=timestamp(now),
        destination_status=destination_status,
        destination_message=destination_message[:4000],
        external_ref=external_ref,
        test=n.test,
        notification=notification,
    )
    for name, value in (
        ("last_attempt_at", last_attempt),
        ("next_attempt_at", next_attempt),
        ("delivered_at", delivered),
    ):
        if value is not None:
            getattr(pb, name).CopyFrom(timestamp(value))
    return pb


class Recorder:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        *,
        every: float = 0.2,
        batch: int = 500,
        keep: int = 100_000,
        timeout: float = 10.0,
    ) -> None:
        self._stub = notification_grpc.NotificationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._every = every
        self._batch = batch
        self._timeout = timeout
        # by delivery: a newer record of one still waiting takes its place (keeping the
        # notification the first carried), so a quick delivery is one record, not two
        self._deliveries: dict[str, notification_pb.NotificationDelivery] = {}
        self._keep = keep
        self._health: dict[str, notification_pb.DestinationHealth] = {}
        self._due = asyncio.Event()

    def delivery(self, record: notification_pb.NotificationDelivery) -> None:
        waiting = self._deliveries.pop(record.delivery_id, None)
        if waiting is not None and waiting.notification and not record.notification:
            record.notification = waiting.notification
        if len(self._deliveries) >= self._keep:
            log.warning("notify: delivery records waiting for the core: the oldest let go")
            del self._deliveries[next(iter(self._deliveries))]
        self._deliveries[record.delivery_id] = record
        if len(self._deliveries) >= self._batch:
            self._due.set()

    def health(self, record: notification_pb.DestinationHealth) -> None:
        self._health[record.integration_id] = record  # (only the newest matters)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await asyncio.wait_for(self._due.wait(), self._every)
                except TimeoutError:
                    pass
                self._due.clear()
                await self.flush()
        finally:
            await self.flush()  # what the stop found waiting, once

    async def flush(self) -> None:
        while self._deliveries or self._health:
            deliveries = list(itertools.islice(self._deliveries.values(), self._batch))
            health = list(self._health.values())[: self._batch]
            try:
                await self._stub.RecordDeliveries(
                    notification_pb.RecordDeliveriesRequest(
                        deliveries=deliveries, destinations=health
                    ),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() in TRANSIENT:
                    log.warning("notify: records wait for the core: %s", err.code().name)
                    return
                # refused (a bug: said, and let go, or it would hold up every later record)
                log.error("notify: %d records refused: %s", len(deliveries), err.details())
            for d in deliveries:  # (unless a newer record of it came meanwhile)
                if self._deliveries.get(d.delivery_id) is d:
                    del self._deliveries[d.delivery_id]
            for h in health:
                if self._health.get(h.integration_id) is h:
                    del self._health[h.integration_id]
