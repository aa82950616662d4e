"""/metrics of `lily up` with two ingest worker processes: the columns the worker processes
write are counted once each, summed over the processes (prometheus_client's multiprocess
mode, in <data dir>/metrics), beside the server's own counts."""

from __future__ import annotations

import grpc
import httpx
import pytest
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from prometheus_client.parser import text_string_to_metric_families

from core.stack import EmbeddedStack, free_port
from tests.e2e.test_lily_up import _admin, _gateway_url, _lily_up, _stop
from tests.helpers import COLUMN, asset, eventually

COLUMNS = 2_000


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
async def test_metrics_are_summed_over_lily_ups_processes(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")
    dsn, url = await stack.start()
    env = {"LILY_POSTGRES_DSN": dsn, "LILY_NATS_URL": url, "LILY_WORKER_PROCESSES": "2"}
    lines: list[str] = []
    port = free_port()
    proc = await _lily_up(tmp_path, port, lines, **env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            md = _admin(tmp_path)
            await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://mp/db/s/t")]), metadata=md
            )
            for n in range(0, COLUMNS, 1000):
                columns = [
                    asset(f"pg://mp/db/s/t/c{i}", COLUMN, parent_qualified_name="pg://mp/db/s/t")
                    for i in range(n, n + 1000)
                ]
                await stub.IngestMetadata(O.IngestMetadataRequest(assets=columns), metadata=md)
        async with httpx.AsyncClient(base_url=_gateway_url(lines)) as http:

            async def written() -> dict:
                got = _samples((await http.get("/metrics")).text)
                eventual = (("consistency", "EVENTUAL"), ("outcome", "CREATED"))
                assert got.get(("lily_assets_ingested_total", eventual)) == COLUMNS, got.get(
                    ("lily_assets_ingested_total", eventual)
                )
                return got

            got = await eventually(written, timeout=60, interval=0.5)
        accepted = (("consistency", "EVENTUAL"), ("outcome", "ACCEPTED"))
        assert got[("lily_assets_ingested_total", accepted)] == COLUMNS
        strong = (("consistency", "STRONG"), ("outcome", "CREATED"))
        assert got[("lily_assets_ingested_total", strong)] == 1  # the table
        ingest = (("code", "OK"), ("method", "/lily.v1.MetadataService/IngestMetadata"))
        assert got[("lily_rpc_requests_total", ingest)] == 1 + COLUMNS // 1000
        # the worker processes wrote the columns (files of more than the server's process)
        assert len({p.name.rsplit("_", 1)[-1] for p in (tmp_path / "metrics").iterdir()}) >= 2
    finally:
        await _stop(proc)
        await stack.stop()
