"""A local stand-in for Slack's incoming webhooks and Web API, as Slack documents them
(docs.slack.dev: "Sending messages using incoming webhooks", chat.postMessage, Block Kit's
reference for each block's limits, "Rate limits"):

- POST /services/<team>/<bot>/<token>: an incoming webhook. A JSON body with `text` or
  `blocks`; answers 200 `ok` (text/html). Errors as Slack gives them: 400 invalid_payload
  (not JSON), 400 no_text (neither), 400 invalid_blocks (a block Block Kit refuses: unknown
  type, a header over 150 characters or not plain_text, a section over 3,000, more than 50
  blocks, ...), 404 no_service (an unknown webhook), 410 channel_is_archived; 429 with
  Retry-After beyond `per_second` messages a second per webhook (Slack: about one).
- POST /api/chat.postMessage with `Authorization: Bearer xoxb-...`: JSON {channel, text,
  blocks}; answers 200 {"ok": true, "channel", "ts"}, or 200 {"ok": false, "error":
  not_authed | invalid_auth | channel_not_found | no_text | invalid_blocks}; 429 likewise.
- outage(seconds, status): every request answered `status` (5xx) for that long;
  throttle(times, retry_after): the next requests 429 with that Retry-After.
Every message taken is kept in `received`, in order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.doubles import Served

_TEXT_TYPES = {"plain_text", "mrkdwn"}


def block_problem(blocks: Any) -> str:
    """Why Block Kit refuses `blocks` ("" : it takes them)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for b in blocks:
        if not isinstance(b, dict):
            return "a block is not an object"
        kind = b.get("type")
        text = b.get("text")
        if kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                return "a header's text must be plain_text"
            if not 0 < len(text.get("text", "")) <= 150:
                return "a header's text must be 1 to 150 characters"
        elif kind == "section":
            if text is None and not b.get("fields"):
                return "a section needs text or fields"
            if text is not None and (
                text.get("type") not in _TEXT_TYPES or not 0 < len(text.get("text", "")) <= 3000
            ):
                return "a section's text must be 1 to 3000 characters of mrkdwn or plain_text"
        elif kind == "context":
            elements = b.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 10:
                return "a context block needs 1 to 10 elements"
        elif kind == "actions":
            elements = b.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                return "an actions block needs 1 to 25 elements"
            for e in elements:
                if e.get("type") == "button" and len(e.get("text", {}).get("text", "")) > 75:
                    return "a button's text is at most 75 characters"
        elif kind not in {"divider", "image", "rich_text", "input", "file", "video"}:
            return f"unknown block type {kind!r}"
    return ""


@dataclass
class FakeSlack(Served):
    webhooks: set[str] = field(default_factory=lambda: {"T000/B000/hook1"})
    archived: set[str] = field(default_factory=set)
    bot_tokens: set[str] = field(default_factory=lambda: {"xoxb-test-token"})
    channels: set[str] = field(default_factory=lambda: {"C0LILY"})
    per_second: float = 1.0
    received: list[dict[str, Any]] = field(default_factory=list)
    # every answer, in order: (status, time.monotonic() when answered)
    answered: list[tuple[int, float]] = field(default_factory=list)
    _down_until: float = 0.0
    _down_status: int = 503
    _throttled: list[float] = field(default_factory=list)
    _last: dict[str, float] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/services/{team}/{bot}/{token}", self._webhook, methods=["POST"]),
                Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
            ]
        )

    def url(self, hook: str = "T000/B000/hook1") -> str:
        return f"{self.base}/services/{hook}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def outage(self, seconds: float, status: int = 503) -> None:
        self._down_until = time.monotonic() + seconds
        self._down_status = status

    def throttle(self, times: int = 1, retry_after: float = 1.0) -> None:
        self._throttled.extend([retry_after] * times)

    def _refusal(self, key: str) -> Response | None:
        """An outage's 5xx, or a 429 (asked for, or past the rate), if due."""
        now = time.monotonic()
        if now < self._down_until:
            return PlainTextResponse("rollup_error", status_code=self._down_status)
        if self._throttled:
            wait = self._throttled.pop(0)
            return PlainTextResponse(
                "rate_limited", status_code=429, headers={"Retry-After": str(int(wait))}
            )
        last = self._last.get(key)
        if last is not None and now - last < 1.0 / self.per_second * 0.9:
            return PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"})
        self._last[key] = now
        return None

    def _answer(self, response: Response) -> Response:
        self.answered.append((response.status_code, time.monotonic()))
        return response

    async def _webhook(self, request: Request) -> Response:
        hook = "/".join(request.path_params[k] for k in ("team", "bot", "token"))
        if hook not in self.webhooks:
            return self._answer(PlainTextResponse("no_service", status_code=404))
        if hook in self.archived:
            return self._answer(PlainTextResponse("channel_is_archived", status_code=410))
        if (refused := self._refusal(hook)) is not None:
            return self._answer(refused)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._answer(PlainTextResponse("invalid_payload", status_code=400))
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return self._answer(PlainTextResponse("no_text", status_code=400))
        if "blocks" in body and block_problem(body["blocks"]):
            return self._answer(PlainTextResponse("invalid_blocks", status_code=400))
        self.received.append({"via": hook, "at": time.time(), **body})
        return self._answer(PlainTextResponse("ok", media_type="text/html"))

    async def _post_message(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._answer(JSONResponse({"ok": False, "error": "not_authed"}))
        if auth.removeprefix("Bearer ") not in self.bot_tokens:
            return self._answer(JSONResponse({"ok": False, "error": "invalid_auth"}))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._answer(JSONResponse({"ok": False, "error": "invalid_json"}))
        channel = body.get("channel", "")
        if channel not in self.channels:
            return self._answer(JSONResponse({"ok": False, "error": "channel_not_found"}))
        if (refused := self._refusal(channel)) is not None:
            if refused.status_code == 429:
                return self._answer(
                    JSONResponse(
                        {"ok": False, "error": "ratelimited"},
                        status_code=429,
                        headers=dict(refused.headers),
                    )
                )
            return self._answer(refused)
        if not (body.get("text") or body.get("blocks")):
            return self._answer(JSONResponse({"ok": False, "error": "no_text"}))
        if "blocks" in body and block_problem(body["blocks"]):
            return self._answer(JSONResponse({"ok": False, "error": "invalid_blocks"}))
        ts = f"{time.time():.6f}"
        self.received.append({"via": channel, "at": time.time(), "ts": ts, **body})
        return self._answer(JSONResponse({"ok": True, "channel": channel, "ts": ts}))
