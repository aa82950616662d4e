"""One pool of kept-alive HTTP connections for the adapters that speak to their vendor over
plain HTTP (those without an official async SDK): aiohttp, which slack-sdk's async clients
run on too. (httpx, measured: a request cost 0.55 ms of CPU to aiohttp's 0.15 ms, which was
most of a webhook delivery's; scripts/bench_notify.py.) Made on first use in the running
event loop, closed by the runtime."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from adapters.spec import SendFailed, Sent, send_failed


@dataclass(frozen=True, slots=True)
class Answer:
    """What a vendor answered."""

    status: int
    text: str
    headers: Mapping[str, str]  # (case-insensitive: aiohttp's)
    reason: str = ""

    def json(self) -> Any:
        try:
            return orjson.loads(self.text) if self.text else {}
        except orjson.JSONDecodeError:
            return {}


class Http:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _pool(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, limit_per_host=50)
            )
            self._loop = loop
        return self._session

    async def call(
        self,
        who: str,
        method: str,
        url: str,
        *,
        timeout: float,
        body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """A request to `who` (`body`: sent as JSON; `content`: as it is); SendFailed if it
        could not be made, or if it was answered with neither a success nor 404 (which the
        caller reads: a thing looked up is not there)."""
        sent = dict(headers or {})
        if auth is not None:
            pair = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            sent["authorization"] = f"Basic {pair}"
        if body is not None:
            content = orjson.dumps(body)
            sent.setdefault("content-type", "application/json")
        try:
            async with self._pool().request(
                method,
                url,
                data=content,
                params=params,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as r:
                raw = await r.read()
                answer = Answer(r.status, raw.decode(errors="replace"), r.headers, r.reason or "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SendFailed(f"{who} unreachable: {type(exc).__name__}: {exc}") from exc
        if answer.status >= 300 and answer.status != 404:
            raise refused(answer, who)
        return answer

    async def delivered(
        self, who: str, url: str, content: bytes, headers: dict[str, str], timeout: float
    ) -> Sent:
        """POSTs a notification's body; Sent, or SendFailed (404 too: the endpoint is gone)."""
        answer = await self.call(
            who, "POST", url, timeout=timeout, content=content, headers=headers
        )
        if answer.status == 404:
            raise refused(answer, who)
        return Sent(answer.status, answer.text[:200] or answer.reason)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def refused(answer: Answer, who: str) -> SendFailed:
    """An answer that is not a success, as SendFailed (Retry-After honoured)."""
    return send_failed(
        answer.status,
        f"{who} answered {answer.status}: {answer.text[:300]}",
        answer.headers.get("retry-after"),
    )
