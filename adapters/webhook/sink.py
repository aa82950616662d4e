"""Posts notifications as Standard Webhooks: the JSON body {"type", "timestamp", "data"}, and
webhook-id (the delivery's id: the same on every attempt, so a receiver can drop repeats),
webhook-timestamp and webhook-signature ("v1,<base64 HMAC-SHA256 of id.timestamp.body>", one
per secret, space-separated), signed with the standardwebhooks library. 2xx is delivered;
408, 425, 429 (after Retry-After) and 5xx are tried again; any other answer is not (410 Gone
says the endpoint is no more)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from adapters.http import Http
from adapters.spec import Memory, Notification, SendFailed, Sent
from adapters.webhook.config import WebhookSettings


def body_of(n: Notification) -> bytes:
    return orjson.dumps(
        {
            "type": f"lily.{n.event_type}",
            "timestamp": datetime.fromtimestamp(n.occurred_at or 0, UTC).isoformat(),
            "data": n,
        }
    )


@functools.lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def signed(message_id: str, at: datetime, body: bytes, secrets: Sequence[str]) -> str:
    """The webhook-signature header: a signature per secret."""
    text = body.decode()
    return " ".join(_signer(s).sign(message_id, at, text) for s in secrets)


class WebhookSink(Http):
    def rate(self, settings: Mapping[str, Any]) -> float | None:
        return WebhookSettings.model_validate(settings).max_per_second

    async def send(
        self,
        notification: Notification,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        memory: Memory,
        *,
        signing: Sequence[str],
        timeout: float,
    ) -> Sent:
        url = str(settings.get("url", ""))  # (checked when the integration was made)
        if not signing:
            raise SendFailed("the integration has no webhook_secret to sign with", permanent=True)
        body = body_of(notification)
        at = datetime.now(UTC)
        message_id = notification.delivery_id
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signed(message_id, at, body, signing),
            "user-agent": "Lily-Webhooks/1",
        }
        return await self.delivered("the receiver", url, body, headers, timeout)
