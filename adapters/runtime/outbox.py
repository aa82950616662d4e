"""The outbound stream: notifications on their way to their destinations.

- LILY_OUTBOUND  lily_outbound.<tenant>.<integration id>   one message per delivery and
  generation (Nats-Msg-Id <delivery id>.g<generation>, so a delivery routed twice is sent
  once); file storage, work-queue retention. The policy service puts retries, replays and
  tests here too (policy/stores/outbound_nats.py: a test holds the two to the same names).
"""

from __future__ import annotations

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from adapters.spec import Notification
from core.events.pull import Pull

OUTBOUND_STREAM = "LILY_OUTBOUND"
CONSUMER = "notify"
DEDUPE_WINDOW = 24 * 3600.0
ACK_WAIT = 30.0  # (held notifications are kept alive: send.KEEPALIVE)
MAX_PENDING = 20000
_H = "Lily-"


def outbound_subject(tenant_id: str, integration_id: str) -> str:
    return f"lily_outbound.{tenant_id}.{integration_id}"


class Outbox:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def ensure(self) -> None:
        config = StreamConfig(
            name=OUTBOUND_STREAM,
            subjects=["lily_outbound.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=DEDUPE_WINDOW,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self._js.update_stream(config)
        await self._js.add_consumer(
            OUTBOUND_STREAM,
            ConsumerConfig(
                durable_name=CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_ack_pending=MAX_PENDING,
            ),
        )

    async def put(self, n: Notification, body: bytes) -> bool:
        """Queues a notification (`body`: n.dump()), as its first generation; False if it was
        queued already. (Later generations are the policy service's: RetryDelivery.)"""
        ack = await self._js.publish(
            outbound_subject(n.tenant_id, n.integration_id),
            body,
            timeout=self._timeout,
            stream=OUTBOUND_STREAM,
            headers={
                "Nats-Msg-Id": f"{n.delivery_id}.g0",
                _H + "Delivery": n.delivery_id,
                _H + "Tenant": n.tenant_id,
                _H + "Integration": n.integration_id,
                _H + "Subscription": n.subscription_id,
                _H + "Generation": "0",
            },
        )
        return not ack.duplicate

    async def subscribe(self) -> Pull:
        return await Pull.bind(self._js, OUTBOUND_STREAM, CONSUMER)


def generation_of(msg: Msg) -> int:
    try:
        return int((msg.headers or {}).get(_H + "Generation", "0") or 0)
    except ValueError:
        return 0


def lane_of(msg: Msg) -> str:
    """The lane a message waits in: its subscription's (a test: its destination's)."""
    h = msg.headers or {}
    return h.get(_H + "Subscription") or "test:" + h.get(_H + "Integration", "")
