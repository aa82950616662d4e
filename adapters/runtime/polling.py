"""Polling, the safety net under webhooks. Every `tick` seconds the runtime lists the
integrations of the types that poll (ListPlatformIntegrations, with its platform credential)
and polls each enabled one that is due: its type's interval after the last poll, at once
while a poll stopped at its page limit, or as the sender asked after refusing one. One poll
at a time per integration, at most `parallel` at once.

What a poll reads goes into the inbox as deliveries of the integration, mapped as its
webhooks are; a delivery read again (two polls of the same change) is kept once. The cursor
is saved, in the integration's memory, only once the inbox holds everything read before it:
a poll cut short is read again, never skipped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import grpc
from google.protobuf import json_format

from adapters.runtime.inbox import Inbox
from adapters.runtime.resolver import Resolver
from adapters.spec import AdapterType, Delivery, Poller, PollFailed

log = logging.getLogger(__name__)

CURSOR = "lily.poll.cursor"  # the key of an integration's cursor in its memory
MAX_BACKOFF = 600.0


def backoff(failures: int, interval: float, status: int) -> float:
    """Seconds before the next poll after `failures` failed ones in a row: growing from 10 s
    while the sender fails or cannot be reached (5xx, none), never beyond the interval; the
    interval after a refusal (401, 403, ...), which waiting a little does not mend."""
    if status and status < 500:
        return interval
    return min(interval, MAX_BACKOFF, 10.0 * 2 ** min(failures - 1, 10))


class Polling:
    def __init__(
        self,
        resolver: Resolver,
        inbox: Inbox,
        types: Mapping[str, AdapterType],
        *,
        tick: float = 5.0,
        timeout: float = 10.0,
        parallel: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._inbox = inbox
        self._pollers = {name: t.poller for name, t in types.items() if t.poller is not None}
        self._tick = tick
        self._timeout = timeout
        self._slots = asyncio.Semaphore(parallel)
        self._clock = clock
        self._due: dict[str, float] = {}  # integration id -> when its next poll is due
        self._failures: dict[str, int] = {}
        self._polling: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.start_due()
                except (grpc.aio.AioRpcError, TimeoutError) as exc:  # the core is away
                    log.warning("polling: integrations not listed: %s", _reason(exc))
                await asyncio.sleep(self._tick)
        finally:
            for task in list(self._polling.values()):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def start_due(self) -> None:
        """Starts a poll of each integration that is due (and not being polled)."""
        seen: set[str] = set()
        for kind, poller in self._pollers.items():
            async for i in self._resolver.listed(kind):
                seen.add(i.integration_id)
                if i.disabled or i.integration_id in self._polling:
                    continue
                if self._clock() < self._due.get(i.integration_id, 0.0):
                    continue
                self._start(poller, i.integration_id)
        for gone in set(self._due) - seen:  # deleted: forget it
            self._due.pop(gone, None)
            self._failures.pop(gone, None)

    def _start(self, poller: Poller, integration_id: str) -> None:
        task = asyncio.create_task(self._poll(poller, integration_id))
        self._polling[integration_id] = task
        task.add_done_callback(lambda _t: self._polling.pop(integration_id, None))

    def _failed(self, integration_id: str) -> int:
        """Counts a failed poll: how many in a row now."""
        self._failures[integration_id] = self._failures.get(integration_id, 0) + 1
        return self._failures[integration_id]

    async def _poll(self, poller: Poller, integration_id: str) -> None:
        async with self._slots:
            started = self._clock()
            try:
                await self._poll_one(poller, integration_id, started)
            except Exception as exc:  # the core or NATS away, or a bug: try again later
                failures = self._failed(integration_id)
                self._due[integration_id] = started + backoff(failures, MAX_BACKOFF, 0)
                log.warning(
                    "polling: integration %s not polled: %s",
                    integration_id,
                    _reason(exc),
                    extra={"integration_id": integration_id},
                )

    async def _poll_one(self, poller: Poller, integration_id: str, started: float) -> None:
        resolved = await self._resolver.get(integration_id)
        if resolved is None or resolved.integration.disabled:
            return
        i = resolved.integration
        settings = json_format.MessageToDict(i.settings)
        secrets = dict(resolved.secrets)
        interval = poller.interval(settings, secrets)
        if interval is None:  # not polled (no API credentials): look again next tick
            return
        memory = self._inbox.memory(integration_id)
        cursor = next(iter(await memory.get(CURSOR)), "")
        try:
            polled = await poller.poll(
                settings, secrets, cursor, now=started, timeout=self._timeout
            )
        except PollFailed as exc:
            failures = self._failed(integration_id)
            wait = exc.retry_after
            if wait is None:
                wait = backoff(failures, interval, exc.status)
            self._due[integration_id] = started + wait
            log.warning(
                "polling: integration %s: %s; next poll in %.0f s",
                integration_id,
                exc,
                wait,
                extra={"integration_id": integration_id, "status": exc.status},
            )
            return
        for delivery_id, body in polled.deliveries:
            await self._inbox.put(
                Delivery(i.integration_id, i.tenant_id, i.type, delivery_id, body, time.time())
            )
        await memory.put(CURSOR, [polled.cursor])
        self._failures.pop(integration_id, None)
        self._due[integration_id] = started + (0.0 if polled.more else interval)
        log.info(
            "polling: integration %s: %d read",
            integration_id,
            len(polled.deliveries),
            extra={"integration_id": integration_id, "tenant": i.tenant_id},
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
