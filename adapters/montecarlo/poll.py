"""Polling Monte Carlo: the safety net under its webhooks. With an integration's API key
(secrets `mcd_id` and `mcd_token`), its official SDK (pycarlo) reads the alerts updated since
the cursor (getAlerts by updatedTime, a page at a time); each becomes a delivery of the
integration (adapters.spec.Polled), mapped as its webhooks are, so a webhook missed during an
outage is caught up, and a webhook and a poll of the same incident make one issue.

The cursor is a window of updatedTime (oldest first), its start moved on as its alerts are read.
A window ends where the poll began; the next starts OVERLAP before that end, for alerts whose
update Monte Carlo indexed late (read again, they are kept once). pycarlo is synchronous
(requests): each poll runs in a thread, each request within the runtime's timeout."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.montecarlo.config import MonteCarloSettings
from adapters.montecarlo.mapping import POLLED
from adapters.spec import Polled, PollFailed

# pycarlo's schema warns of enum defaults it does not know, once, at import: not our concern
logging.getLogger("pycarlo.lib.types").setLevel(logging.ERROR)

PAGE = 100  # alerts a page
MAX_PAGES = 10  # pages a poll; then it says there is more
OVERLAP = timedelta(minutes=2)
MAX_RANGE = timedelta(days=59)  # Monte Carlo answers for a range of at most two months
ALERT_FIELDS = (
    "id",
    "title",
    "type",
    "sub_types",
    "status",
    "severity",
    "url",
    "created_time",
    "updated_time",
)


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime
    page: str = ""  # the page of `since` the reading got to ("" : its first)

    more: bool = False  # not read to its end yet

    def dump(self) -> str:
        return json.dumps(
            {
                "since": self.since.isoformat(),
                "until": self.until.isoformat(),
                "page": self.page,
                "more": self.more,
            }
        )

    @classmethod
    def load(cls, cursor: str) -> Window | None:
        try:
            raw = json.loads(cursor)
            return cls(
                _utc(datetime.fromisoformat(raw["since"])),
                _utc(datetime.fromisoformat(raw["until"])),
                str(raw.get("page") or ""),
                bool(raw.get("more")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def next_window(cursor: str, now: datetime, lookback: timedelta) -> Window:
    """The window a poll reads: the one the cursor is in the middle of, or the one after it
    (from OVERLAP before its end to now), or, the first time, the lookback until now."""
    last = Window.load(cursor) if cursor else None
    if last is not None and last.more:
        return last
    since = last.until - OVERLAP if last is not None else now - lookback
    return Window(max(since, now - MAX_RANGE), now)


class MonteCarloPoller:
    def interval(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> float | None:
        if not (secrets.get("mcd_id") and secrets.get("mcd_token")):
            return None
        return MonteCarloSettings.model_validate(settings).poll_interval_seconds

    async def poll(
        self,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        cursor: str,
        *,
        now: float,
        timeout: float,
    ) -> Polled:
        s = MonteCarloSettings.model_validate(settings)
        window = next_window(
            cursor, datetime.fromtimestamp(now, UTC), timedelta(hours=s.poll_lookback_hours)
        )
        return await asyncio.to_thread(
            _read, s.api_url, secrets["mcd_id"], secrets["mcd_token"], window, timeout
        )


def _read(
    api_url: str, mcd_id: str, mcd_token: str, window: Window, timeout: float
) -> Polled:  # in a thread: pycarlo blocks
    import requests
    from pycarlo.common.errors import GqlError
    from pycarlo.common.retries import ExponentialBackoffJitter
    from pycarlo.core import Client, Query, Session

    client = Client(Session(mcd_id=mcd_id, mcd_token=mcd_token, endpoint=api_url))
    deliveries: list[tuple[str, bytes]] = []
    read: set[str] = set()
    since, page = window.since, window.page
    for _ in range(MAX_PAGES):
        query = Query()
        args: dict[str, Any] = {"after": page} if page else {}
        alerts = query.get_alerts(
            updated_time={"after": since.isoformat(), "before": window.until.isoformat()},
            first=PAGE,
            order_by="updatedTime",
            **args,
        )
        alerts.page_info.__fields__("has_next_page", "end_cursor")
        alerts.edges.node.__fields__(*ALERT_FIELDS)
        alerts.edges.node.tables.__fields__("mcon", "table_id")
        try:
            answer = client(
                query,
                timeout_in_seconds=max(1, int(timeout)),
                # a 5xx is tried again within the poll, for a few seconds in all
                retry_backoff=ExponentialBackoffJitter(0.25, 2.0),
            )
        except GqlError as exc:
            raise PollFailed(
                f"Monte Carlo answered {exc.status_code}: {str(exc.message)[:300]}",
                status=exc.status_code,
                retry_after=_retry_after(exc.headers),
            ) from None
        except requests.RequestException as exc:
            raise PollFailed(f"Monte Carlo could not be reached: {exc}") from None
        got = answer.get_alerts
        latest = since
        for edge in got.edges:
            alert = edge.node.__to_json_value__()
            delivery_id = f"poll.{alert['id']}.{alert['updatedTime']}"[:200]
            if delivery_id in read:  # at a page's boundary, again
                continue
            read.add(delivery_id)
            body = json.dumps({"polled": POLLED, "alert": alert}, sort_keys=True)
            deliveries.append((delivery_id, body.encode()))
            latest = max(latest, _utc(edge.node.updated_time))
        if not (got.page_info.has_next_page and got.page_info.end_cursor):
            return Polled(deliveries, Window(window.since, window.until).dump())
        # on from the latest alert read, not from the page: an alert updated meanwhile leaves
        # the window and moves every later one a place forward, so a page would skip one
        # (those read again at the boundary are left out); on by page only if a whole page
        # was updated at one instant
        since, page = (latest, "") if latest > since else (since, got.page_info.end_cursor)
    return Polled(deliveries, Window(since, window.until, page, more=True).dump(), more=True)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the API asked to wait (Retry-After, in seconds), if it did."""
    value = (headers or {}).get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
