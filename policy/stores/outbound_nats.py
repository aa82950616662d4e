"""NatsOutbound: the Outbound port (policy/ports.py) on the adapter runtime's outbound stream.
Its name, subjects and headers are the runtime's contract (adapters/runtime/outbox.py; a test
holds the two to the same names): LILY_OUTBOUND, `lily_outbound.<tenant>.<integration>`, one
message per delivery generation (Nats-Msg-Id <delivery id>.g<generation>)."""

from __future__ import annotations

from collections.abc import Sequence

import nats.errors
from nats.js import JetStreamContext

from core.domain.errors import Unavailable
from policy.model import DeliveryRecord

OUTBOUND_STREAM = "LILY_OUTBOUND"
_H = "Lily-"


def outbound_subject(tenant_id: str, integration_id: str) -> str:
    return f"lily_outbound.{tenant_id}.{integration_id}"


class NatsOutbound:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def send(self, deliveries: Sequence[DeliveryRecord]) -> None:
        for d in deliveries:
            try:
                await self._js.publish(
                    outbound_subject(d.tenant_id, d.integration_id),
                    d.notification,
                    timeout=self._timeout,
                    stream=OUTBOUND_STREAM,
                    headers={
                        "Nats-Msg-Id": f"{d.delivery_id}.g{d.generation}",
                        _H + "Delivery": d.delivery_id,
                        _H + "Tenant": d.tenant_id,
                        _H + "Integration": d.integration_id,
                        _H + "Subscription": d.subscription_id,
                        _H + "Generation": str(d.generation),
                    },
                )
            except (nats.errors.Error, TimeoutError) as exc:
                raise Unavailable("the adapter runtime's outbound stream is unavailable") from exc
