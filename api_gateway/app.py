"""The REST/JSON gateway: one ASGI app that serves every annotated RPC through the core's gRPC
port, as any outside client would.

There are no per-route handlers: each request is matched against the routes read from the
protos (api_gateway.routes), turned into the RPC's request message (api_gateway.transcode),
sent with the caller's headers as gRPC metadata, and the reply (or the google.rpc.Status of a
failure, with the standard HTTP status) comes back as JSON. Server-streaming RPCs are served as
Server-Sent Events. /openapi.json describes all of it, from the same descriptors."""

from __future__ import annotations

import contextlib
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry import propagate, trace
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway import openapi
from api_gateway.routes import Route, routes
from api_gateway.transcode import BadRequest, build_request, http_status, render, status_of

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("lily.gateway")

_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway calls the core."""

    target: str  # the core's gRPC address, host:port
    timeout: float = 30.0  # deadline of a call whose client sent no Grpc-Timeout
    max_timeout: float = 300.0
    max_body_bytes: int = 4 * 1024 * 1024  # the core's gRPC message limit


def create_app(
    settings: GatewaySettings,
    route_list: Sequence[Route] | None = None,
    mounts: Mapping[str, ASGIApp] | None = None,
) -> ASGIApp:
    """The gateway as an ASGI app: /openapi.json, every route of the protos, and the apps of
    `mounts`, each serving its prefix and the paths under it (the inbound webhooks'
    receivers; /metrics, in `lily up`)."""
    gateway = _Gateway(settings, list(route_list if route_list is not None else routes()))
    return _App(gateway, dict(mounts or {}))


class _App:
    def __init__(self, gateway: _Gateway, mounts: dict[str, ASGIApp]) -> None:
        self.gateway = gateway
        self._openapi = orjson.dumps(openapi.document(gateway.routes))
        self._mounts = [(prefix.rstrip("/"), app) for prefix, app in mounts.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.gateway.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        for prefix, app in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                await app(scope, receive, send)
                return
        request = Request(scope, receive)
        if request.url.path == "/openapi.json" and request.method == "GET":
            response = Response(self._openapi, media_type="application/json")
        else:
            response = await self.gateway.handle(request)
        await response(scope, receive, send)


class _Gateway:
    def __init__(self, settings: GatewaySettings, route_list: list[Route]) -> None:
        self.settings = settings
        self.routes = route_list
        self._channel = grpc.aio.insecure_channel(
            settings.target,
            options=[
                ("grpc.max_send_message_length", settings.max_body_bytes),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._calls: dict[str, Callable[..., Any]] = {}

    async def close(self) -> None:
        await self._channel.close()

    def _callable(self, route: Route) -> Callable[..., Any]:
        found = self._calls.get(route.grpc_path)
        if found is None:
            kind = (
                self._channel.unary_stream if route.server_streaming else self._channel.unary_unary
            )
            found = kind(
                route.grpc_path,
                request_serializer=_serialize,
                response_deserializer=route.response_class.FromString,
            )
            self._calls[route.grpc_path] = found
        return found

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        allowed: list[str] = []
        for route in self.routes:
            variables = route.match(path)
            if variables is None:
                continue
            if route.verb != request.method:
                allowed.append(route.verb)
                continue
            try:
                message = build_request(
                    route, variables, request.query_params.multi_items(), await _body(request, self)
                )
                metadata, timeout = self._metadata(request, route)
            except BadRequest as exc:
                return _error(exc.status())
            except _Refusal as refusal:
                return refusal.response
            with _traced(request, route) as trace_headers:
                md = [*metadata, *trace_headers.items()]
                if route.server_streaming:
                    return await self._stream(route, message, md, timeout)
                return await self._unary(route, message, md, timeout)
        if allowed:
            return _error(
                _status(code_pb2.UNIMPLEMENTED, f"{request.method} is not allowed on {path}"),
                405,
                {"Allow": ", ".join(sorted(set(allowed)))},
            )
        return _error(_status(code_pb2.NOT_FOUND, f"no route for {request.method} {path}"))

    def _metadata(
        self, request: Request, route: Route
    ) -> tuple[list[tuple[str, str]], float | None]:
        metadata: list[tuple[str, str]] = []
        for key, value in request.headers.items():
            if key == "authorization" or key.startswith("x-lily-") or key == "x-request-id":
                metadata.append((key, value))
            elif key.startswith("grpc-metadata-") and len(key) > 14:
                metadata.append((key[14:], value))
        timeout: float | None = None if route.server_streaming else self.settings.timeout
        header = request.headers.get("grpc-timeout")
        if header is not None:
            found = _TIMEOUT.match(header)
            if found is None:
                raise BadRequest("Grpc-Timeout", "must be an integer and a unit (H, M, S, m, u, n)")
            timeout = min(
                int(found.group(1)) * _TIMEOUT_UNITS[found.group(2)], self.settings.max_timeout
            )
        return metadata, timeout

    async def _unary(
        self, route: Route, message: Message, metadata: list[tuple[str, str]], timeout: float | None
    ) -> Response:
        call = self._callable(route)(message, metadata=metadata, timeout=timeout)
        try:
            reply = await call
        except grpc.aio.AioRpcError as exc:
            return _failed(exc)
        headers = _headers(await call.initial_metadata(), await call.trailing_metadata())
        body: Any = render(reply)
        if route.response_body:
            body = body.get(_json_name(reply, route.response_body))
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)

    async def _stream(
        self, route: Route, message: Message, metadata: list[tuple[str, str]], timeout: float | None
    ) -> Response:
        call = self._callable(route)(message, metadata=metadata, timeout=timeout)
        try:
            initial = await call.initial_metadata()
            if call.done() and await call.code() != grpc.StatusCode.OK:
                await call.read()  # raises the call's error
        except grpc.aio.AioRpcError as exc:
            call.cancel()
            return _failed(exc)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for reply in call:
                    yield b"data: " + orjson.dumps(render(reply)) + b"\n\n"
            except grpc.aio.AioRpcError as exc:
                yield b"event: error\ndata: " + orjson.dumps(render(status_of(exc))) + b"\n\n"
            finally:
                call.cancel()  # the client left (or the stream ended): release the gRPC stream

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **_headers(initial, None)},
        )


FORM = "application/x-www-form-urlencoded"


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _body(request: Request, gateway: _Gateway) -> Any:
    """The request's JSON body (None when empty), within the size limit."""
    if request.method in ("GET", "DELETE"):
        return None
    limit = gateway.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refusal(_too_large(limit))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refusal(_too_large(limit))
            chunks.append(chunk)
    except ClientDisconnect:
        raise _Refusal(Response(status_code=499)) from None
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    form = request.headers.get("content-type", "").startswith(FORM)
    if form and not raw.lstrip().startswith((b"{", b"[")):
        return _form(raw)
    # Any other body is read as JSON, as grpc-gateway does (curl -d sends a form type).
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("", f"the body is not valid JSON: {exc}") from None


def _form(raw: bytes) -> dict[str, Any]:
    """An HTML-form body (what OAuth2 token requests are) as the JSON object of its fields: a
    field given more than once is a list."""
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("", f"the body is not a valid form: {exc}") from None
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if key in fields:
            before = fields[key]
            fields[key] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            fields[key] = value
    return fields


def _too_large(limit: int) -> Response:
    return _error(
        _status(code_pb2.RESOURCE_EXHAUSTED, f"the body is larger than {limit} bytes"), 413
    )


def _status(code: int, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code, message=message)


def _error(
    status: status_pb2.Status, http: int | None = None, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(render(status)),
        status_code=http or http_status(status.code),
        media_type="application/json",
        headers=headers,
    )


def _headers(initial: Any, trailing: Any) -> dict[str, str]:
    """gRPC metadata as response headers, the way grpc-gateway names them."""
    out: dict[str, str] = {}
    for prefix, metadata in (("Grpc-Metadata-", initial), ("Grpc-Trailer-", trailing)):
        for key, value in metadata or ():
            if key.endswith("-bin") or not isinstance(value, str):
                continue
            out[prefix + key] = value
            if key == "x-request-id":
                out["X-Request-Id"] = value
    return out


def _failed(error: grpc.aio.AioRpcError) -> Response:
    return _error(
        status_of(error), headers=_headers(error.initial_metadata(), error.trailing_metadata())
    )


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _json_name(message: Message, field: str) -> str:
    return message.DESCRIPTOR.fields_by_name[field].json_name


@contextlib.contextmanager
def _traced(request: Request, route: Route) -> Iterator[dict[str, str]]:
    """A span for the call, continuing the caller's trace (W3C traceparent): the headers
    that carry it on to the core."""
    parent = propagate.extract(dict(request.headers))
    name = f"{request.method} {route.template}"
    with _tracer.start_as_current_span(
        name, context=parent, attributes={"http.route": route.template}
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier
