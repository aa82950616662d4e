"""Kill the data-quality evaluator mid-run, twice: once between a firing and its issue (the
testing hook), once (SIGKILL) half way through a scheduled pass over thousands of assets.
The schedule resumes when the dead instance's lease lapses, and in the end each asset has
exactly one issue, each firing is synced, and nothing was raised twice."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import grpc
import pytest
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import quality_pb2 as Q
from lily.v1 import quality_pb2_grpc as quality_grpc

from core.stack import EmbeddedStack, free_port
from tests.e2e.test_lily_up import _admin, _lily_up, _stop
from tests.helpers import asset, eventually, new_tenant

TENANT = "dq-killed"
ASSETS = 3_000


async def _issues(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT asset_id, external_id, status FROM issues WHERE tenant_id = $1"
        " AND source = 'lily_dq'",
        TENANT,
    )


async def _firings(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT asset_id, count, open, synced FROM quality_firings WHERE tenant_id = $1", TENANT
    )


@pytest.mark.slow
async def test_a_pass_killed_mid_run_raises_exactly_one_issue_per_asset(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")  # its own backends: no other instance may help
    dsn, url = await stack.start()
    env = {"LILY_POSTGRES_DSN": dsn, "LILY_NATS_URL": url, "LILY_WORKER_PROCESSES": "0"}
    port = free_port()
    conn = await asyncpg.connect(dsn)
    proc = await _lily_up(tmp_path, port, **env, LILY_TEST_EXIT_AFTER_FIRING="1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            md = await new_tenant(ch, _admin(tmp_path), TENANT)
            stub = metadata_grpc.MetadataServiceStub(ch)
            for n in range(0, ASSETS, 1000):
                batch = [asset(f"pg://orphans/t{i:05}") for i in range(n, n + 1000)]
                await stub.IngestMetadata(O.IngestMetadataRequest(assets=batch), metadata=md)
            await asyncio.sleep(1.5)  # older than the rule's "1 second unused"
            await quality_grpc.DataQualityServiceStub(ch).CreateRule(
                Q.CreateRuleRequest(
                    rule=Q.Rule(
                        type=Q.RULE_TYPE_ORPHANED,
                        qualified_name_prefix="pg://orphans/",
                        threshold=1 / 86400,
                    )
                ),
                metadata=md,
            )
        # 1. the schedule's pass fires on the first asset and dies before raising its issue
        async with asyncio.timeout(30):
            assert await proc.wait() == 70
        [firing] = await _firings(conn)
        assert (firing["count"], firing["open"], firing["synced"]) == (1, True, False)
        assert await _issues(conn) == []

        # 2. another instance takes the pass up when the lease lapses; killed half way
        proc = await _lily_up(tmp_path, port, **env)

        async def half_way():
            found = len(await _issues(conn))
            assert ASSETS // 10 < found < ASSETS // 2, found
            return True

        await eventually(half_way, timeout=60, interval=0.01)
        proc.kill()  # SIGKILL: no clean shutdown, the lease is left to lapse
        await proc.wait()
        raised = len(await _issues(conn))
        assert raised < ASSETS  # it really died half way

        # 3. a third finishes it
        proc = await _lily_up(tmp_path, port, **env)

        async def finished():
            firings = await _firings(conn)
            assert len(firings) == ASSETS and all(f["synced"] for f in firings)
            return True

        await eventually(finished, timeout=90, interval=0.5)
        issues = await _issues(conn)
        assert len(issues) == ASSETS  # one per asset: none twice, none missing
        assert {i["asset_id"] for i in issues} == {f["asset_id"] for f in await _firings(conn)}
        assert {i["external_id"].rsplit("/", 1)[1] for i in issues} == {"1"}
        assert {(f["count"], f["open"]) for f in await _firings(conn)} == {(1, True)}
    finally:
        with contextlib.suppress(Exception):
            await _stop(proc)
        await conn.close()
        await stack.stop()
