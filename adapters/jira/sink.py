"""JIRA Cloud's REST API v3 as the ticketing flow (adapters/ticketing.py) calls it: basic
auth with an account's e-mail and API token, async httpx with timeouts; a ticket per Lily
issue found again by its lily-<issue id> label (JQL search), comments in Atlassian Document
Format, moves by the transitions JIRA offers into (or out of) the done category."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters import ticketing
from adapters.http import Answer, Http
from adapters.jira import mapping
from adapters.jira.config import JiraSettings
from adapters.spec import Memory, Notification, SendFailed, Sent
from adapters.ticketing import Ticket


@dataclass
class JiraCalls:
    """The calls the ticketing flow makes of one JIRA site."""

    http: Http
    settings: JiraSettings
    auth: tuple[str, str]
    timeout: float

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        return await self.http.call(
            "JIRA",
            method,
            f"{self.settings.base}/rest/api/3/{path}",
            timeout=self.timeout,
            body=body,
            params=params,
            auth=self.auth,
            headers={"accept": "application/json"},
        )

    async def get(self, ref: str) -> Ticket | None:
        got = await self._call("GET", f"issue/{ref}", params={"fields": "status"})
        return (ref, _done(got.json())) if got.status == 200 else None

    async def search(self, key: str) -> Ticket | None:
        found = await self._call(
            "POST",
            "search/jql",
            {"jql": mapping.jql(self.settings, key), "fields": ["status"], "maxResults": 1},
        )
        if found.status == 404:
            raise SendFailed("JIRA answered 404 to a search", status=404, permanent=True)
        issues = found.json().get("issues") or []
        return (str(issues[0]["key"]), _done(issues[0])) if issues else None

    async def create(self, n: Notification, key: str) -> str:
        made = await self._call("POST", "issue", {"fields": mapping.fields(n, self.settings)})
        if made.status == 404:
            raise SendFailed("JIRA answered 404 to a new issue", status=404, permanent=True)
        return str(made.json()["key"])

    async def notes(self, ref: str) -> str:
        recent = await self._call(
            "GET", f"issue/{ref}/comment", params={"orderBy": "-created", "maxResults": "50"}
        )
        return recent.text if recent.status == 200 else ""

    async def note(self, ref: str, n: Notification) -> None:
        await self._call("POST", f"issue/{ref}/comment", {"body": mapping.document(n)})

    async def move(self, ref: str, done: bool) -> None:
        """By the first transition JIRA offers into the done category (or out of it)."""
        offered = (await self._call("GET", f"issue/{ref}/transitions")).json()
        for t in offered.get("transitions") or []:
            category = ((t.get("to") or {}).get("statusCategory") or {}).get("key")
            if (category == "done") == done:
                await self._call(
                    "POST", f"issue/{ref}/transitions", {"transition": {"id": t["id"]}}
                )
                return
        raise SendFailed(f"JIRA offers no transition of {ref} there", permanent=True)


class JiraSink(Http):
    def rate(self, settings: Mapping[str, Any]) -> float | None:
        return JiraSettings.model_validate(settings).max_per_second

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
        if not (secrets.get("email") and secrets.get("api_token")):
            raise SendFailed("the integration has no email and api_token secrets", permanent=True)
        calls = JiraCalls(
            self,
            JiraSettings.model_validate(settings),
            (secrets["email"], secrets["api_token"]),
            timeout,
        )
        return await ticketing.deliver(calls, notification, memory)


def _done(issue: dict[str, Any]) -> bool:
    status = (issue.get("fields") or {}).get("status") or {}
    return (status.get("statusCategory") or {}).get("key") == "done"
