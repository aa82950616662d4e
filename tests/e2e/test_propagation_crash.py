"""Kill the server, and with it the propagation worker, in the middle of a propagation; the
restarted one finishes the job with no tag missing, none twice, and one event per asset."""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg
import grpc
import nats
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.events.nats import CHANGES_STREAM, PROPAGATION_CONSUMER
from core.stack import EmbeddedStack, free_port
from tests.e2e.test_lily_up import _admin, _lily_up, _stop
from tests.helpers import asset, eventually, new_tenant

TENANT = "killed"
CHILDREN = 2_000
CHUNK = 10  # small transactions, one at a time: a wide window to kill it in


async def _drained(js, conn) -> bool:
    """Every committed change is published (the outbox is empty) and handled by propagation
    (a call returns before its events are published: an empty consumer alone says nothing)."""
    if await conn.fetchval("SELECT count(*) FROM outbox_batch"):
        return False
    info = await js.consumer_info(CHANGES_STREAM, PROPAGATION_CONSUMER)
    return info.num_pending + info.num_ack_pending == 0


async def _tagged_events(js) -> list[events_pb.ChangeEvent]:
    """Every asset.tagged event the stream holds for the tenant (after de-duplication)."""
    sub = await js.subscribe(f"lily.{TENANT}.asset.tagged", ordered_consumer=True)
    found = []
    with contextlib.suppress(nats.errors.TimeoutError):
        while True:
            found.append(events_pb.ChangeEvent.FromString((await sub.next_msg(timeout=2)).data))
    await sub.unsubscribe()
    return found


@pytest.mark.slow
async def test_a_propagation_killed_half_way_is_finished_exactly_once_after_restart(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")  # its own backends: no other worker may help
    dsn, url = await stack.start()
    env = {
        "LILY_POSTGRES_DSN": dsn,
        "LILY_NATS_URL": url,
        "LILY_WORKER_PROCESSES": "0",
        "LILY_PROPAGATION_CHUNK": str(CHUNK),
        "LILY_PROPAGATION_PARALLEL": "1",
    }
    port = free_port()
    nc = await nats.connect(url)
    js = nc.jetstream()
    conn = await asyncpg.connect(dsn)
    proc = await _lily_up(tmp_path, port, **env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            lineage = lineage_grpc.LineageServiceStub(ch)
            md = await new_tenant(ch, _admin(tmp_path), TENANT)
            names = [f"pg://kill/c{i:04}" for i in range(CHILDREN)]
            root = (
                (
                    await stub.IngestMetadata(
                        O.IngestMetadataRequest(assets=[asset("pg://kill/root")]), metadata=md
                    )
                )
                .results[0]
                .asset_id
            )
            for n in range(0, CHILDREN, 1000):
                batch = [asset(q) for q in names[n : n + 1000]]
                await stub.IngestMetadata(O.IngestMetadataRequest(assets=batch), metadata=md)
                edges = [
                    L.RelationshipInput(
                        upstream=L.AssetRef(asset_id=root),
                        downstream=L.AssetRef(qualified_name=q),
                    )
                    for q in names[n : n + 1000]
                ]
                await lineage.IngestRelationships(
                    L.IngestRelationshipsRequest(relationships=edges), metadata=md
                )
            await eventually(lambda: _drained(js, conn), timeout=60)  # the tag's job does the work

            first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def on_tagged(msg):
                event = events_pb.ChangeEvent.FromString(msg.data)
                if event.asset_id == root and not first.done():
                    first.set_result(event.event_id)

            watch = await nc.subscribe(f"lily.{TENANT}.asset.tagged", cb=on_tagged)
            await stub.UpdateTags(
                O.UpdateTagsRequest(
                    asset_id=root,
                    source=common_pb.TAG_SOURCE_USER,
                    add=[common_pb.TagAssignment(name="PII")],
                ),
                metadata=md,
            )
            job_id = await asyncio.wait_for(first, 20)  # the tag's event id names its job
            await watch.unsubscribe()

            async def half_way():
                try:
                    got = await lineage.GetPropagationJob(
                        L.GetPropagationJobRequest(job_id=job_id), metadata=md
                    )
                except grpc.aio.AioRpcError as exc:  # not started yet
                    raise AssertionError(exc.code()) from exc
                assert 0 < got.job.assets_changed and got.job.assets_done < CHILDREN / 2
                return True

            await eventually(half_way, timeout=30, interval=0.01)
        proc.kill()  # SIGKILL: no clean shutdown, its fetched events stay unacknowledged
        await proc.wait()

        tagged = await conn.fetchval(
            "SELECT count(*) FROM assets WHERE tenant_id = $1 AND 'PII' = ANY(tag_names)"
            " AND asset_id <> $2",
            TENANT,
            root,
        )
        assert 0 < tagged < CHILDREN  # it really died half way

        proc = await _lily_up(tmp_path, port, **env)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            lineage = lineage_grpc.LineageServiceStub(ch)

            async def finished():
                got = await lineage.GetPropagationJob(
                    L.GetPropagationJobRequest(job_id=job_id), metadata=md
                )
                assert got.job.state == L.PROPAGATION_JOB_STATE_SUCCEEDED, got.job
                return got.job

            # (the killed worker's event comes back once its ack wait lapses)
            job = await eventually(finished, timeout=90, interval=0.5)
        assert (job.assets_total, job.assets_done) == (CHILDREN, CHILDREN)
        # (a chunk committed just before the kill is not counted again)
        assert CHILDREN - CHUNK <= job.assets_changed <= CHILDREN

        # every child holds the tag exactly once, from the root
        rows = await conn.fetch(
            "SELECT asset_id, tags FROM assets WHERE tenant_id = $1 AND asset_id <> $2",
            TENANT,
            root,
        )
        assert len(rows) == CHILDREN
        for r in rows:
            pii = [t for t in json.loads(r["tags"]) if t["n"] == "PII"]
            assert [(t["s"], t["u"]) for t in pii] == [(common_pb.TAG_SOURCE_PROPAGATED, [root])]
        # and one event each, caused by the tag
        caused = [e.asset_id for e in await _tagged_events(js) if e.cause_event_id == job_id]
        assert sorted(caused) == sorted(r["asset_id"] for r in rows)
    finally:
        with contextlib.suppress(Exception):
            await _stop(proc)
        await conn.close()
        await nc.close()
        await stack.stop()
