"""Sends notifications to Slack with its official SDK: an incoming webhook (POST of text and
blocks, answered `ok`) or chat.postMessage with a bot token. Slack's answers as SendFailed:
429 with Retry-After and 5xx are tried again; 400 (invalid_payload, ...), 403, 404 and 410
(channel_is_archived, ...) are not."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.http import Http
from adapters.slack.config import SlackSettings
from adapters.slack.mapping import message
from adapters.spec import Memory, Notification, SendFailed, Sent, send_failed


class SlackSink(Http):
    """(Its clients share the adapters' pool of aiohttp connections.)"""

    def rate(self, settings: Mapping[str, Any]) -> float | None:
        return SlackSettings.model_validate(settings).max_per_second

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
        s = SlackSettings.model_validate(settings)
        text, blocks = message(notification)
        seconds = max(1, math.ceil(timeout))
        try:
            if secrets.get("bot_token") and s.channel:
                return await self._post(secrets["bot_token"], s, text, blocks, seconds)
            if secrets.get("webhook_url"):
                return await self._webhook(secrets["webhook_url"], text, blocks, seconds)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SendFailed(f"Slack unreachable: {type(exc).__name__}: {exc}") from exc
        raise SendFailed(
            "the integration has neither a webhook_url secret nor a bot_token with a channel",
            permanent=True,
        )

    async def _webhook(
        self, url: str, text: str, blocks: list[dict[str, Any]], timeout: int
    ) -> Sent:
        client = AsyncWebhookClient(url, timeout=timeout, session=self._pool())
        answer = await client.send(text=text, blocks=blocks)
        if answer.status_code == 200:
            return Sent(200, answer.body[:500])
        raise send_failed(
            answer.status_code,
            f"Slack answered {answer.status_code}: {answer.body}",
            _header(answer.headers, "retry-after"),
        )

    async def _post(
        self,
        token: str,
        s: SlackSettings,
        text: str,
        blocks: list[dict[str, Any]],
        timeout: int,
    ) -> Sent:
        client = AsyncWebClient(
            token=token, base_url=s.api_url, timeout=timeout, session=self._pool()
        )
        try:
            answer = await client.chat_postMessage(channel=s.channel, text=text, blocks=blocks)
        except SlackApiError as exc:
            r = exc.response
            error = r.get("error", "") if isinstance(r.data, dict) else str(r.data)[:200]
            raise send_failed(
                r.status_code,
                f"Slack answered {r.status_code}: {error}",
                _header(r.headers, "retry-after"),
            ) from exc
        return Sent(answer.status_code, "ok", str(answer.get("ts", "")))


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None
