"""Maps what the inbox holds onto Lily: one delivery at a time per integration, in the order
they came, where its type needs that (else all at once); integrations side by side. A
delivery is acknowledged only once it was mapped, or filed as unmapped, pending or dead
(inbox.keep); while the core cannot be reached it stays queued and is tried again with
growing pauses, so nothing the door accepted is lost."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import grpc
import nats.errors
from google.protobuf import json_format
from nats.aio.msg import Msg

from adapters.runtime.inbox import Inbox, batches
from adapters.runtime.resolver import TRANSIENT, CoreUnavailable, Resolver
from adapters.spec import AdapterType, Delivery, LilyClient, TryLater
from adapters.tracing import span

log = logging.getLogger(__name__)

BATCH = 64
MAX_ATTEMPTS = 200  # with pauses growing to a minute: a core away for hours loses nothing


def pause(attempt: int) -> float:
    """Seconds before a delivery that met an unavailable core is tried again."""
    return float(min(60.0, 0.25 * 2 ** min(attempt, 8)))


class Dispatcher:
    def __init__(
        self,
        inbox: Inbox,
        resolver: Resolver,
        types: Mapping[str, AdapterType],
        channel: grpc.aio.Channel,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._inbox = inbox
        self._resolver = resolver
        self._types = dict(types)
        self._channel = channel
        self._timeout = timeout

    async def run(self) -> None:
        sub = await self._inbox.subscribe()
        async for msgs in batches(sub, BATCH, "inbound"):
            await self.dispatch(msgs)

    async def dispatch(self, msgs: list[Msg]) -> None:
        """One integration's deliveries in the order they came, if its type says so (else
        each on its own); integrations side by side."""
        lanes: dict[str, list[Msg]] = defaultdict(list)
        for msg in msgs:
            h = msg.headers or {}
            kind = self._types.get(h.get("Lily-Type", ""))
            lane = h.get("Lily-Integration", "")
            if kind is not None and not kind.ordered:
                lane += "/" + h.get("Lily-Delivery", "")
            lanes[lane].append(msg)
        await asyncio.gather(*(self._in_order(group) for group in lanes.values()))

    async def _in_order(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                await self._one(msg)
            except Exception:  # a bug here must not stop the others: it is tried again
                log.exception(
                    "inbound: delivery %s failed", (msg.headers or {}).get("Lily-Delivery")
                )
                await _nak(msg, 5.0)

    async def _one(self, msg: Msg) -> None:
        delivery = self._inbox.delivery(msg)
        attempt = msg.metadata.num_delivered if msg.metadata else 1
        try:
            resolved = await self._resolver.get(delivery.integration_id)
        except CoreUnavailable:
            await _nak(msg, pause(attempt))
            return
        kind = self._types.get(delivery.type)
        if resolved is None or kind is None or kind.inbound is None:
            log.warning(
                "inbound: delivery %s of integration %s dropped: no such integration now",
                delivery.delivery_id,
                delivery.integration_id,
            )
            await msg.ack()
            return
        with span(
            f"deliver {delivery.type}",
            delivery.trace,
            integration_id=delivery.integration_id,
            delivery_id=delivery.delivery_id,
        ):
            await self._handle(msg, delivery, resolved, kind, attempt)

    async def _handle(
        self, msg: Msg, delivery: Delivery, resolved: Any, kind: AdapterType, attempt: int
    ) -> None:
        assert kind.inbound is not None
        lily = LilyClient(
            self._channel, (("authorization", f"Bearer {resolved.api_key}"),), self._timeout
        )
        settings = json_format.MessageToDict(resolved.integration.settings)
        memory = self._inbox.memory(delivery.integration_id)
        try:
            handled = await kind.inbound.handle(
                delivery, settings, lily, memory, dict(resolved.secrets)
            )
        except TryLater as exc:  # what it needs is away: it waits, queued
            if attempt < MAX_ATTEMPTS:
                log.warning("inbound: delivery %s waits: %s", delivery.delivery_id, exc)
                await _nak(msg, pause(attempt))
                return
            await self._dead(msg, delivery, f"gave up after {attempt} attempts: {exc}")
            return
        except grpc.aio.AioRpcError as err:
            unknown_key = err.code() == grpc.StatusCode.UNAUTHENTICATED
            if (err.code() in TRANSIENT or unknown_key) and attempt < MAX_ATTEMPTS:
                # the core is away (what is known of the integration serves on meanwhile), or
                # it does not know the integration's key: ask for it anew next time
                if unknown_key:
                    self._resolver.forget(delivery.integration_id)
                await _nak(msg, pause(attempt))
                return
            await self._dead(msg, delivery, f"{err.code().name}: {err.details()}")
            return
        except Exception as exc:
            await self._dead(msg, delivery, f"{type(exc).__name__}: {exc}")
            return
        if handled.kind != "done":
            await self._inbox.keep(delivery, handled.kind, handled.detail)
        log.info(
            "inbound: delivery %s: %s %s",
            delivery.delivery_id,
            handled.kind,
            handled.detail,
            extra={"integration_id": delivery.integration_id, "tenant": delivery.tenant_id},
        )
        await msg.ack()

    async def _dead(self, msg: Msg, delivery: Delivery, why: str) -> None:
        log.error("inbound: delivery %s dead: %s", delivery.delivery_id, why)
        await self._inbox.keep(delivery, "dead", why)
        await msg.ack()


async def _nak(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except nats.errors.Error as exc:  # it comes back after the ack wait anyway
        log.warning("inbound: nak failed: %s", exc)
