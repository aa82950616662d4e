"""DEDICATED tenants, on both profiles: their metadata, lineage and events live in a cell of
their own (Postgres schema, or Cassandra keyspace and JanusGraph graph; JetStream streams),
never in the shared one; the ingest queue, propagation and WatchChanges work there; a second
instance serves them at once; a failed provisioning keeps nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import nats
import pytest
import pytest_asyncio
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as P
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.cells import cell_name
from core.events.nats import CHANGES_STREAM
from core.server import Lily, start
from core.settings import Settings
from tests.helpers import COLUMN, Metadata, ago, asset, bearer, eventually, new_tenant

DEDICATED = P.TENANT_ISOLATION_DEDICATED


@dataclass
class Served:
    """A server under test, with a DEDICATED tenant made on it (once per module)."""

    profile: str
    lily: Lily
    channel: grpc.aio.Channel
    nats_url: str
    admin: Metadata
    tenant: str
    md: Metadata


@pytest.fixture(scope="module", params=["local", "distributed"])
def server(request: pytest.FixtureRequest) -> tuple[str, Lily, grpc.aio.Channel, str]:
    """Each test on both profiles: the profile, server, its channel and its NATS URL."""
    if request.param == "local":
        lily = request.getfixturevalue("lily")
        channel, url = request.getfixturevalue("channel"), request.getfixturevalue("stack")[1]
    else:
        lily, url = request.getfixturevalue("dist_lily")
        channel = request.getfixturevalue("dist_channel")
    return request.param, lily, channel, url


@pytest_asyncio.fixture(scope="module")
async def served(server: tuple[str, Lily, grpc.aio.Channel, str]) -> Served:
    profile, lily, channel, url = server
    assert lily.bootstrap_key
    admin = bearer(lily.bootstrap_key)
    tenant = "ded-" + uuid.uuid4().hex[:10]
    md = await new_tenant(channel, admin, tenant, DEDICATED)
    return Served(profile, lily, channel, url, admin, tenant, md)


def _rel(up: str, down: str) -> L.RelationshipInput:
    return L.RelationshipInput(
        upstream=L.AssetRef(qualified_name=up),
        downstream=L.AssetRef(qualified_name=down),
        source_event_time=ago(60),
    )


async def test_a_dedicated_tenant_is_ready_and_says_so(served: Served):
    got = await policy_grpc.PolicyServiceStub(served.channel).GetTenant(
        P.GetTenantRequest(tenant_id=served.tenant), metadata=served.md
    )
    assert got.tenant.isolation == DEDICATED
    assert got.tenant.state == P.TENANT_STATE_READY
    assert served.tenant in served.lily.cells.dedicated()


async def test_its_metadata_lineage_and_events_live_in_its_own_cell(
    served: Served, stack: tuple[str, str]
):
    stub = metadata_grpc.MetadataServiceStub(served.channel)
    lineage = lineage_grpc.LineageServiceStub(served.channel)
    md, tenant, cell = served.md, served.tenant, cell_name(served.tenant)
    prefix = f"db/{uuid.uuid4().hex[:6]}"
    watch = stub.WatchChanges(O.WatchChangesRequest(tags=["PII"]), metadata=md, timeout=60)
    await watch.initial_metadata()  # subscribed
    up, down = f"{prefix}/orders", f"{prefix}/orders_daily"
    ids = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset(up),
                asset(down),
                asset(f"{up}/email", COLUMN, parent_qualified_name=up),  # eventual: the queue
            ]
        ),
        metadata=md,
    )
    up_id, down_id, col_id = (r.asset_id for r in ids.results)
    await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(relationships=[_rel(up, down)]), metadata=md
    )
    await stub.UpdateTags(
        O.UpdateTagsRequest(asset_id=up_id, add=[common_pb.TagAssignment(name="PII")]),
        metadata=md,
    )

    # the column arrives through the cell's ingest queue, PII through its propagation worker
    async def settled() -> bool:
        col = await stub.GetMetadata(O.GetMetadataRequest(asset_id=col_id), metadata=md)
        got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=down_id), metadata=md)
        return bool(col.asset.name) and "PII" in {t.name for t in got.asset.tags}

    await eventually(settled, timeout=30)
    walked = await lineage.GetLineage(L.GetLineageRequest(asset_id=up_id), metadata=md)
    assert {n.asset_id for n in walked.nodes} >= {down_id}
    first = await asyncio.wait_for(watch.read(), 10)
    assert first.event.tenant_id == tenant and first.event.asset_id == up_id
    watch.cancel()

    # Stored in the cell, not in the shared stores
    shared = served.lily.cells.shared
    own = served.lily.cells.dedicated()[tenant]
    assert await own.store.get(tenant, up_id) is not None
    assert await shared.store.get(tenant, up_id) is None
    assert await shared.store.get(tenant, col_id) is None
    assert await own.graph.edges_at(tenant, [up_id], True)
    assert not await shared.graph.edges_at(tenant, [up_id], True)
    if served.profile == "local":
        conn = await asyncpg.connect(stack[0])  # the local server's Postgres
        try:
            where = "WHERE tenant_id = $1"
            assert await conn.fetchval(f"SELECT count(*) FROM {cell}.assets {where}", tenant) == 3
            assert await conn.fetchval(f"SELECT count(*) FROM public.assets {where}", tenant) == 0
            assert await conn.fetchval(f"SELECT count(*) FROM public.audit {where}", tenant) == 0
            assert await conn.fetchval(f"SELECT count(*) FROM {cell}.lineage_edges {where}", tenant)
        finally:
            await conn.close()

    # Its events on its own streams, none on the shared one
    nc = await nats.connect(served.nats_url)
    try:
        js = nc.jetstream()
        mine = await js.stream_info(f"{CHANGES_STREAM}_{cell}", subjects_filter=">")
        assert any(s.startswith(f"{cell}.lily.{tenant}.asset.") for s in mine.state.subjects or {})
        theirs = await js.stream_info(CHANGES_STREAM, subjects_filter=f"lily.{tenant}.>")
        assert not theirs.state.subjects
    finally:
        await nc.close()


async def test_it_and_a_shared_tenant_never_see_each_other(served: Served, tenant: str) -> None:
    stub = metadata_grpc.MetadataServiceStub(served.channel)
    shared_md = await new_tenant(served.channel, served.admin, tenant)
    name = f"same/{uuid.uuid4().hex[:6]}/t"
    ids = {}
    for who, md in (("dedicated", served.md), ("shared", shared_md)):
        res = await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(name, description=who)]), metadata=md
        )
        ids[who] = res.results[0].asset_id
    for who, md, other in (
        ("dedicated", served.md, "shared"),
        ("shared", shared_md, "dedicated"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetMetadata(O.GetMetadataRequest(asset_id=ids[other]), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        got = await stub.LookupMetadata(O.LookupMetadataRequest(qualified_name=name), metadata=md)
        assert got.asset.description == who
        found = await stub.SearchMetadata(
            O.SearchMetadataRequest(qualified_name_prefix="same/"),
            metadata=md,
        )
        assert {a.description for a in found.assets} == {who}


@pytest_asyncio.fixture(scope="module")
async def second(
    stack: tuple[str, str], lily: Lily
) -> AsyncIterator[tuple[Lily, grpc.aio.Channel]]:
    """A second server instance on the session's Postgres and NATS."""
    dsn, url = stack
    settings = Settings(grpc_port=0, shutdown_grace=1.0, worker_processes=0, workers=False)
    server = await start(settings, postgres_dsn=dsn, nats_url=url)
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield server, ch
    await server.stop()


async def test_another_instance_serves_a_new_dedicated_tenant_at_once(
    channel, admin_md, second, tenant
):
    other, other_channel = second
    md = await new_tenant(channel, admin_md, tenant, DEDICATED)
    res = await metadata_grpc.MetadataServiceStub(channel).IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("a/b/c")]), metadata=md
    )
    there = metadata_grpc.MetadataServiceStub(other_channel)

    async def served_there() -> bool:
        got = await there.GetMetadata(
            O.GetMetadataRequest(asset_id=res.results[0].asset_id), metadata=md
        )
        return got.asset.qualified_name == "a/b/c"

    started = asyncio.get_running_loop().time()
    await eventually(served_there, timeout=5)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert tenant in other.cells.dedicated()  # opened on the change feed, not left to chance


async def test_a_failed_provisioning_keeps_nothing_and_may_be_tried_again(
    channel, admin_md, lily, stack, tenant
):
    # A table in the way makes the tenant's schema migration fail half way.
    conn = await asyncpg.connect(stack[0])
    cell = cell_name(tenant)
    await conn.execute(f"CREATE SCHEMA {cell}; CREATE VIEW {cell}.audit AS SELECT 1 AS x")
    policy = policy_grpc.PolicyServiceStub(channel)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await new_tenant(channel, admin_md, tenant, DEDICATED)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "could not be provisioned" in (err.value.details() or "")
        listed = await policy.ListTenants(P.ListTenantsRequest(), metadata=admin_md)
        assert tenant not in {t.tenant_id for t in listed.tenants}
        assert not await conn.fetchval(
            "SELECT count(*) FROM credentials WHERE tenant_id = $1", tenant
        )
        assert tenant not in lily.cells.dedicated()
    finally:
        await conn.execute(f"DROP VIEW {cell}.audit")
        await conn.close()
    md = await new_tenant(channel, admin_md, tenant, DEDICATED)  # the retry finishes the job
    res = await metadata_grpc.MetadataServiceStub(channel).IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("x/y")]), metadata=md
    )
    assert res.results[0].asset_id
