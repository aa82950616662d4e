"""/metrics on the gateway's port, read as Prometheus reads it (prometheus_client's own
parser): calls by method and code with their latency, assets by outcome, propagation jobs,
data-quality issues, and the lag of every durable consumer read from NATS at the scrape."""

from __future__ import annotations

import grpc
import httpx
import pytest
from lily.v1 import common_pb2 as C
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import COLUMN, asset, edges, eventually, ingest_ids, tag

RPC = "lily_rpc_requests_total"


async def _scrape(gateway: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample, by name, then by its labels."""
    async with httpx.AsyncClient(base_url=gateway) as client:
        answer = await client.get("/metrics")  # (no credential: Prometheus brings none)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def _at(found, name: str, **labels: str) -> float:
    return found.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_metrics_count_calls_assets_and_jobs_and_read_the_consumers_lag(
    gateway, channel, stub, md
):
    before = await _scrape(gateway)
    ingest = "/lily.v1.MetadataService/IngestMetadata"
    get = "/lily.v1.MetadataService/GetMetadata"
    made = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset("pg://m/db/s/t"),
                asset("pg://m/db/s/t/c", COLUMN, parent_qualified_name="pg://m/db/s/t"),
                C.AssetInput(qualified_name="", asset_type=C.ASSET_TYPE_TABLE),  # refused
            ]
        ),
        metadata=md,
    )
    assert [r.outcome for r in made.results] == [
        O.INGEST_OUTCOME_CREATED,
        O.INGEST_OUTCOME_ACCEPTED,
        O.INGEST_OUTCOME_REJECTED,
    ]
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetMetadata(O.GetMetadataRequest(asset_id="0" * 32), metadata=md)
    lineage = lineage_grpc.LineageServiceStub(channel)
    ids = await ingest_ids(stub, md, "pg://m/up", "pg://m/down")
    await edges(lineage, md, ("pg://m/up", "pg://m/down"))
    await tag(stub, md, ids["pg://m/up"], "PII")  # a propagation job

    async def counted():
        after = await _scrape(gateway)

        def grew(name: str, by: float = 1, **labels: str) -> None:
            was, now = _at(before, name, **labels), _at(after, name, **labels)
            assert now - was >= by, (name, labels, was, now)

        grew(RPC, method=ingest, code="OK", by=2)
        grew(RPC, method=get, code="NOT_FOUND")
        grew("lily_rpc_duration_seconds_count", method=ingest, code="OK", by=2)
        grew("lily_rpc_duration_seconds_bucket", method=get, code="NOT_FOUND", le="+Inf")
        grew("lily_assets_ingested_total", outcome="CREATED", consistency="STRONG", by=3)
        grew("lily_assets_ingested_total", outcome="ACCEPTED", consistency="EVENTUAL")
        grew("lily_assets_ingested_total", outcome="REJECTED", consistency="")
        grew("lily_assets_ingested_total", outcome="CREATED", consistency="EVENTUAL")
        grew("lily_propagation_job_duration_seconds_count", state="succeeded")
        return after

    after = await eventually(counted, timeout=15)
    # read from NATS at the scrape: every durable consumer of the streams, and the dead letters
    pending = after["lily_jetstream_consumer_pending"]
    for consumer in ("propagation", "quality"):
        assert (("consumer", consumer), ("stream", "LILY_CHANGES")) in pending
    lag = after["lily_jetstream_consumer_ack_pending"]
    assert (("consumer", "ingest-worker"), ("stream", "LILY_INGEST")) in lag
    assert (("stream", "LILY_DEAD"),) in after["lily_dead_letters"]


def test_the_grafana_dashboard_reads_only_metrics_lily_has():
    """Every metric the dashboard (scripts/grafana/lily-dashboard.json) queries is one Lily
    defines: a renamed metric breaks this, not a panel in production."""
    import json
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    import adapters.metrics  # noqa: F401 (its metrics, registered on import)
    import core.metrics  # noqa: F401

    dashboard = json.loads(
        (Path(__file__).parents[2] / "scripts" / "grafana" / "lily-dashboard.json").read_text()
    )
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\blily_[a-z_]+", target["expr"])
    }
    defined = {s.name for family in REGISTRY.collect() for s in family.samples} | {
        f"{family.name}{suffix}"
        for family in REGISTRY.collect()
        if family.name.startswith("lily_")
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    assert len(queried) >= 10
    assert queried <= defined, sorted(queried - defined)
