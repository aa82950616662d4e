"""The outbox relay: gets change events from the outbox onto JetStream.

Every transaction that changes state writes its change events, packed into one outbox_batch
row, in the same transaction, so a crash between the write and the publish loses nothing.
Two paths publish them (a NATS message per event, or per batch of a bulk write's events:
core.events.nats.NatsChangeBus):
- fast: the process that committed hands the records it wrote to submit(); the relay publishes
  them at once and deletes their row (no read-back);
- safety net: a poll picks up rows nobody published within `grace` seconds (the writer died,
  or the bus was down), here or in another instance, with FOR UPDATE SKIP LOCKED.
The bus de-duplicates by event id, so an event published twice (a crash after publish and
before delete, or both paths racing) is stored once."""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterator, Mapping, Sequence

import asyncpg
import orjson

from core import metrics
from core.domain.errors import Unavailable
from core.ports import ChangeBus, Outbox, OutboxRecord

log = logging.getLogger(__name__)

# An event in a batch: lengths of event id, subject, headers (JSON) and payload, then those bytes.
_FRAME = struct.Struct(">HHII")
_ZLIB_HEADER = b"\x78"


def pack_events(events: Sequence[tuple[str, str, bytes, Mapping[str, str]]]) -> bytes:
    """(event_id, subject, payload, headers) tuples as one outbox_batch.events value."""
    parts: list[bytes] = []
    encoded: dict[int, bytes] = {}  # the events of one write share their headers: encode once
    for event_id, subject, payload, headers in events:
        eid, subj = event_id.encode(), subject.encode()
        hdrs = encoded.get(id(headers))
        if hdrs is None:
            hdrs = encoded[id(headers)] = orjson.dumps(dict(headers)) if headers else b""
        parts += (
            _FRAME.pack(len(eid), len(subj), len(hdrs), len(payload)),
            eid,
            subj,
            hdrs,
            payload,
        )
    # Compressed (fast zlib): the events of a write repeat their tenant, subjects and headers,
    # and a large batch shrinks ~8x, which Postgres would otherwise store and log in full.
    return zlib.compress(b"".join(parts), 1)


def unpack_events(batch_id: Hashable, data: bytes) -> Iterator[OutboxRecord]:
    if data[:1] == _ZLIB_HEADER:  # else frames written uncompressed (they start with a 0 byte)
        data = zlib.decompress(data)
    view, at = memoryview(data), 0
    while at < len(data):
        n_eid, n_subj, n_hdrs, n_payload = _FRAME.unpack_from(view, at)
        at += _FRAME.size
        eid = bytes(view[at : at + n_eid]).decode()
        at += n_eid
        subject = bytes(view[at : at + n_subj]).decode()
        at += n_subj
        headers = orjson.loads(view[at : at + n_hdrs]) if n_hdrs else {}
        at += n_hdrs
        yield OutboxRecord(batch_id, eid, subject, bytes(view[at : at + n_payload]), headers)
        at += n_payload


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        bus: ChangeBus,
        *,
        batch: int = 5000,
        poll_interval: float = 1.0,
        grace: float = 3.0,
    ) -> None:
        self._outbox = outbox
        self._bus = bus
        self._batch = batch  # events per publish
        self._poll = poll_interval
        self._grace = grace
        self._queue: asyncio.Queue[Sequence[OutboxRecord]] = asyncio.Queue()
        self.published = 0

    def submit(self, records: Sequence[OutboxRecord]) -> None:
        """Called right after a commit with the outbox records it wrote."""
        if records:
            self._queue.put_nowait(records)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._run_fast())
            tg.create_task(self._run_poll())

    async def _run_fast(self) -> None:
        while True:
            records = list(await self._queue.get())
            while not self._queue.empty() and len(records) < self._batch:
                records.extend(self._queue.get_nowait())
            try:
                await self._bus.publish(records)
                async with asyncio.timeout(30):
                    await self._outbox.delete_published({r.id for r in records})
                self.published += len(records)
            except (Unavailable, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                # The entries stay in the outbox; the poll publishes them once the bus is back.
                metrics.STORE_ERRORS.labels("outbox relay").inc()
                log.warning("outbox relay: %d events left for the poll: %s", len(records), exc)

    async def _run_poll(self) -> None:
        backoff = self._poll
        while True:
            await asyncio.sleep(backoff)
            try:
                while await self.relay_once():
                    pass
                backoff = self._poll
            except (Unavailable, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                metrics.STORE_ERRORS.labels("outbox relay").inc()
                backoff = min(backoff * 2, 10.0)
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)

    async def relay_once(self, *, older_than: float | None = None) -> int:
        """Publishes the events of outbox entries older than `older_than` seconds (default:
        the grace period) and deletes them; returns how many events."""
        age = self._grace if older_than is None else older_than
        async with asyncio.timeout(120):
            count = await self._outbox.relay_stale(age, self._publish)
        if count:
            self.published += count
            log.info("outbox relay: published %d events left behind", count)
        return count

    async def _publish(self, records: list[OutboxRecord]) -> None:
        # whole entries at a time, about self._batch events a publish (an entry's events are
        # packed into messages the same way on either path: the bus de-duplicates them)
        start = 0
        while start < len(records):
            end = min(start + self._batch, len(records))
            while end < len(records) and records[end].id == records[end - 1].id:
                end += 1
            await self._bus.publish(records[start:end])
            start = end


class PostgresOutbox:
    """The outbox_batch table (the Postgres asset store writes it; core.ports.Outbox)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def delete_published(self, ids: Collection[Hashable]) -> None:
        await self._pool.execute("DELETE FROM outbox_batch WHERE id = ANY($1::int8[])", list(ids))

    async def relay_stale(
        self, older_than: float, publish: Callable[[list[OutboxRecord]], Awaitable[None]]
    ) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, events FROM outbox_batch"
                " WHERE created_at < now() - make_interval(secs => $1)"
                " ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED",
                older_than,
            )
            if not rows:
                return 0
            records = [rec for r in rows for rec in unpack_events(r["id"], r["events"])]
            await publish(records)
            await conn.execute(
                "DELETE FROM outbox_batch WHERE id = ANY($1::int8[])", [r["id"] for r in rows]
            )
        return len(records)
