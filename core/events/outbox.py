"""The outbox relay: gets change events from the outbox table onto JetStream.

Every state change writes its event to the outbox table in the same transaction as the change,
so a crash between the write and the publish loses nothing. Two paths publish them:
- fast: the process that committed hands the records it wrote to submit(); the relay publishes
  them at once and deletes their rows (no read-back);
- safety net: a poll picks up rows nobody published within `grace` seconds (the writer died,
  or the bus was down), here or in another instance, with FOR UPDATE SKIP LOCKED.
The bus de-duplicates by event id, so an event published twice (a crash after publish and
before delete, or both paths racing) is stored once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

from core.domain.errors import Unavailable
from core.ports import ChangeBus, OutboxRecord

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: ChangeBus,
        *,
        batch: int = 1000,
        poll_interval: float = 1.0,
        grace: float = 3.0,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._batch = batch
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
                    await self._pool.execute(
                        "DELETE FROM outbox WHERE id = ANY($1::int8[])", [r.id for r in records]
                    )
                self.published += len(records)
            except (Unavailable, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                # The rows stay in the outbox; the poll publishes them once the bus is back.
                log.warning("outbox relay: %d events left for the poll: %s", len(records), exc)

    async def _run_poll(self) -> None:
        backoff = self._poll
        while True:
            await asyncio.sleep(backoff)
            try:
                while await self.relay_once() == self._batch:
                    pass
                backoff = self._poll
            except (Unavailable, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                backoff = min(backoff * 2, 10.0)
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)

    async def relay_once(self, *, older_than: float | None = None) -> int:
        """Publishes one batch of rows older than `older_than` seconds (default: the grace
        period) and deletes them; returns how many it published."""
        age = self._grace if older_than is None else older_than
        async with asyncio.timeout(60), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, subject, payload, headers FROM outbox"
                " WHERE created_at < now() - make_interval(secs => $2)"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
                age,
            )
            if not rows:
                return 0
            await self._bus.publish(
                [
                    OutboxRecord(r["id"], r["event_id"], r["subject"], r["payload"], r["headers"])
                    for r in rows
                ]
            )
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::int8[])", [r["id"] for r in rows]
            )
        self.published += len(rows)
        log.info("outbox relay: published %d events left behind", len(rows))
        return len(rows)
