"""Freshdesk's API v2 as the ticketing flow (adapters/ticketing.py) calls it: basic auth with
the API key as the user (and X as the password), async httpx with timeouts; a ticket per
Lily issue found again by its tag (the search API's filter query), private notes, and the
ticket resolved (4) or opened again (2). 429 (after Retry-After) and 5xx are tried again;
400 (a field it refuses: the answer names it), 401, 403 and 404 are not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters import ticketing
from adapters.freshdesk import mapping
from adapters.freshdesk.config import FreshdeskSettings
from adapters.http import Answer, Http
from adapters.spec import Memory, Notification, SendFailed, Sent
from adapters.ticketing import Ticket


@dataclass
class FreshdeskCalls:
    http: Http
    settings: FreshdeskSettings
    api_key: str
    timeout: float

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        return await self.http.call(
            "Freshdesk",
            method,
            f"{self.settings.base}/api/v2/{path}",
            timeout=self.timeout,
            body=body,
            params=params,
            auth=(self.api_key, "X"),
        )

    async def get(self, ref: str) -> Ticket | None:
        got = await self._call("GET", f"tickets/{ref}")
        if got.status != 200:
            return None
        return ref, got.json().get("status") in mapping.DONE

    async def search(self, key: str) -> Ticket | None:
        found = await self._call("GET", "search/tickets", params={"query": mapping.query(key)})
        results = found.json().get("results") or [] if found.status == 200 else []
        if not results:
            return None
        return str(results[0]["id"]), results[0].get("status") in mapping.DONE

    async def create(self, n: Notification, key: str) -> str:
        made = await self._call("POST", "tickets", mapping.ticket(n, key, self.settings))
        if made.status == 404:
            raise SendFailed("Freshdesk answered 404 to a new ticket", status=404, permanent=True)
        return str(made.json()["id"])

    async def notes(self, ref: str) -> str:
        got = await self._call("GET", f"tickets/{ref}/conversations")
        return got.text if got.status == 200 else ""

    async def note(self, ref: str, n: Notification) -> None:
        await self._call("POST", f"tickets/{ref}/notes", {"body": mapping.html(n), "private": True})

    async def move(self, ref: str, done: bool) -> None:
        await self._call(
            "PUT", f"tickets/{ref}", {"status": mapping.RESOLVED if done else mapping.OPEN}
        )


class FreshdeskSink(Http):
    def rate(self, settings: Mapping[str, Any]) -> float | None:
        return FreshdeskSettings.model_validate(settings).max_per_second

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
        if not secrets.get("api_key"):
            raise SendFailed("the integration has no api_key secret", permanent=True)
        calls = FreshdeskCalls(
            self, FreshdeskSettings.model_validate(settings), secrets["api_key"], timeout
        )
        return await ticketing.deliver(calls, notification, memory)
