"""The door: POST /webhook/<type's route>/<integration id>, served on the REST gateway. The URL
names the integration, so the URL and its secret, never the payload, decide the tenant. A
delivery is verified by its adapter (signature or secret, in constant time), kept durably in
the inbox, and only then answered 200; anything else is refused before it is kept:

  404  no such integration (or of another type, or disabled)    405  not a POST (or a GET
       of a type whose sender checks the URL first: Okta's verification, answered 200)
  400  not what the adapter takes     401/403  the API key or signature does not match
  413  a body over the limit          503  the inbox or the core cannot be reached (retry)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from adapters.runtime.inbox import Inbox, InboxUnavailable
from adapters.runtime.resolver import CoreUnavailable, Resolved, Resolver
from adapters.spec import AdapterType, Delivery, Refused
from adapters.tracing import span, traceparent_of

log = logging.getLogger(__name__)

PREFIX = "/webhook/"


def _answer(status: int, **body: object) -> Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _refusal(what: str, refused: Refused, integration_id: str) -> Response:
    log.warning(
        "%s refused (%d): %s",
        what,
        refused.status,
        refused,
        extra={"integration_id": integration_id},
    )
    return _answer(refused.status, error=str(refused))


class TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Webhooks:
    def __init__(
        self,
        types: Mapping[str, AdapterType],
        resolver: Resolver,
        inbox: Inbox,
        *,
        max_body_bytes: int,
    ) -> None:
        self._routes = {t.webhook: t for t in types.values() if t.webhook and t.inbound}
        self._resolver = resolver
        self._inbox = inbox
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._serve(request)
        await response(scope, receive, send)

    async def _accept(
        self,
        kind: AdapterType,
        integration_id: str,
        found: Resolved,
        body: bytes,
        request: Request,
    ) -> str:
        """The delivery's id, as its adapter accepts it (Refused if it does not). A refused
        signature or key is checked once more against the secrets the core has now (one just
        rotated), asking the core at most once a second, so bad ones cannot make it busy."""
        assert kind.inbound is not None
        try:
            return kind.inbound.accept(body, request.headers, found.webhook_secrets)
        except Refused as refused:
            if refused.status not in (401, 403):
                raise
            again = await self._resolver.get(integration_id, max_age=1.0)
            if again is None or again is found:
                raise
            return kind.inbound.accept(body, request.headers, again.webhook_secrets)

    async def _resolve(self, kind: AdapterType, integration_id: str) -> Resolved | None:
        """The integration a webhook URL names, if it is of `kind` and enabled; raises
        CoreUnavailable."""
        found = await self._resolver.get(integration_id)
        if found is None or found.integration.type != kind.name or found.integration.disabled:
            return None
        return found

    async def _challenge(
        self, kind: AdapterType, integration_id: str, request: Request
    ) -> Response:
        assert kind.challenge is not None
        try:
            found = await self._resolve(kind, integration_id)
        except CoreUnavailable:
            return _answer(503, error="Lily cannot verify requests just now; try again")
        if found is None:
            return _answer(404, error=f"no webhook at {request.url.path[:200]}")
        try:
            answer = kind.challenge.answer(request.headers, found.webhook_secrets)
        except Refused as refused:
            return _refusal("webhook verification", refused, integration_id)
        log.info("webhook verified by its sender", extra={"integration_id": integration_id})
        return Response(orjson.dumps(answer), 200, media_type="application/json")

    async def _serve(self, request: Request) -> Response:
        segment, _, integration_id = request.url.path.removeprefix(PREFIX).partition("/")
        kind = self._routes.get(segment)
        if kind is None or not integration_id or "/" in integration_id:
            return _answer(404, error=f"no webhook at {request.url.path[:200]}")
        if request.method == "GET" and kind.challenge is not None:
            return await self._challenge(kind, integration_id, request)
        if request.method != "POST":
            return _answer(405, error="webhooks are POSTed")
        try:
            body = await _read(request, self._limit)
        except TooLarge:
            return _answer(413, error=f"the body is over {self._limit} bytes")
        except ClientDisconnect:
            return _answer(400, error="the body did not arrive whole")
        try:
            found = await self._resolve(kind, integration_id)
        except CoreUnavailable:
            return _answer(503, error="Lily cannot verify deliveries just now; try again")
        if found is None:
            return _answer(404, error=f"no webhook at {request.url.path[:200]}")
        try:
            delivery_id = await self._accept(kind, integration_id, found, body, request)
        except CoreUnavailable:
            return _answer(503, error="Lily cannot verify deliveries just now; try again")
        except Refused as refused:
            return _refusal("webhook", refused, integration_id)
        with span(
            f"webhook {kind.name}",
            traceparent_of(request.headers),
            integration_id=integration_id,
            delivery_id=delivery_id,
        ) as trace:
            delivery = Delivery(
                integration_id=integration_id,
                tenant_id=found.integration.tenant_id,
                type=kind.name,
                delivery_id=delivery_id,
                body=body,
                received_at=time.time(),
                trace=trace,
            )
            try:
                new = await self._inbox.put(delivery)
            except InboxUnavailable as exc:
                log.error("webhook not kept: %s", exc, extra={"integration_id": integration_id})
                return _answer(503, error="Lily cannot keep deliveries just now; try again")
        return _answer(200, accepted=True, deliveryId=delivery_id, duplicate=not new)
