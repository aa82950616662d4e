"""The outbox relay: publishes change events that stores wrote in their transactions.

Every state change writes its event to the outbox table in the same transaction as the change,
so a crash between the write and the publish loses nothing: the next relay to run (here, or in
another instance) publishes it. The bus de-duplicates by event id, so an event published twice
(crash after publish, before delete) is stored once."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from core.domain.errors import Unavailable
from core.ports import ChangeBus, OutboxRecord

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, bus: ChangeBus, *, batch: int = 1000,
                 poll_interval: float = 0.5) -> None:
        self._pool = pool
        self._bus = bus
        self._batch = batch
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self) -> None:
        """Called after a commit that wrote events, so they go out at once."""
        self._wake.set()

    async def run(self) -> None:
        backoff = self._poll
        while True:
            try:
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.relay_once() == self._batch:
                    pass
                backoff = self._poll
            except (Unavailable, OSError, asyncpg.PostgresError) as exc:
                backoff = min(backoff * 2, 5.0)
                log.warning("outbox relay: %s; retrying in %.1fs", exc, backoff)

    async def relay_once(self) -> int:
        """Publishes one batch and deletes it; returns how many it published."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, event_id, subject, payload, headers FROM outbox ORDER BY id"
                " LIMIT $1 FOR UPDATE SKIP LOCKED", self._batch,
            )
            if not rows:
                return 0
            await self._bus.publish([
                OutboxRecord(r["id"], r["event_id"], r["subject"], r["payload"], r["headers"])
                for r in rows
            ])
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::int8[])", [r["id"] for r in rows])
        self.published += len(rows)
        return len(rows)
