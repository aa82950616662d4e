"""The adapters' Prometheus metrics. They count in the process the adapter runtime runs in
(`lily up`'s server); Lily's /metrics serves every metric of the process, or of all of
`lily up`'s processes in multiprocess mode (core/metrics.py), these among them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "lily_notification_deliveries",
    "Notification deliveries, by destination type and outcome (sent, retrying, dead, ...).",
    ["destination", "outcome"],
)
ENFORCEMENT_SECONDS = Histogram(
    "lily_enforcement_duration_seconds",
    "Time an enforcement target took over one delivery of changes (or a reconciliation): "
    "reading the engine, its statements, and filing the receipts.",
    ["target"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
ENFORCEMENTS = Counter(
    "lily_enforcements",
    "Assets an enforcement target enforced, by outcome (APPLIED, FAILED, DRIFTED).",
    ["target", "outcome"],
)
