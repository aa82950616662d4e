"""The adapter runtime's streams on NATS JetStream:

- LILY_INBOUND       lily_inbound.<type>.<integration id>   deliveries accepted at the door and
  not yet mapped; file storage, work-queue retention; de-duplicated by Nats-Msg-Id
  (<integration id>.<delivery id>) within DEDUPE_WINDOW, so a repeated delivery is kept once.
- LILY_INBOUND_KEPT  lily_inbound_kept.<tenant>.<integration id>.<kind>   deliveries that were
  not mapped (unmapped: an event type the adapter does not map; pending: it names no asset Lily
  knows yet; dead: mapping failed), with why; kept for KEPT_DAYS.
- the key-value bucket lily_inbound_memory: what adapters remember between deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    KeyValueConfig,
    RawStreamMsg,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from adapters.spec import Delivery
from core.events.pull import Pull

log = logging.getLogger(__name__)

INBOX_STREAM = "LILY_INBOUND"
KEPT_STREAM = "LILY_INBOUND_KEPT"
MEMORY_BUCKET = "lily_inbound_memory"
CONSUMER = "adapters"
DEDUPE_WINDOW = 24 * 3600.0
KEPT_DAYS = 30
ACK_WAIT = 30.0

_H = "Lily-"  # our headers' prefix


class InboxUnavailable(Exception):
    """NATS did not take the delivery (the sender should try again)."""


def stopping() -> None:
    """Raises CancelledError if the running task was asked to stop: nats-py swallows a cancel
    that lands while it sends a command (a fetch's request, a consumer's creation), and a
    loop around it would go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def batches(sub: Pull, size: int, who: str) -> AsyncIterator[list[Msg]]:
    """A pull consumer's messages, a batch (up to `size`) at a time as they come: an empty
    fetch is waited out, a failed one tried again a second later; it ends only when its task
    is asked to stop."""
    while True:
        stopping()
        try:
            msgs = await sub.fetch(size, timeout=5.0)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        except nats.errors.Error as exc:
            log.warning("%s: fetch failed: %s", who, exc)
            await asyncio.sleep(1.0)
            continue
        yield msgs


def sequence(msg: Msg) -> int:
    """A fetched message's sequence in its stream (what a copy the stream sends again
    shares with the first)."""
    return msg.metadata.sequence.stream if msg.metadata and msg.metadata.sequence else id(msg)


def inbox_subject(kind: str, integration_id: str) -> str:
    return f"lily_inbound.{kind}.{integration_id}"


class Inbox:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout
        self._memory: KeyValue | None = None

    async def ensure(self) -> None:
        """Makes the streams, the consumer and the bucket (or updates them to this config)."""
        streams = (
            StreamConfig(
                name=INBOX_STREAM,
                subjects=["lily_inbound.>"],
                storage=StorageType.FILE,
                retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=DEDUPE_WINDOW,
            ),
            StreamConfig(
                name=KEPT_STREAM,
                subjects=["lily_inbound_kept.>"],
                storage=StorageType.FILE,
                max_age=KEPT_DAYS * 86400.0,
            ),
        )
        for config in streams:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)
        await self._js.add_consumer(
            INBOX_STREAM,
            ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT),
        )
        self._memory = await self._js.create_key_value(
            KeyValueConfig(bucket=MEMORY_BUCKET, history=1, ttl=KEPT_DAYS * 86400.0)
        )

    async def put(self, d: Delivery) -> bool:
        """Keeps a delivery durably (once: False if it was a repeat). InboxUnavailable if NATS
        did not take it."""
        try:
            return await self._send(d, f"{d.integration_id}.{d.delivery_id}")
        except (nats.errors.Error, TimeoutError) as exc:
            raise InboxUnavailable(str(exc) or type(exc).__name__) from exc

    async def _send(self, d: Delivery, msg_id: str) -> bool:
        """Puts a delivery in the inbox, de-duplicated by `msg_id`; False if it was a repeat."""
        ack = await self._js.publish(
            inbox_subject(d.type, d.integration_id),
            d.body,
            timeout=self._timeout,
            headers={"Nats-Msg-Id": msg_id, **_headers(d)},
        )
        return not ack.duplicate

    async def keep(self, d: Delivery, kind: str, why: str) -> None:
        """Files a delivery that was not mapped, with why."""
        headers = {**_headers(d), _H + "Kept-At": repr(time.time()), _H + "Reason": why[:2000]}
        await self._js.publish(
            f"lily_inbound_kept.{d.tenant_id}.{d.integration_id}.{kind}",
            d.body,
            timeout=self._timeout,
            headers=headers,
        )

    async def retry_pending(self, after: Sequence[float], now: float) -> int:
        """Sends each pending delivery that is due through again (the n-th time `after[n]`
        seconds after it was kept; the last pause repeats): an asset it waits for may exist
        now. Sent again, it leaves the kept list (and is kept again if still pending)."""
        retried, seq = 0, 1
        while True:
            try:
                msg = await self._js.get_msg(
                    KEPT_STREAM, seq=seq, subject="lily_inbound_kept.*.*.pending", next=True
                )
            except nats.js.errors.NotFoundError:  # nothing more
                return retried
            seq = (msg.seq or seq) + 1
            d = self.delivery(msg)
            kept_at = float((msg.headers or {}).get(_H + "Kept-At", "0") or 0)
            if now < kept_at + after[min(d.retries, len(after) - 1)]:
                continue
            again = replace(d, retries=d.retries + 1)
            await self._send(again, f"{d.integration_id}.{d.delivery_id}.p{msg.seq}")
            await self._js.delete_msg(KEPT_STREAM, msg.seq or 0)
            retried += 1

    async def subscribe(self) -> Pull:
        return await Pull.bind(self._js, INBOX_STREAM, CONSUMER)

    @staticmethod
    def delivery(msg: Msg | RawStreamMsg) -> Delivery:
        """The delivery a message of the inbox (or of the kept list) holds."""
        h = msg.headers or {}
        return Delivery(
            integration_id=h.get(_H + "Integration", ""),
            tenant_id=h.get(_H + "Tenant", ""),
            type=h.get(_H + "Type", ""),
            delivery_id=h.get(_H + "Delivery", ""),
            body=msg.data or b"",
            received_at=float(h.get(_H + "Received-At", "0") or 0),
            retries=int(h.get(_H + "Retries", "0") or 0),
            trace=h.get("traceparent", ""),
        )

    def memory(self, integration_id: str) -> IntegrationMemory:
        assert self._memory is not None, "ensure() first"
        return IntegrationMemory(self._memory, integration_id)


def _headers(d: Delivery) -> dict[str, str]:
    """What a delivery's message says of it, beside its body (read back by Inbox.delivery)."""
    return {
        _H + "Integration": d.integration_id,
        _H + "Tenant": d.tenant_id,
        _H + "Type": d.type,
        _H + "Delivery": d.delivery_id,
        _H + "Received-At": repr(d.received_at),
        _H + "Retries": str(d.retries),
        **({"traceparent": d.trace} if d.trace else {}),
    }


class IntegrationMemory:
    """adapters.spec.Memory for one integration, in the bucket (keys hashed: any text)."""

    def __init__(self, kv: KeyValue, integration_id: str) -> None:
        self._kv = kv
        self._prefix = integration_id

    def _key(self, key: str) -> str:
        return f"{self._prefix}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    async def get(self, key: str) -> list[str]:
        try:
            entry = await self._kv.get(self._key(key))
        except KeyNotFoundError:
            return []
        return [str(v) for v in orjson.loads(entry.value or b"[]")]

    async def put(self, key: str, values: Sequence[str]) -> None:
        await self._kv.put(self._key(key), orjson.dumps(list(values)))

    async def read(self, key: str) -> tuple[list[str], int]:
        try:
            entry = await self._kv.get(self._key(key))
        except KeyNotFoundError:
            return [], 0
        return [str(v) for v in orjson.loads(entry.value or b"[]")], int(entry.revision or 0)

    async def write(self, key: str, values: Sequence[str], revision: int) -> bool:
        data = orjson.dumps(list(values))
        try:
            if revision:
                await self._kv.update(self._key(key), data, last=revision)
            else:
                await self._kv.create(self._key(key), data)
        except KeyWrongLastSequenceError:
            return False
        return True
