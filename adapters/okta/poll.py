"""Reconciliation: the net under Okta's event hooks. With an integration's API token (secret
`api_token`), the org's users (those deactivated too) and the members of its groups are read
whole through the Management API, every `reconcile_every_seconds`, and filed as deliveries of
the integration (adapters/okta/inbound.py maps them: each person's status and groups as Okta
has them now, then a sweep of whoever Okta no longer has). A hook that never arrived is so
caught up; one that arrived after the reading began is not undone (Lily skips what is older
than what it has of a person).

The Management API as Okta documents it: `Authorization: SSWS <token>`; pages of at most 200
with `limit`, the next page's URL in the `Link` header (rel="next"); every answer says the
rate limit left (X-Rate-Limit-Limit, -Remaining, -Reset: epoch seconds), and past it 429
(E0000047). The reading waits for the reset when little is left or a 429 says so (up to
MAX_WAIT), and otherwise gives up until the next poll (PollFailed with when to try again).

Okta's official SDK (okta 3.4) is not used: it sends `SSWS<token>` with no space (its
Configuration.auth_settings joins mode and token), not the documented header, and it reaches
an org only over https (its testing switch is an environment variable).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from google.protobuf import json_format

from adapters.http import Answer, Http
from adapters.okta import mapping
from adapters.okta.config import OktaSettings
from adapters.okta.inbound import RECONCILE
from adapters.spec import Polled, PollFailed, SendFailed

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')
MAX_WAIT = 60.0  # seconds a reading waits for Okta's rate limit to reset, at most
LOW = 0.1  # of the rate limit left: wait for its reset before the next call
CHUNK = 200  # people a delivery


def _reset_in(answer: Answer, now: float) -> float | None:
    reset = answer.headers.get("x-rate-limit-reset", "")
    try:
        return max(0.0, float(reset) - now) + 0.5
    except ValueError:
        return None


def _low(answer: Answer) -> bool:
    try:
        limit = int(answer.headers.get("x-rate-limit-limit", ""))
        left = int(answer.headers.get("x-rate-limit-remaining", ""))
    except ValueError:
        return False
    return left < max(1, limit * LOW)


class OktaReconciler(Http):
    def interval(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> float | None:
        if not secrets.get("api_token"):
            return None
        return float(OktaSettings.model_validate(settings).reconcile_every_seconds)

    async def _get(self, url: str, token: str, timeout: float) -> Answer:
        """One page, waiting out the rate limit where Okta says so (twice at most)."""
        for attempt in range(3):
            try:
                answer = await self.call(
                    "Okta",
                    "GET",
                    url,
                    timeout=timeout,
                    headers={"authorization": f"SSWS {token}", "accept": "application/json"},
                )
            except SendFailed as exc:
                raise PollFailed(str(exc), status=exc.status, retry_after=exc.retry_after) from exc
            if answer.status == 404:
                raise PollFailed(f"Okta answered 404 for {url}", status=404)
            wait = _reset_in(answer, time.time())
            if answer.status != 429:
                if _low(answer) and wait is not None:
                    await asyncio.sleep(min(wait, MAX_WAIT))  # let the limit reset first
                return answer
            if wait is None or wait > MAX_WAIT or attempt == 2:
                raise PollFailed("Okta's rate limit is spent", status=429, retry_after=wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _all(self, url: str, token: str, timeout: float) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            answer = await self._get(next_url, token, timeout)
            page = answer.json()
            if not isinstance(page, list):
                raise PollFailed(f"Okta answered {answer.text[:200]!r} for {next_url}")
            items += [i for i in page if isinstance(i, dict) and isinstance(i.get("id"), str)]
            links = ",".join(answer.headers.getall("link", []))  # type: ignore[attr-defined]
            found = _NEXT.search(links)
            next_url = found.group(1) if found else None
        return items

    async def poll(
        self,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        cursor: str,
        *,
        now: float,
        timeout: float,
    ) -> Polled:
        s = OktaSettings.model_validate(settings)
        token = secrets.get("api_token", "")
        if not token:
            raise PollFailed("no api_token")
        started = mapping.timestamp(None, datetime.fromtimestamp(now, UTC))
        base, limit = s.org_url, {"limit": str(s.page_size)}
        users = await self._all(f"{base}/api/v1/users?{urlencode(limit)}", token, timeout)
        gone = {**limit, "search": 'status eq "DEPROVISIONED"'}
        users += await self._all(f"{base}/api/v1/users?{urlencode(gone)}", token, timeout)
        wanted = set(s.groups)
        members: dict[str, list[str]] = {}
        for group in await self._all(f"{base}/api/v1/groups?{urlencode(limit)}", token, timeout):
            name = (group.get("profile") or {}).get("name")
            if not isinstance(name, str) or (wanted and name not in wanted):
                continue
            url = f"{base}/api/v1/groups/{group['id']}/users?{urlencode(limit)}"
            members[name] = [u["id"] for u in await self._all(url, token, timeout)]
        stamp = started.ToJsonString()
        deliveries = [
            (
                f"reconcile:{stamp}:{n}",
                json.dumps(
                    {RECONCILE: json_format.MessageToDict(request)}, separators=(",", ":")
                ).encode(),
            )
            for n, request in enumerate(mapping.reconciled(users, members, started, CHUNK))
        ]
        return Polled(deliveries, stamp)
