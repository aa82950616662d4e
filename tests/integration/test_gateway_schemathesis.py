"""Schemathesis against the gateway's own /openapi.json: generated requests for every operation,
with its stateless checks (no server error, status codes, content types and response bodies
as documented)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Examples per operation: bounded so the suite stays quick (raise it to hunt).
EXAMPLES = int(os.environ.get("LILY_SCHEMATHESIS_EXAMPLES", "30"))


async def test_schemathesis_finds_no_failure(gateway: str, md):
    async with httpx.AsyncClient(base_url=gateway) as client:
        document = (await client.get("/openapi.json")).json()
    # Loaded here: the modules schemathesis imports as it loads a schema are compiled on
    # this, the main, thread (CPython 3.11 can fail compiling them on another one:
    # "AST constructor recursion depth mismatch").
    schema = schemathesis.openapi.from_dict(document)
    # Requests are made synchronously from a thread while this loop serves them.
    failures, tried = await asyncio.to_thread(_run, schema, gateway, dict(md))
    assert tried >= 13
    assert not failures, "\n\n".join(f"{label}: {error}" for label, error in failures)


def _run(schema: Any, base_url: str, headers: dict[str, str]) -> tuple[list[tuple[str, str]], int]:
    failures: list[tuple[str, str]] = []
    tried = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if "text/event-stream" in str(operation.definition.raw["responses"]["200"]):
            continue  # a stream never ends by itself: SSE has its own tests

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=10)

        tried += 1
        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collected: every operation gets its run
            failures.append((operation.label, str(exc)[:3000]))
    return failures, tried + 1  # (+ the stream, tested elsewhere)
