"""Posts notifications to a Teams Workflows webhook (async httpx, with timeouts). The flow's
trigger answers 202 Accepted; 429 (after Retry-After) and 5xx are tried again; 400 (a
message it cannot read), 401, 403 and 404 (the workflow is gone or its URL wrong) are not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from adapters.http import Http
from adapters.spec import Memory, Notification, SendFailed, Sent
from adapters.teams.config import TeamsSettings
from adapters.teams.mapping import message


class TeamsSink(Http):
    def rate(self, settings: Mapping[str, Any]) -> float | None:
        return TeamsSettings.model_validate(settings).max_per_second

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
        url = secrets.get("workflow_url", "")
        if not url.startswith(("https://", "http://")):
            raise SendFailed("the integration has no workflow_url secret", permanent=True)
        body = orjson.dumps(message(notification))
        headers = {"content-type": "application/json"}
        return await self.delivered("Teams", url, body, headers, timeout)
