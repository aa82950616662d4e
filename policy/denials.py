"""The audit trail of refusals: every call or object access that was refused is recorded, in
the background (a refusal never waits on the store), and listed per tenant."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from core.requestctx import current_request_id
from policy.model import DenialRecord
from policy.ports import PolicyStore

log = logging.getLogger(__name__)

_MAX_PENDING = 10_000


class Denials:
    def __init__(self, store: PolicyStore) -> None:
        self._store = store
        self._pending: list[DenialRecord] = []
        self._waiting = asyncio.Event()
        self._dropped = 0

    def record(
        self,
        tenant_id: str,
        subject: str,
        method: str,
        obj: str,
        action: str,
        code: str,
        reason: str,
        origin: str,
    ) -> None:
        """Notes a refusal (written by run(); at most _MAX_PENDING wait, the rest are counted
        and logged as dropped)."""
        log.info("denied %s %s on %s to %s: %s", method, action, obj, subject or "-", reason)
        if len(self._pending) >= _MAX_PENDING:
            self._dropped += 1
            return
        self._pending.append(
            DenialRecord(
                tenant_id,
                datetime.now(UTC),
                subject,
                method,
                obj,
                action,
                code,
                reason,
                current_request_id(),
                origin,
            )
        )
        self._waiting.set()

    async def flush(self) -> None:
        """Writes what is pending now."""
        batch, self._pending = self._pending, []
        if batch:
            await self._store.add_denials(batch)
        if self._dropped:
            log.warning(
                "%d denials were not recorded (more than %d pending)", self._dropped, _MAX_PENDING
            )
            self._dropped = 0

    async def run(self) -> None:
        """Writes refusals as they come, in batches, for ever."""
        while True:
            await self._waiting.wait()
            self._waiting.clear()
            try:
                await self.flush()
            except Exception:  # the worker boundary: the batch is logged, the next one tried
                log.exception("denials could not be recorded")
            await asyncio.sleep(0.2)

    async def newest(
        self, tenant_ids: list[str], before: datetime | None, limit: int
    ) -> list[DenialRecord]:
        return await self._store.denials(tenant_ids, before, limit)
