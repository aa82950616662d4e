"""`lily up --profile distributed` as a user runs it: assets in the dev stack's Cassandra,
lineage in its JanusGraph (Postgres and NATS embedded, as on the local profile)."""

from __future__ import annotations

import asyncio
import os
import uuid

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core import cassandra
from core.stack import free_port
from tests.e2e.test_lily_up import LILY, _admin, _lily_up, _stop
from tests.helpers import asset, bearer, eventually, new_tenant

COLUMN = 5


@pytest.mark.slow
async def test_lily_up_distributed_keeps_assets_in_cassandra(tmp_path, dist_stack):
    keyspace = "lily_e2e" + uuid.uuid4().hex[:6]
    port = free_port()
    proc = await _lily_up(
        tmp_path / "lily",
        port,
        LILY_STORES__TYPE="distributed",
        LILY_STORES__CASSANDRA__HOSTS=dist_stack["cassandra"],
        LILY_STORES__CASSANDRA__KEYSPACE=keyspace,
        LILY_STORES__JANUSGRAPH_URL=dist_stack["janusgraph"],
    )
    tenant = "dist" + keyspace[-6:]  # (the dev stack's graph outlives a keyspace)
    session = await cassandra.connect(dist_stack["cassandra"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            md = await new_tenant(ch, _admin(tmp_path / "lily"), tenant)
            stub = metadata_grpc.MetadataServiceStub(ch)
            table = asset("sf://acct/db/s/orders")
            columns = [asset(f"sf://acct/db/s/orders/c{i}", COLUMN) for i in range(50)]
            reply = await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[table, *columns]), metadata=md, timeout=30
            )
            assert len(reply.results) == 51
            # the table is written before the reply (strong); the columns by the workers
            got = await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=reply.results[0].asset_id), metadata=md
            )
            assert got.asset.qualified_name == "sf://acct/db/s/orders"

            async def all_there() -> bool:
                page = await stub.SearchMetadata(
                    O.SearchMetadataRequest(
                        qualified_name_prefix="sf://acct/db/s/orders/", page_size=100
                    ),
                    metadata=md,
                )
                return len(page.assets) == 50

            await eventually(all_there, timeout=30)

            # lineage lives in JanusGraph; its edge changes are audited in Cassandra
            lineage = lineage_grpc.LineageServiceStub(ch)
            edges = [
                L.RelationshipInput(
                    upstream=L.AssetRef(qualified_name="sf://acct/db/s/orders"),
                    downstream=L.AssetRef(qualified_name=f"sf://acct/db/marts/m{i}"),
                )
                for i in range(3)
            ]
            res = await lineage.IngestRelationships(
                L.IngestRelationshipsRequest(relationships=edges), metadata=md, timeout=30
            )
            assert [r.outcome for r in res.results] == [L.RELATIONSHIP_OUTCOME_CREATED] * 3
            again = await lineage.IngestRelationships(
                L.IngestRelationshipsRequest(relationships=edges), metadata=md, timeout=30
            )
            assert {r.outcome for r in again.results} == {L.RELATIONSHIP_OUTCOME_UNCHANGED}
            walk = await lineage.GetLineage(
                L.GetLineageRequest(asset_id=reply.results[0].asset_id), metadata=md, timeout=30
            )
            assert len(walk.nodes) == 4 and len(walk.relationships) == 3
            assert sum(n.exists for n in walk.nodes) == 1  # the marts have not arrived
            trail = await stub.GetAuditTrail(
                O.GetAuditTrailRequest(asset_id=reply.results[0].asset_id), metadata=md
            )
            assert [e.action for e in trail.entries].count("IngestRelationships") == 3

            # propagation on this profile: tag the table PII, then the marts arrive
            await stub.UpdateTags(
                O.UpdateTagsRequest(
                    asset_id=reply.results[0].asset_id,
                    add=[common_pb.TagAssignment(name="PII")],
                ),
                metadata=md,
            )
            marts = await stub.IngestMetadata(
                O.IngestMetadataRequest(
                    assets=[asset(f"sf://acct/db/marts/m{i}") for i in range(3)]
                ),
                metadata=md,
                timeout=30,
            )

            async def inherited() -> bool:
                for r in marts.results:
                    got = await stub.GetMetadata(
                        O.GetMetadataRequest(asset_id=r.asset_id), metadata=md
                    )
                    tags = [(t.name, t.source, list(t.upstream_asset_ids)) for t in got.asset.tags]
                    assert tags == [
                        ("PII", common_pb.TAG_SOURCE_PROPAGATED, [reply.results[0].asset_id])
                    ]
                return True

            await eventually(inherited, timeout=30)
        rows = await cassandra.execute(
            session,
            f"SELECT qualified_name FROM {keyspace}.assets WHERE tenant_id = %s",
            (tenant,),
        )
        assert len(rows) == 54  # (51 and the 3 marts) in Cassandra, not Postgres
    finally:
        assert await _stop(proc) == 0
        await cassandra.execute(session, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        await cassandra.close(session)


@pytest.mark.slow
@pytest.mark.parametrize("down", ["Cassandra", "JanusGraph"])
async def test_a_distributed_backend_down_at_start_is_named(tmp_path, dist_stack, down):
    dead = free_port()  # nothing listens there
    hosts = f"127.0.0.1:{dead}" if down == "Cassandra" else dist_stack["cassandra"]
    url = f"ws://127.0.0.1:{dead}/gremlin" if down == "JanusGraph" else dist_stack["janusgraph"]
    proc = await asyncio.create_subprocess_exec(
        *LILY,
        "up",
        "--profile",
        "distributed",
        "--cassandra",
        hosts,
        "--janusgraph",
        url,
        "--data-dir",
        str(tmp_path / "lily"),
        "--grpc-port",
        str(free_port()),
        "--http-port",
        "0",
        env={**os.environ, "LILY_STORES__CASSANDRA__KEYSPACE": "lily_down"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    assert proc.returncode == 1
    assert f"lily: {down} at" in out.decode() and "is not reachable" in out.decode()


@pytest.mark.slow
@pytest.mark.timeout(300)  # two Cassandra start-ups
async def test_cassandra_outage_fails_fast_and_loses_no_queued_ingest(tmp_path, dist_stack):
    """Cassandra stops under a stream of column ingests and comes back: meanwhile reads and
    strong writes fail fast with UNAVAILABLE and columns stay queued in JetStream; afterwards
    every column is in Cassandra, once."""
    from core.server import start
    from core.settings import Settings
    from core.stack import EmbeddedStack
    from scripts import devstack

    own = devstack.Cassandra(tmp_path / "cassandra")  # its own: the shared one must stay up
    port = await asyncio.to_thread(own.start)
    stack = EmbeddedStack(tmp_path / "stack")  # its own queue: no other worker may take work
    dsn, url = await stack.start()
    settings = Settings(
        grpc_port=0,
        worker_processes=0,
        shutdown_grace=1.0,
        stores={
            "type": "distributed",
            "cassandra": {"hosts": f"127.0.0.1:{port}", "keyspace": "lily_outage", "timeout": 5.0},
            "janusgraph_url": dist_stack["janusgraph"],
        },
    )
    lily = await start(settings, postgres_dsn=dsn, nats_url=url)
    sent: set[str] = set()
    try:
        async with grpc.aio.insecure_channel(lily.address) as ch:
            assert lily.bootstrap_key
            md = await new_tenant(ch, bearer(lily.bootstrap_key), "outage")
            stub = metadata_grpc.MetadataServiceStub(ch)
            table = await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://out/t")]), metadata=md, timeout=30
            )
            stop_load = asyncio.Event()

            async def load() -> None:
                n = 0
                while not stop_load.is_set():
                    names = [f"pg://out/t/c{n}_{i}" for i in range(20)]
                    await stub.IngestMetadata(
                        O.IngestMetadataRequest(assets=[asset(q, COLUMN) for q in names]),
                        metadata=md,
                        timeout=10,
                    )
                    sent.update(names)
                    n += 1
                    await asyncio.sleep(0.05)

            loader = asyncio.create_task(load())
            await asyncio.sleep(2)
            await asyncio.to_thread(own.stop)
            await asyncio.sleep(1)
            for call, request in (
                (stub.GetMetadata, O.GetMetadataRequest(asset_id=table.results[0].asset_id)),
                (stub.IngestMetadata, O.IngestMetadataRequest(assets=[asset("pg://out/t2")])),
            ):
                started = asyncio.get_running_loop().time()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(request, metadata=md, timeout=20)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert asyncio.get_running_loop().time() - started < 15  # not the deadline
            await asyncio.sleep(3)  # columns keep being accepted meanwhile
            await asyncio.to_thread(own.start, port)
            await asyncio.sleep(2)
            stop_load.set()
            await loader
        assert len(sent) > 200
        session = await cassandra.connect(f"127.0.0.1:{port}")
        try:

            async def written() -> bool:
                names: list[str] = []
                state = None
                while True:
                    page = await cassandra.execute(
                        session,
                        "SELECT qualified_name FROM lily_outage.assets WHERE tenant_id = %s",
                        ("outage",),
                        timeout=30,
                        paging_state=state,
                    )
                    names += [r.qualified_name for r in page]
                    if (state := page.paging_state) is None:
                        break
                assert len(names) == len(set(names))
                return set(names) >= sent | {"pg://out/t"}

            await eventually(written, timeout=90, interval=1.0)
        finally:
            await cassandra.close(session)
    finally:
        await lily.stop()
        await stack.stop()
        await asyncio.to_thread(own.stop)
