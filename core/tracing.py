"""OpenTelemetry: a tracer provider (spans exported only when OTEL_EXPORTER_OTLP_ENDPOINT is
set) and the gRPC server instrumentation, so an incoming traceparent continues the trace and
the change events carry it on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

_configured = False


def configure() -> None:
    global _configured
    if _configured:
        return
    provider = TracerProvider()
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            pass
        else:
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


def server_interceptor():  # type: ignore[no-untyped-def]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor()
