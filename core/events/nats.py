"""NatsChangeBus: the ChangeBus port on NATS JetStream.

Streams (created or updated at start):
- LILY_CHANGES  lily.<tenant>.<entity>.<change>  change events; file storage; de-duplicated by
  Nats-Msg-Id (= event id) within a two-minute window.
- LILY_INGEST   lilyq.<tenant>.ingest             eventual-class assets; work-queue retention.
- LILY_DEAD     lilydead.<tenant>.<queue>         work items that can never succeed.

A DEDICATED tenant's cell (core.cells) has streams of its own: the same three, named
<STREAM>_<cell>, on the same subjects behind the prefix `<cell>.` (e.g.
`t_acme_1f2e3d4c.lily.acme.asset.tagged`), so they never overlap the shared ones. Its bus
(`for_cell`) adds and strips the prefix: callers see the same subjects either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from core import metrics
from core.domain.errors import Unavailable
from core.events.codec import BATCH_HEADER, pack_batch
from core.events.pull import Pull
from core.ports import OutboxRecord

log = logging.getLogger(__name__)

CHANGES_STREAM = "LILY_CHANGES"
INGEST_STREAM = "LILY_INGEST"
DEAD_STREAM = "LILY_DEAD"
INGEST_CONSUMER = "ingest-worker"
PROPAGATION_CONSUMER = "propagation"
INGEST_ACK_WAIT = 30.0  # seconds a fetched work message is the fetcher's before redelivery
PROPAGATION_ACK_WAIT = 15.0  # (kept alive while handled: a dead worker's come back soon)
PROPAGATION_MAX_DELIVER = 8
QUALITY_CONSUMER = "quality"
QUALITY_ACK_WAIT = 10.0  # (kept alive while handled)
# The events written by the thousand (a bulk ingest's new columns) travel in batches of this
# many (core.events.codec.BATCH_HEADER): one message to store and deliver to each consumer,
# not one per event.
BATCHED_SUBJECT = ".asset.created"
BATCH_EVENTS = 256
BATCH_BYTES = 256 * 1024


def ingest_subject(tenant_id: str) -> str:
    return f"lilyq.{tenant_id}.ingest"


def dead_subject(tenant_id: str, queue: str) -> str:
    return f"lilydead.{tenant_id}.{queue}"


async def fetch(sub: Pull, n: int, who: str) -> list[Msg]:
    """Up to `n` messages from a pull subscription, waiting at most 5 s for the first; none
    when nothing came (or the fetch failed: logged, after a second's pause, so a loop
    around it neither spins nor dies while NATS is away)."""
    try:
        return await sub.fetch(n, timeout=5.0)
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    except nats.errors.Error as exc:
        log.warning("%s: fetch failed: %s", who, exc)
        await asyncio.sleep(1.0)
        return []


@contextlib.asynccontextmanager
async def kept(msgs: Sequence[Msg], every: float) -> AsyncIterator[None]:
    """Tells JetStream every `every` seconds that the messages are still being worked on
    (a third of the consumer's ack wait, say): a message whose work is slow but alive must not
    be redelivered to another worker meanwhile, which would do the same work twice."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            for msg in msgs:
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def ack_after(msgs: Sequence[Msg], work: Awaitable[object], who: str) -> None:
    """Acks the messages once `work` is done; naks them (to come again, later each time) if
    it failed. (A batch's message may be named once for each of its events.)"""
    msgs = list({id(msg): msg for msg in msgs}.values())
    try:
        await work
    except Unavailable as exc:
        metrics.STORE_ERRORS.labels(who).inc()
        log.warning("%s: store unavailable (%s); retrying later", who, exc)
        for msg in msgs:
            await msg.nak(delay=2.0)
        return
    except Exception:  # a worker's per-event boundary
        log.exception("%s: %d event(s) failed", who, len(msgs))
        for msg in msgs:
            await msg.nak(delay=min(2.0**msg.metadata.num_delivered, 60.0))
        return
    for msg in msgs:
        await msg.ack()


def work_tenant(subject: str) -> str:
    """The tenant of a work-queue message (`[<cell>.]lilyq.<tenant>.ingest`)."""
    return subject.split(".")[-2]


class NatsChangeBus:
    """See core.ports.ChangeBus. Publishes are pipelined: all messages are sent, then all
    acknowledgements awaited together, within `timeout` seconds."""

    def __init__(
        self, nc: Client, *, timeout: float = 10.0, cell: str = "", owns_connection: bool = True
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout, publish_async_max_pending=20000)
        self._timeout = timeout
        self._owns_connection = owns_connection
        self.prefix = f"{cell}." if cell else ""
        suffix = f"_{cell}" if cell else ""
        self.changes_stream = CHANGES_STREAM + suffix
        self.ingest_stream = INGEST_STREAM + suffix
        self.dead_stream = DEAD_STREAM + suffix

    async def for_cell(self, cell: str) -> NatsChangeBus:
        """A bus on this one's connection for a DEDICATED tenant's cell, its streams made."""
        bus = NatsChangeBus(self.nc, timeout=self._timeout, cell=cell, owns_connection=False)
        await bus.ensure_streams()
        return bus

    @classmethod
    async def connect(cls, url: str, *, timeout: float = 10.0, name: str = "lily") -> NatsChangeBus:
        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        nc = await nats.connect(
            url,
            name=name,
            connect_timeout=timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=on_error,
        )
        bus = cls(nc, timeout=timeout)
        await bus.ensure_streams()
        return bus

    async def ensure_streams(self) -> None:
        p = self.prefix
        configs = [
            StreamConfig(
                name=self.changes_stream,
                subjects=[f"{p}lily.*.*.*"],
                storage=StorageType.FILE,
                duplicate_window=120.0,
                max_age=7 * 24 * 3600.0,
            ),
            StreamConfig(
                name=self.ingest_stream,
                subjects=[f"{p}lilyq.*.ingest"],
                storage=StorageType.FILE,
                retention=RetentionPolicy.WORK_QUEUE,
            ),
            StreamConfig(
                name=self.dead_stream,
                subjects=[f"{p}lilydead.>"],
                storage=StorageType.FILE,
                max_age=30 * 24 * 3600.0,
            ),
        ]
        for config in configs:
            assert config.name is not None
            try:
                await self.js.stream_info(config.name)
                await self.js.update_stream(config)
            except NotFoundError:
                await self.js.add_stream(config)
        await self.js.add_consumer(
            self.ingest_stream,
            ConsumerConfig(
                durable_name=INGEST_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=INGEST_ACK_WAIT,
                max_deliver=8,
                max_ack_pending=50000,
                filter_subject=f"{p}lilyq.*.ingest",
            ),
        )
        await self.js.add_consumer(
            self.changes_stream,
            ConsumerConfig(
                durable_name=PROPAGATION_CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=PROPAGATION_ACK_WAIT,
                max_deliver=PROPAGATION_MAX_DELIVER,
                max_ack_pending=10000,
                filter_subjects=[
                    f"{p}lily.*.asset.*",
                    f"{p}lily.*.issue.*",
                    f"{p}lily.*.relationship.*",
                    f"{p}lily.*.propagation.*",
                ],
            ),
        )
        # the data-quality rules' events (core/workers/quality.py): usage, and what can move
        # an asset's condition (deleted, restored, tags; edges)
        await self.js.add_consumer(
            self.changes_stream,
            ConsumerConfig(
                durable_name=QUALITY_CONSUMER,
                deliver_policy=DeliverPolicy.NEW,  # (older changes: the schedule's passes)
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=QUALITY_ACK_WAIT,
                max_deliver=PROPAGATION_MAX_DELIVER,
                max_ack_pending=10000,
                filter_subjects=[
                    f"{p}lily.*.usage.*",
                    f"{p}lily.*.asset.deleted",
                    f"{p}lily.*.asset.updated",
                    f"{p}lily.*.asset.tagged",
                    f"{p}lily.*.asset.untagged",
                    f"{p}lily.*.relationship.*",
                ],
            ),
        )

    async def _publish_all(
        self, messages: Sequence[tuple[str, bytes, dict[str, str] | None]]
    ) -> None:
        """Publishes every message with the same reply inbox, then waits for all the
        acknowledgements on that one subscription (no per-message round trip). The first
        refusal, if any, fails the whole call."""
        if not messages:
            return
        inbox = self.nc.new_inbox()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = len(messages)

        async def on_ack(msg: Msg) -> None:
            nonlocal pending
            if done.done():
                return
            if b'"error"' in msg.data:
                done.set_exception(Unavailable(f"event bus refused a message: {msg.data[:200]!r}"))
                return
            pending -= 1
            if pending == 0:
                done.set_result(None)

        try:
            sub = await self.nc.subscribe(inbox, cb=on_ack)
            try:
                async with asyncio.timeout(self._timeout):
                    for subject, payload, headers in messages:
                        await self.nc.publish(subject, payload, reply=inbox, headers=headers)
                    await done
            finally:
                await sub.unsubscribe()
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"event bus unavailable: {type(exc).__name__}") from exc

    async def publish(self, records: Sequence[OutboxRecord]) -> None:
        await self._publish_all(list(self._messages(records)))

    def _messages(
        self, records: Sequence[OutboxRecord]
    ) -> Iterator[tuple[str, bytes, dict[str, str]]]:
        """One message per event, but a run of events of a batched subject (one outbox
        entry's, next to each other, with the same headers) goes as ChangeEventBatch messages
        of up to BATCH_EVENTS events. A run is cut the same way whoever publishes it (the
        fast path or the poll: both hand whole entries in order), so a message published
        twice has the same Nats-Msg-Id and is stored once."""
        run: list[OutboxRecord] = []
        size = 0
        for r in records:
            if run and not (
                r.id == run[0].id
                and r.subject == run[0].subject
                and (r.headers is run[0].headers or r.headers == run[0].headers)
                and len(run) < BATCH_EVENTS
                and size + len(r.payload) <= BATCH_BYTES
            ):
                yield self._message(run)
                run, size = [], 0
            if r.subject.endswith(BATCHED_SUBJECT):
                run.append(r)
                size += len(r.payload)
            else:  # (another subject than the run's: the run was just sent)
                yield self._message([r])
        if run:
            yield self._message(run)

    def _message(self, run: Sequence[OutboxRecord]) -> tuple[str, bytes, dict[str, str]]:
        first, subject = run[0], self.prefix + run[0].subject
        if len(run) == 1:
            return subject, first.payload, {**first.headers, "Nats-Msg-Id": first.event_id}
        n = len(run)
        headers = {**first.headers, "Nats-Msg-Id": f"{first.event_id}+{n}", BATCH_HEADER: str(n)}
        return subject, pack_batch([r.payload for r in run]), headers

    async def enqueue_ingest(
        self, tenant_id: str, items: Sequence[bytes], headers: Mapping[str, str]
    ) -> None:
        subject = self.prefix + ingest_subject(tenant_id)
        await self._publish_all([(subject, item, dict(headers) or None) for item in items])

    async def dead_letter(self, tenant_id: str, queue: str, payload: bytes, reason: str) -> None:
        await self._publish_all(
            [(self.prefix + dead_subject(tenant_id, queue), payload, {"Lily-Reason": reason})]
        )

    async def subscribe(self, subject: str) -> AsyncIterator[tuple[str, bytes, Mapping[str, str]]]:
        """Live changes from now on (an ordered, ephemeral consumer: no gaps, no duplicates)."""
        sub = await self.js.subscribe(
            self.prefix + subject,
            stream=self.changes_stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            idle_heartbeat=5.0,
            # The server drops the consumer this long after its watcher went away.
            inactive_threshold=1.0,
        )
        try:
            async for msg in sub.messages:
                yield msg.subject.removeprefix(self.prefix), msg.data, dict(msg.headers or {})
        finally:
            await sub.unsubscribe()

    async def observe(self) -> None:
        """Sets the lag of each durable consumer of this bus's streams and the depth of its
        dead letters (core.metrics; run when /metrics is scraped)."""
        for stream in (self.changes_stream, self.ingest_stream):
            for info in await self.js.consumers_info(stream):
                name = info.name or info.config.durable_name or ""
                metrics.CONSUMER_PENDING.labels(stream, name).set(info.num_pending or 0)
                metrics.CONSUMER_ACK_PENDING.labels(stream, name).set(info.num_ack_pending or 0)
        dead = await self.js.stream_info(self.dead_stream)
        metrics.DEAD_LETTERS.labels(self.dead_stream).set(dead.state.messages)

    async def close(self) -> None:
        if not self._owns_connection:  # a cell's bus: the connection is the shared bus's
            return
        # Everything that publishes has stopped by now; close without draining subscriptions
        # (a drain would wait on the cancelled workers' pending fetches).
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            await asyncio.wait_for(self.nc.flush(), timeout=2.0)
        await self.nc.close()
