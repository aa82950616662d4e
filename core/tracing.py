"""OpenTelemetry: a tracer provider (spans exported only when OTEL_EXPORTER_OTLP_ENDPOINT is
set) and the gRPC server instrumentation, so an incoming traceparent continues the trace and
the change events carry it on."""

from __future__ import annotations

import os

from opentelemetry import trace
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


def server_interceptor():  # type: ignore[no-untyped-def]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor()
