"""NatsKeptDeliveries: the KeptDeliveries port (policy/ports.py) on the adapter runtime's
streams. Their names and headers are the runtime's contract (adapters/runtime/inbox.py; a test
holds the two to the same names): kept deliveries on LILY_INBOUND_KEPT,
`lily_inbound_kept.<tenant>.<integration>.<kind>`; replayed into LILY_INBOUND,
`lily_inbound.<type>.<integration>`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from core.domain.errors import Unavailable
from policy.model import KeptRecord

KEPT_STREAM = "LILY_INBOUND_KEPT"
INBOX_STREAM = "LILY_INBOUND"
KINDS = ("unmapped", "pending", "dead")
_H = "Lily-"


def _when(value: str | None) -> datetime:
    try:
        return datetime.fromtimestamp(float(value or 0), UTC)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _record(msg: RawStreamMsg) -> KeptRecord:
    h = msg.headers or {}
    return KeptRecord(
        sequence=msg.seq or 0,
        delivery_id=h.get(_H + "Delivery", ""),
        kind=(msg.subject or "").rsplit(".", 1)[-1],
        reason=h.get(_H + "Reason", ""),
        received_at=_when(h.get(_H + "Received-At")),
        kept_at=_when(h.get(_H + "Kept-At")),
        body=msg.data or b"",
    )


class NatsKeptDeliveries:
    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    @staticmethod
    def _subject(tenant_id: str, integration_id: str, kind: str) -> str:
        return f"lily_inbound_kept.{tenant_id}.{integration_id}.{kind or '*'}"

    async def _next(self, subject: str, seq: int) -> RawStreamMsg | None:
        try:
            return await self._js.get_msg(KEPT_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise Unavailable("the adapter runtime's streams are unavailable") from exc

    async def _messages(self, subject: str, after: int, limit: int) -> list[RawStreamMsg]:
        found: list[RawStreamMsg] = []
        seq = after + 1
        while len(found) < limit and (msg := await self._next(subject, seq)) is not None:
            found.append(msg)
            seq = (msg.seq or seq) + 1
        return found

    async def find(
        self, tenant_id: str, integration_id: str, kind: str, after: int, limit: int
    ) -> list[KeptRecord]:
        subject = self._subject(tenant_id, integration_id, kind)
        return [_record(m) for m in await self._messages(subject, after, limit)]

    async def replay(
        self, tenant_id: str, integration_id: str, kind: str, sequences: Sequence[int]
    ) -> int:
        subject = self._subject(tenant_id, integration_id, kind)
        if sequences:
            wanted = sorted(set(sequences))
            messages = [
                m
                for seq in wanted
                if (m := await self._next(subject, seq)) is not None and m.seq == seq
            ]
        else:
            messages = await self._messages(subject, 0, 100_000)
        replayed = 0
        for msg in messages:
            h = dict(msg.headers or {})
            headers = {k: v for k, v in h.items() if k not in (_H + "Reason", _H + "Kept-At")}
            headers["Nats-Msg-Id"] = f"{integration_id}.{h.get(_H + 'Delivery', '')}.r{msg.seq}"
            try:
                await self._js.publish(
                    f"lily_inbound.{h.get(_H + 'Type', '')}.{integration_id}",
                    msg.data or b"",
                    timeout=self._timeout,
                    headers=headers,
                )
                await self._js.delete_msg(KEPT_STREAM, msg.seq or 0)
            except (nats.errors.Error, TimeoutError) as exc:
                raise Unavailable("the adapter runtime's inbox is unavailable") from exc
            replayed += 1
        return replayed
