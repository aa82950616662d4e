"""One pool of kept-alive HTTP connections for the adapters that speak to their vendor with
httpx (those without an official async SDK): made on first use, closed by the runtime."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.spec import SendFailed, Sent, send_failed


class Http:
    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
            )
        return self._client

    async def call(
        self, who: str, method: str, url: str, *, timeout: float, **request: Any
    ) -> httpx.Response:
        """A request to `who`; SendFailed if it could not be made, or if it was answered with
        neither a success nor 404 (which the caller reads: a thing looked up is not there)."""
        try:
            answer = await self.client.request(method, url, timeout=timeout, **request)
        except httpx.HTTPError as exc:
            raise unreachable(exc, who) from exc
        if answer.status_code >= 300 and answer.status_code != 404:
            raise refused(answer, who)
        return answer

    async def delivered(
        self, who: str, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Sent:
        """POSTs a notification's body; Sent, or SendFailed (404 too: the endpoint is gone)."""
        answer = await self.call(who, "POST", url, timeout=timeout, content=body, headers=headers)
        if answer.status_code == 404:
            raise refused(answer, who)
        return Sent(answer.status_code, answer.text[:200] or answer.reason_phrase)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def unreachable(exc: httpx.HTTPError, who: str) -> SendFailed:
    return SendFailed(f"{who} unreachable: {type(exc).__name__}: {exc}")


def refused(answer: httpx.Response, who: str) -> SendFailed:
    """An answer that is not a success, as SendFailed (Retry-After honoured)."""
    return send_failed(
        answer.status_code,
        f"{who} answered {answer.status_code}: {answer.text[:300]}",
        answer.headers.get("retry-after"),
    )
