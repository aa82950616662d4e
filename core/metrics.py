"""Lily's Prometheus metrics, one place for all of them; served as text at /metrics on the
REST gateway's port (`asgi`, mounted there by `lily up`).

`lily up` runs several processes (the server, with the adapters and the gateway, and its
ingest worker processes). It sets PROMETHEUS_MULTIPROC_DIR to <data dir>/metrics (emptied at
each start) before any of them imports this module, so every process writes its counts to
files there and /metrics sums them (prometheus_client's multiprocess mode). Without it (one
process: tests, a server embedded elsewhere) the counts are this process's own.

Gauges that only the server sets (JetStream consumer lag, dead-letter depth) are read from
NATS when /metrics is scraped, by the refreshers the server registers (`on_scrape`). The
adapters count enforcement and notification deliveries in metrics of their own
(adapters/metrics.py), served here with the rest."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

log = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

RPCS = Counter(
    "lily_rpc_requests", "gRPC calls answered, by method and status code.", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "lily_rpc_duration_seconds",
    "Time to answer a gRPC call (a stream: until it ends), by method and status code.",
    ["method", "code"],
    buckets=_FAST,
)
ASSETS = Counter(
    "lily_assets_ingested",
    "Assets an ingest took in, by outcome (CREATED, UPDATED, UNCHANGED, STALE, ACCEPTED "
    "(queued), REJECTED) and consistency class; the ingest workers count what they write of "
    "the queued ones.",
    ["outcome", "consistency"],
)
CONSUMER_PENDING = Gauge(
    "lily_jetstream_consumer_pending",
    "Messages of a durable JetStream consumer's stream not delivered to it yet.",
    ["stream", "consumer"],
    multiprocess_mode="mostrecent",
)
CONSUMER_ACK_PENDING = Gauge(
    "lily_jetstream_consumer_ack_pending",
    "Messages delivered to a durable JetStream consumer and not acknowledged yet.",
    ["stream", "consumer"],
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS = Gauge(
    "lily_dead_letters",
    "Work items in a dead-letter stream (can never succeed as they are; listed and "
    "replayed through the API).",
    ["stream"],
    multiprocess_mode="mostrecent",
)
PROPAGATION_SECONDS = Histogram(
    "lily_propagation_job_duration_seconds",
    "Time a propagation job took, from its start to its end, by how it ended.",
    ["state"],
    buckets=_SLOW,
)
STORE_ERRORS = Counter(
    "lily_store_errors",
    "Times a store or the bus could not be reached, by who found out.",
    ["component"],
)
QUALITY_ISSUES = Counter(
    "lily_quality_issues",
    "Data-quality issues the rules raised and resolved, by rule type.",
    ["rule_type", "change"],
)

Refresher = Callable[[], Awaitable[None]]
_refreshers: list[Refresher] = []
REFRESH_TIMEOUT = 2.0


def on_scrape(refresh: Refresher) -> Callable[[], None]:
    """Has `refresh` run before each scrape (it sets gauges read from elsewhere); returns
    what takes it off again."""
    _refreshers.append(refresh)
    return lambda: _refreshers.remove(refresh)


async def scrape() -> tuple[bytes, str]:
    """The text /metrics answers, and its content type."""
    if _refreshers:
        done = await asyncio.wait(
            [asyncio.ensure_future(r()) for r in list(_refreshers)], timeout=REFRESH_TIMEOUT
        )
        for task in done[0]:
            if task.exception() is not None:
                log.warning("metrics: a refresher failed: %s", task.exception())
        for task in done[1]:
            task.cancel()
    return await asyncio.to_thread(_text), CONTENT_TYPE_LATEST


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/metrics as an ASGI app (the gateway serves it beside its own routes)."""
    if scope.get("method") == "GET":
        status, (body, content_type) = 200, await scrape()
    else:
        status, body, content_type = 405, b"GET only\n", "text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _text() -> bytes:
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
