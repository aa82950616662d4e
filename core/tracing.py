"""OpenTelemetry: a tracer provider (spans exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
is set) and the gRPC server instrumentation, so an incoming traceparent continues the trace,
the change events carry it on (in their headers), and each worker that takes an event up
continues it (the propagation worker here; the adapter runtime's deliveries, enforcement and
notifications in adapters/runtime)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure() -> None:
    """The process's tracer provider, once: spans go to an OTLP collector when
    OTEL_EXPORTER_OTLP_ENDPOINT names one (OpenTelemetry's own variables say the rest:
    OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, ...); without it they are made (log lines
    carry their trace ids) and dropped."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "lily"}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


tracer = trace.get_tracer("lily")


@contextlib.contextmanager
def continue_trace(
    headers: Mapping[str, str], name: str, **attributes: str
) -> Iterator[dict[str, str]]:
    """A span continuing the trace in `headers` (W3C traceparent), yielding the headers that
    carry this span on (for the events the work emits)."""
    parent = propagate.extract(dict(headers))
    with tracer.start_as_current_span(name, context=parent, attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


def trace_of(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The W3C trace context among a message's headers (to carry on as they are)."""
    return {k: v for k, v in (headers or {}).items() if k in ("traceparent", "tracestate")}


def server_interceptor():  # type: ignore[no-untyped-def]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor()
