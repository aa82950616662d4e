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
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib.metadata import entry_points

import grpc
import nats
from nats.aio.client import Client
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from adapters.runtime.dispatcher import Dispatcher
from adapters.runtime.follow import Follow
from adapters.runtime.inbox import Inbox
from adapters.runtime.notify import Router, Subscriptions
from adapters.runtime.outbox import Outbox
from adapters.runtime.polling import Polling
from adapters.runtime.record import Recorder
from adapters.runtime.resolver import Resolver
from adapters.runtime.send import Sender
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
    # notifications (adapters/runtime/notify.py, send.py)
    subscriptions_ttl: float = 2.0  # seconds the subscriptions are kept
    burst_quiet: float = 1.0  # a burst is over after this long without another of its events
    burst_longest: float = 10.0  # ... or once held this long
    unhealthy_after: float = 300.0  # a destination failing this long is unhealthy
    probe_every: float = 60.0  # an unhealthy destination is tried this often


def settings_from_env(
    core: str, token: str, nats_url: str, env: Mapping[str, str] | None = None
) -> RuntimeSettings:
    """The runtime's settings: its defaults, each number overridden by LILY_ADAPTERS_<NAME>
    (e.g. LILY_ADAPTERS_UNHEALTHY_AFTER=600); ValueError naming a variable that is no number."""
    env = os.environ if env is None else env
    given: dict[str, float | int] = {}
    for f in fields(RuntimeSettings):
        name = f"LILY_ADAPTERS_{f.name.upper()}"
        if name not in env or f.name in ("core", "token", "nats_url", "pending_retry"):
            continue
        kind = int if f.type in ("int", int) else float
        try:
            value = kind(env[name])
        except ValueError:
            raise ValueError(f"{name}={env[name]!r} is not a number") from None
        if value < 0:
            raise ValueError(f"{name}={env[name]!r} must not be negative")
        given[f.name] = value
    return RuntimeSettings(core=core, token=token, nats_url=nats_url, **given)  # type: ignore[arg-type]


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
        self._notify: list[asyncio.Task[None]] = []
        self._recording: asyncio.Task[None] | None = None
        self.webhooks: Webhooks | None = None

    async def start(self) -> None:
        s = self.settings
        self._channel = grpc.aio.insecure_channel(
            s.core,
            # the calls carry the trace of the delivery they are made for to the core
            interceptors=aio_client_interceptors(),
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
            await follow.feed.ensure()  # from now on, even before the first fetch
        self._follow = asyncio.create_task(follow.run(), name="adapters-follow")
        if any(t.sink is not None for t in self.types.values()):
            await self._start_notify(inbox, resolver)
        log.info("adapter runtime started: %s", ", ".join(sorted(self.types)))

    async def _start_notify(self, inbox: Inbox, resolver: Resolver) -> None:
        """Routes events to subscriptions, and delivers them."""
        s = self.settings
        assert self._nc is not None and self._channel is not None
        js = self._nc.jetstream(timeout=s.timeout)
        outbox = Outbox(js, timeout=s.timeout)
        await outbox.ensure()
        recorder = Recorder(self._channel, s.token, timeout=s.timeout)
        subscriptions = Subscriptions(
            self._channel, s.token, every=s.subscriptions_ttl, timeout=s.timeout
        )
        router = Router(
            js, subscriptions, outbox, recorder, quiet=s.burst_quiet, longest=s.burst_longest
        )
        await router.feed.ensure()  # from now on, even before the first fetch
        sender = Sender(
            outbox,
            resolver,
            inbox,
            self.types,
            recorder,
            timeout=s.timeout,
            unhealthy_after=s.unhealthy_after,
            probe_every=s.probe_every,
        )
        self._recording = asyncio.create_task(recorder.run(), name="notify-records")
        self._notify = [
            asyncio.create_task(router.run(), name="notify-route"),
            asyncio.create_task(sender.run(), name="notify-send"),
        ]

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
        for task in (
            self._task,
            self._sweeper,
            self._polling,
            self._follow,
            *self._notify,
            self._recording,  # last: it files what the others left it
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 10)
        for kind in self.types.values():
            for part in (kind.sink, kind.poller):
                close = getattr(part, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
        if self._nc is not None:
            # closed, not drained: every publish was awaited to its ack already, and a drain
            # would wait on what a fetch cut short by the stop left in its subscription
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 10)
        if self._channel is not None:
            await self._channel.close()


async def run_in_lily_up(*, core: str, token: str, nats_url: str) -> Runtime:
    """The runtime `lily up` runs in its own process (entry point lily.runtime)."""
    runtime = Runtime(settings_from_env(core, token, nats_url))
    try:
        await runtime.start()
    except BaseException:
        await runtime.stop()
        raise
    return runtime
