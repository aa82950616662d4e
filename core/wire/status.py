"""LilyError -> google.rpc.Status on the wire, for every RPC (an interceptor, so a new RPC
cannot forget it). Anything unexpected becomes INTERNAL with a generic message and the request
id; the full error goes to the log, never to the client."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from core import metrics
from core.domain.errors import InvalidArgument, LilyError, Unavailable
from core.requestctx import current_request_id, new_request_id, request_id_var

log = logging.getLogger(__name__)

DOMAIN = "lily.dev"


def _pack(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def to_status(err: LilyError) -> status_pb2.Status:
    """The google.rpc.Status of an error (of a call, or of one refused item of a batch)."""
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata))
    ]
    if isinstance(err, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in err.violations
                    ]
                )
            )
        )
    if isinstance(err, Unavailable):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(err.retry_after_s * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=getattr(code_pb2, err.code), message=err.message, details=details)


def internal_status() -> status_pb2.Status:
    rid = current_request_id()
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error (request id {rid})")


async def _abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    grpc_status = rpc_status.to_status(status)
    await context.abort(
        grpc_status.code,
        grpc_status.details,
        trailing_metadata=(*grpc_status.trailing_metadata, ("x-request-id", current_request_id())),
    )


Guard = Callable[[str, grpc.aio.ServicerContext], Awaitable[None]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps errors raised by any handler (unary or streaming) to a google.rpc.Status, and
    returns every call's request id in its trailers (x-request-id). `guard(method, context)`
    runs before every handler (policy/ authenticates and authorizes there); what it raises is
    the call's answer."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method, request_id = details.method, _request_id(details)
        for kind, make, wrap in _KINDS:
            inner = getattr(handler, kind)
            if inner:
                return make(
                    wrap(inner, method, request_id, self._guard),
                    handler.request_deserializer,
                    handler.response_serializer,
                )
        return handler


def _returning(
    inner: Callable[..., Any], method: str, request_id: str, guard: Guard
) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id_var.set(request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        started = time.perf_counter()
        try:
            await guard(method, context)
            result = inner(request, context)
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            await _handle(exc, context, method)
        finally:
            _count(method, context, started)

    return call


def _streaming(
    inner: Callable[..., Any], method: str, request_id: str, guard: Guard
) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id_var.set(request_id)
        context.set_trailing_metadata((("x-request-id", request_id),))
        started = time.perf_counter()
        try:
            await guard(method, context)
            async for item in inner(request, context):
                yield item
        except Exception as exc:
            await _handle(exc, context, method)
        finally:
            _count(method, context, started)

    return call


def _count(method: str, context: grpc.aio.ServicerContext, started: float) -> None:
    """The call in lily_rpc_requests_total and lily_rpc_duration_seconds (its code: what it
    was aborted with, else OK; CANCELLED if the caller went away first)."""
    try:
        code = context.code()
    except Exception:  # (not every context can say)
        code = None
    if code is None and context.cancelled():
        name = "CANCELLED"
    elif isinstance(code, grpc.StatusCode):
        name = code.name
    else:
        name = "OK" if code is None else _CODE_NAMES.get(code, str(code))
    if name == "UNAVAILABLE":
        metrics.STORE_ERRORS.labels("rpc").inc()
    metrics.RPCS.labels(method, name).inc()
    metrics.RPC_SECONDS.labels(method, name).observe(time.perf_counter() - started)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _returning),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _returning),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _streaming),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _streaming),
)


def _request_id(details: grpc.HandlerCallDetails) -> str:
    """The caller's x-request-id (bounded), or a new one."""
    for key, value in details.invocation_metadata or ():
        if key == "x-request-id" and isinstance(value, str) and value:
            return value[:64]
    return new_request_id()


async def _handle(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, LilyError):
        if isinstance(exc, Unavailable):
            log.warning("%s: %s", method, exc.message)
        await _abort(context, to_status(exc))
    elif isinstance(exc, grpc.aio.AbortError | grpc.aio.UsageError) or _is_abort(exc):
        raise exc
    else:
        log.error("%s failed", method, exc_info=exc)
        await _abort(context, internal_status())


def _is_abort(exc: Exception) -> bool:
    return type(exc).__name__ == "AbortError"
