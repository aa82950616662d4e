"""The adapter runtime: the webhook door (mounted on the REST gateway), the pollers, the inbox
on NATS JetStream, and the dispatcher that maps what it holds onto Lily through the generated
gRPC stubs. It calls the core as any client does: with a platform credential of role
adapter_runtime to resolve integrations, and each integration's own key to act for it.

`lily up` runs it in its process (found through the `lily.runtime` entry point); elsewhere it
runs wherever its settings point it: the same code either way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

import grpc
import nats
from nats.aio.client import Client

from adapters.runtime.dispatcher import Dispatcher
from adapters.runtime.follow import Follow
from adapters.runtime.inbox import Inbox
from adapters.runtime.polling import Polling
from adapters.runtime.resolver import Resolver
from adapters.runtime.webhooks import PREFIX, Webhooks
from adapters.spec import AdapterType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    core: str  # the core's gRPC address
    token: str  # a platform credential of role adapter_runtime
    nats_url: str
    max_body_bytes: int = 256 * 1024
    resolve_ttl: float = 5.0  # seconds an integration's settings and secrets are kept
    timeout: float = 10.0  # of each call to the core and to NATS
    # A pending delivery (naming an asset Lily does not know yet) is tried again this many
    # seconds after it was kept: the n-th time after[n]; the last pause repeats (30 days).
    pending_retry: tuple[float, ...] = (10.0, 60.0, 600.0, 3600.0)
    sweep_every: float = 5.0
    poll_tick: float = 5.0  # how often integrations are looked at for a poll that is due


def adapter_types() -> dict[str, AdapterType]:
    """The installed adapters (entry point group lily.adapters)."""
    return {t.name: t for t in (ep.load() for ep in entry_points(group="lily.adapters"))}


class Runtime:
    prefix = PREFIX

    def __init__(
        self, settings: RuntimeSettings, types: Mapping[str, AdapterType] | None = None
    ) -> None:
        self.settings = settings
        self.types = dict(types if types is not None else adapter_types())
        self._channel: grpc.aio.Channel | None = None
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None
        self._follow: asyncio.Task[None] | None = None
        self.webhooks: Webhooks | None = None

    async def start(self) -> None:
        s = self.settings
        self._channel = grpc.aio.insecure_channel(
            s.core,
            # back within seconds of the core: not gRPC's default backoff of up to two minutes
            options=[
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 5000),
            ],
        )
        self._nc = await nats.connect(
            s.nats_url, connect_timeout=s.timeout, max_reconnect_attempts=-1, name="lily-adapters"
        )
        inbox = Inbox(self._nc.jetstream(timeout=s.timeout), timeout=s.timeout)
        await inbox.ensure()
        resolver = Resolver(self._channel, s.token, ttl=s.resolve_ttl, timeout=s.timeout)
        self.webhooks = Webhooks(self.types, resolver, inbox, max_body_bytes=s.max_body_bytes)
        dispatcher = Dispatcher(inbox, resolver, self.types, self._channel, timeout=s.timeout)
        self._task = asyncio.create_task(dispatcher.run(), name="adapters-dispatcher")
        self._sweeper = asyncio.create_task(self._sweep(inbox), name="adapters-pending")
        polling = Polling(resolver, inbox, self.types, tick=s.poll_tick, timeout=s.timeout)
        self._polling = asyncio.create_task(polling.run(), name="adapters-polling")
        follow = Follow(self._nc.jetstream(timeout=s.timeout), resolver, inbox, self.types)
        if any(t.follower is not None for t in self.types.values()):
            await follow.ensure()  # from now on, even before the first fetch
        self._follow = asyncio.create_task(follow.run(), name="adapters-follow")
        log.info("adapter runtime started: %s", ", ".join(sorted(self.types)))

    async def _sweep(self, inbox: Inbox) -> None:
        """Tries pending deliveries again as they fall due: the asset an incident names may
        have arrived since (a pending delivery is never dropped in silence)."""
        while True:
            await asyncio.sleep(self.settings.sweep_every)
            try:
                retried = await inbox.retry_pending(self.settings.pending_retry, time.time())
            except Exception as exc:  # NATS away: the next sweep tries again
                log.warning("pending deliveries: %s", exc)
                continue
            if retried:
                log.info("pending deliveries tried again: %d", retried)

    async def stop(self) -> None:
        for task in (self._task, self._sweeper, self._polling, self._follow):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)
        if self._nc is not None:
            # closed, not drained: every publish was awaited to its ack already, and a drain
            # would wait on what a fetch cut short by the stop left in its subscription
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 10)
        if self._channel is not None:
            await self._channel.close()


async def run_in_lily_up(*, core: str, token: str, nats_url: str) -> Runtime:
    """The runtime `lily up` runs in its own process (entry point lily.runtime)."""
    runtime = Runtime(RuntimeSettings(core=core, token=token, nats_url=nats_url))
    try:
        await runtime.start()
    except BaseException:
        await runtime.stop()
        raise
    return runtime
