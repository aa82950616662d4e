"""Log lines are JSON for machines, and carry the trace id of the span they were written in
(so a trace's log lines can be found from the trace, and the other way round)."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from core.logs import JsonFormatter


def _line(message: str) -> dict:
    record = logging.LogRecord("lily.test", logging.INFO, __file__, 1, message, None, None)
    return json.loads(JsonFormatter().format(record))


def test_a_log_line_carries_the_trace_id_of_its_span():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        inside = _line("in the span")
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["msg"] == "in the span" and inside["level"] == "info"
    assert "trace_id" not in _line("outside any span")
