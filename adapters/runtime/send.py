"""Delivering what the outbound stream holds: one lane per subscription (a test: per
destination), each sending its notifications one at a time in the order they came, so a
subscription's events arrive in order even across a destination's outage. A notification
is acknowledged on the stream only once it was delivered or given up (dead); until then it
stays there, so a runtime stopped mid-delivery loses nothing (it is sent again, at least
once; a destination that can be asked, JIRA or Freshdesk, is asked before a ticket is made).

A failed attempt is tried again after an exponential back-off with jitter, or after the
Retry-After the destination asked for if longer; after the subscription's attempts, or at
once when the destination refused it for good (a 4xx but 408, 425 and 429), it is dead: kept
in its record, to be retried or replayed through the API. Each destination is sent at most
its rate (Slack: one a second). A destination that has failed for `unhealthy_after` seconds
(and `min_failures` attempts) in a row is unhealthy: its notifications go straight to the
dead letters, but for one probe every `probe_every` seconds, until one is delivered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from lily.v1 import notification_pb2 as notification_pb
from nats.aio.msg import Msg

from adapters.metrics import DELIVERIES
from adapters.runtime.inbox import Inbox, batches, sequence
from adapters.runtime.outbox import Outbox, generation_of, lane_of
from adapters.runtime.record import Recorder, delivery_record, timestamp
from adapters.runtime.resolver import CoreUnavailable, Resolved, Resolver
from adapters.spec import AdapterType, Notification, SendFailed, Sent
from adapters.tracing import span

log = logging.getLogger(__name__)

BATCH = 256
KEEPALIVE = 10.0  # seconds between telling the stream a held notification is still ours


def backoff(attempt: int, *, first: float = 1.0, longest: float = 300.0) -> float:
    """Seconds before attempt `attempt` + 1: doubling from `first`, at most `longest`, the
    upper half of it at random (so retries of many deliveries do not come back together)."""
    ceiling = min(longest, first * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Limiter:
    """At most `rate` a second per destination: each send takes the next free slot."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._next: dict[str, float] = {}
        self._sleep = sleep

    async def wait(self, key: str, rate: float | None) -> None:
        if not rate or rate <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._next.get(key, 0.0))
        self._next[key] = slot + 1.0 / rate
        if slot > now:
            await self._sleep(slot - now)


@dataclass
class Health:
    """A destination as the sends to it found it."""

    tenant_id: str
    failures: int = 0  # in a row
    failing_since: float | None = None
    unhealthy_since: float | None = None
    last_probe: float = 0.0
    last_error: str = ""
    last_success: float | None = None

    def pb(self, integration_id: str) -> notification_pb.DestinationHealth:
        h = notification_pb.DestinationHealth(
            integration_id=integration_id,
            tenant_id=self.tenant_id,
            healthy=self.unhealthy_since is None,
            consecutive_failures=self.failures,
            last_error=self.last_error[:4000],
            updated_at=timestamp(time.time()),
        )
        if self.unhealthy_since is not None:
            h.unhealthy_since.CopyFrom(timestamp(self.unhealthy_since))
        if self.last_success is not None:
            h.last_success_at.CopyFrom(timestamp(self.last_success))
        return h


@dataclass
class Lane:
    msgs: deque[Msg] = field(default_factory=deque)
    seqs: dict[int, Msg] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        resolver: Resolver,
        inbox: Inbox,
        types: Mapping[str, AdapterType],
        recorder: Recorder,
        *,
        timeout: float = 10.0,
        unhealthy_after: float = 300.0,
        min_failures: int = 5,
        probe_every: float = 60.0,
    ) -> None:
        self._outbox = outbox
        self._resolver = resolver
        self._inbox = inbox
        self._types = dict(types)
        self._recorder = recorder
        self._timeout = timeout
        self._unhealthy_after = unhealthy_after
        self._min_failures = min_failures
        self._probe_every = probe_every
        self._lanes: dict[str, Lane] = {}
        self._limiter = Limiter()
        self._health: dict[str, Health] = {}
        self._settings: dict[str, tuple[Resolved, dict[str, Any], float | None]] = {}

    async def run(self) -> None:
        sub = await self._outbox.subscribe()
        keepalive = asyncio.create_task(self._keepalive(), name="notify-keepalive")
        try:
            async for msgs in batches(sub, BATCH, "notify"):
                for msg in msgs:
                    self._enqueue(msg)
        finally:
            keepalive.cancel()
            lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
            for task in lanes:
                task.cancel()
            await asyncio.gather(keepalive, *lanes, return_exceptions=True)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _enqueue(self, msg: Msg) -> None:
        key = lane_of(msg)
        lane = self._lanes.setdefault(key, Lane())
        seq = sequence(msg)
        if seq in lane.seqs:  # sent again by the stream (held past its ack wait): one copy
            held = lane.seqs[seq]
            lane.msgs = deque(msg if m is held else m for m in lane.msgs)
            lane.seqs[seq] = msg
            return
        lane.msgs.append(msg)
        lane.seqs[seq] = msg
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drain(key, lane), name=f"notify-{key}")

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE)
            for lane in list(self._lanes.values()):
                for msg in list(lane.msgs):
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _drain(self, key: str, lane: Lane) -> None:
        while lane.msgs:
            msg = lane.msgs[0]
            try:
                await self._deliver(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the lane: it is tried again later
                log.exception("notify: delivery in lane %s failed", key)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=5.0)
            lane.msgs.popleft()
            lane.seqs.pop(sequence(msg), None)
        if not lane.msgs and self._lanes.get(key) is lane:
            del self._lanes[key]

    async def _deliver(self, msg: Msg) -> None:
        try:
            n = Notification.load(msg.data)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.error("notify: a message that is no notification dropped: %s", exc)
            await msg.ack()
            return
        generation = generation_of(msg)
        attempt = 0
        waited = 0
        while True:
            try:
                resolved = await self._resolver.get(n.integration_id)
            except CoreUnavailable:
                waited += 1
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(waited, 6)))
                continue
            kind = self._types.get(resolved.integration.type) if resolved else None
            if resolved is None or kind is None or kind.sink is None:
                unusable = "no such destination now"
            elif resolved.integration.tenant_id != n.tenant_id:
                unusable = "another tenant's destination"
            elif resolved.integration.disabled:
                unusable = "the destination is disabled"
            else:
                unusable = ""
            if unusable:
                self._record(n, "dead", generation, attempt, why=unusable)
                await msg.ack()
                return
            assert resolved is not None and kind is not None and kind.sink is not None
            dtype = resolved.integration.type
            health = self._health.setdefault(n.integration_id, Health(n.tenant_id))
            now = time.time()
            if health.unhealthy_since is not None:
                if now - health.last_probe < self._probe_every:
                    self._record(
                        n,
                        "dead",
                        generation,
                        attempt,
                        destination_type=dtype,
                        why=f"the destination is unhealthy: {health.last_error}",
                    )
                    await msg.ack()
                    return
                health.last_probe = now  # this one is the probe
            settings, rate = self._settings_of(resolved, kind)
            await self._limiter.wait(n.integration_id, rate)
            attempt += 1
            started = time.time()
            try:
                with span(f"notify {dtype}", n.trace, delivery_id=n.delivery_id):
                    sent = await kind.sink.send(
                        n,
                        settings,
                        dict(resolved.secrets),
                        self._inbox.memory(n.integration_id),
                        signing=list(resolved.webhook_secrets),
                        timeout=self._timeout,
                    )
            except asyncio.CancelledError:
                raise
            except SendFailed as exc:
                failed = exc
            except Exception as exc:  # a bug in an adapter: tried again, as a failure
                log.exception("notify: %s adapter failed", dtype)
                failed = SendFailed(f"{type(exc).__name__}: {exc}")
            else:
                self._succeeded(n, health, dtype, generation, attempt, started, sent)
                await msg.ack()
                return
            self._failed(health, n.integration_id, str(failed))
            if failed.permanent or attempt >= max(1, n.max_attempts):
                self._record(
                    n,
                    "dead",
                    generation,
                    attempt,
                    destination_type=dtype,
                    last=started,
                    code=failed.status,
                    why=str(failed),
                )
                log.warning(
                    "notify: delivery %s dead after %d attempt(s): %s",
                    n.delivery_id,
                    attempt,
                    failed,
                    extra={"integration_id": n.integration_id, "tenant": n.tenant_id},
                )
                await msg.ack()
                return
            delay = max(backoff(attempt), failed.retry_after or 0.0)
            self._record(
                n,
                "failed",
                generation,
                attempt,
                destination_type=dtype,
                last=started,
                next_at=time.time() + delay,
                code=failed.status,
                why=str(failed),
            )
            await asyncio.sleep(delay)

    def _settings_of(
        self, resolved: Resolved, kind: AdapterType
    ) -> tuple[dict[str, Any], float | None]:
        """A destination's settings and rate, read once for each answer the resolver gives."""
        key = resolved.integration.integration_id
        known = self._settings.get(key)
        if known is None or known[0] is not resolved:
            settings = json_format.MessageToDict(resolved.integration.settings)
            assert kind.sink is not None  # (a destination: _deliver looked)
            rate = kind.sink.rate(settings)
            known = self._settings[key] = (resolved, settings, rate)
        return known[1], known[2]

    def _succeeded(
        self,
        n: Notification,
        health: Health,
        dtype: str,
        generation: int,
        attempt: int,
        started: float,
        sent: Sent,
    ) -> None:
        was_failing = health.failures > 0
        health.failures = 0
        health.failing_since = None
        health.last_success = time.time()
        if health.unhealthy_since is not None or was_failing:
            health.unhealthy_since = None
            self._recorder.health(health.pb(n.integration_id))
        self._recorder.delivery(
            delivery_record(
                n,
                "delivered",
                generation,
                attempt,
                destination_type=dtype,
                last_attempt=started,
                delivered=health.last_success,
                destination_status=sent.status,
                destination_message=sent.message,
                external_ref=sent.ref,
            )
        )

    def _failed(self, health: Health, integration_id: str, why: str) -> None:
        now = time.time()
        health.failures += 1
        health.last_error = why
        if health.failing_since is None:
            health.failing_since = now
        if (
            health.unhealthy_since is None
            and health.failures >= self._min_failures
            and now - health.failing_since >= self._unhealthy_after
        ):
            health.unhealthy_since = now
            health.last_probe = now
            log.error(
                "notify: destination %s unhealthy after %d failures: %s",
                integration_id,
                health.failures,
                why,
            )
        self._recorder.health(health.pb(integration_id))

    def _record(
        self,
        n: Notification,
        status: str,
        generation: int,
        attempt: int,
        *,
        destination_type: str = "",
        last: float | None = None,
        next_at: float | None = None,
        code: int = 0,
        why: str = "",
    ) -> None:
        DELIVERIES.labels(destination_type or "unknown", status).inc()
        self._recorder.delivery(
            delivery_record(
                n,
                status,
                generation,
                attempt,
                destination_type=destination_type,
                last_attempt=last,
                next_attempt=next_at,
                destination_status=code,
                destination_message=why,
            )
        )
