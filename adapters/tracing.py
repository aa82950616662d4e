"""Traces through the adapter runtime: a delivery, a notification and an enforcement continue
the trace of what caused them (an inbound request's traceparent, or a change event's), so one
trace follows a change from Lily's API to the SQL a target ran and the message a destination
was sent. The spans go wherever the process's tracer provider sends them (core/tracing.py in
`lily up`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import propagate, trace

tracer = trace.get_tracer("lily.adapters")


def traceparent_of(headers: Mapping[str, str] | None) -> str:
    return (headers or {}).get("traceparent", "")


@contextlib.contextmanager
def span(name: str, traceparent: str = "", **attributes: str) -> Iterator[str]:
    """A span continuing `traceparent` (a new trace without one); yields its own
    traceparent, for what it hands on."""
    parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
    with tracer.start_as_current_span(name, context=parent, attributes=attributes):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier.get("traceparent", "")
