"""Hypothesis-generated attempts to reach another tenant's metadata: its asset ids, its
qualified names (every tenant has the same ones), its page tokens, its bulk jobs, lineage edges
pointing into it, writes aimed at it, and WatchChanges filters while it changes, between two
SHARED tenants and between a SHARED and a DEDICATED one in both directions. No answer may carry
the other tenant's data, and nothing of the other tenant may change."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import grpc
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as P

from tests.helpers import COLUMN, TABLE, Metadata, ago, asset, new_tenant

NAMES = [f"x/{i}" for i in range(4)]  # every tenant has assets of these names
GATE = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


@dataclass
class Tenant:
    tenant_id: str
    md: Metadata
    ids: list[str] = field(default_factory=list)
    page_token: str = ""
    job_id: str = ""
    only: str = ""  # a name only this tenant has


async def _fingerprint(stub, lineage, t: Tenant) -> tuple:
    """What a tenant holds: its assets' versions and tags, and its lineage from x/0."""
    found = await stub.SearchMetadata(O.SearchMetadataRequest(page_size=100), metadata=t.md)
    walked = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=t.ids[0], depth=5), metadata=t.md
    )
    return (
        sorted(
            (a.asset_id, a.version, tuple(sorted(x.name for x in a.tags))) for a in found.assets
        ),
        sorted((r.upstream_asset_id, r.downstream_asset_id) for r in walked.relationships),
    )


@pytest_asyncio.fixture(scope="module")
async def tenants(channel, admin_md) -> dict[str, Tenant]:
    stub = metadata_grpc.MetadataServiceStub(channel)
    lineage = lineage_grpc.LineageServiceStub(channel)
    made: dict[str, Tenant] = {}
    for key, isolation in (
        ("s1", P.TENANT_ISOLATION_SHARED),
        ("s2", P.TENANT_ISOLATION_SHARED),
        ("d", P.TENANT_ISOLATION_DEDICATED),
    ):
        tenant_id = f"x{key}-{uuid.uuid4().hex[:8]}"
        t = Tenant(tenant_id, await new_tenant(channel, admin_md, tenant_id, isolation))
        t.only = f"only/{tenant_id}"
        res = await stub.IngestMetadata(
            O.IngestMetadataRequest(
                assets=[
                    asset(
                        n,
                        description=tenant_id,  # whose it is, whatever a leak says
                        tags=[common_pb.TagAssignment(name="PII")] if i == 0 else [],
                    )
                    for i, n in enumerate([*NAMES, t.only])
                ]
            ),
            metadata=t.md,
        )
        t.ids = [r.asset_id for r in res.results]
        await lineage.IngestRelationships(
            L.IngestRelationshipsRequest(
                relationships=[
                    L.RelationshipInput(
                        upstream=L.AssetRef(qualified_name=NAMES[0]),
                        downstream=L.AssetRef(qualified_name=NAMES[1]),
                        source_event_time=ago(60),
                    )
                ]
            ),
            metadata=t.md,
        )
        page = await stub.SearchMetadata(O.SearchMetadataRequest(page_size=1), metadata=t.md)
        t.page_token = page.next_page_token
        t.job_id = (await stub.CreateBulkJob(O.CreateBulkJobRequest(), metadata=t.md)).job.job_id
        made[key] = t
    return made


PAIRS = [("s1", "s2"), ("s1", "d"), ("d", "s1")]  # (attacker, victim)
KINDS = [
    "get",
    "lookup",
    "search",
    "lineage",
    "relate",
    "update_tags",
    "delete",
    "audit",
    "issues",
    "job",
    "name_tenant",
]


def _own(a: common_pb.Asset, attacker: Tenant) -> None:
    assert (a.tenant_id, a.description) == (attacker.tenant_id,) * 2, f"{a} leaked"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_generated_attempts_never_reach_another_tenant(channel, tenants, data):
    stub = metadata_grpc.MetadataServiceStub(channel)
    lineage = lineage_grpc.LineageServiceStub(channel)
    a_key, v_key = data.draw(st.sampled_from(PAIRS), label="attacker, victim")
    attacker, victim = tenants[a_key], tenants[v_key]
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    any_id = st.sampled_from([*victim.ids, *attacker.ids, uuid.uuid4().hex, victim.ids[0].upper()])
    name = st.sampled_from([*NAMES, victim.only, attacker.only, victim.only + "/", "x/"])
    md = attacker.md
    before = await _fingerprint(stub, lineage, victim)
    try:
        if kind == "get":
            got = await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=data.draw(any_id), include_deleted=True),
                metadata=md,
            )
            _own(got.asset, attacker)
        elif kind == "lookup":
            got = await stub.LookupMetadata(
                O.LookupMetadataRequest(qualified_name=data.draw(name), include_deleted=True),
                metadata=md,
            )
            _own(got.asset, attacker)
        elif kind == "search":
            token = data.draw(st.sampled_from([victim.page_token, attacker.page_token, ""]))
            found = await stub.SearchMetadata(
                O.SearchMetadataRequest(
                    qualified_name_prefix=data.draw(st.sampled_from(["", "x/", "only/"])),
                    tag=data.draw(st.sampled_from(["", "PII"])),
                    page_size=data.draw(st.integers(1, 10)),
                    page_token=token,
                    include_deleted=True,
                ),
                metadata=md,
            )
            for a in found.assets:
                _own(a, attacker)
        elif kind == "lineage":
            walked = await lineage.GetLineage(
                L.GetLineageRequest(
                    asset_id=data.draw(any_id),
                    direction=data.draw(
                        st.sampled_from([L.LINEAGE_DIRECTION_UPSTREAM, L.LINEAGE_DIRECTION_BOTH])
                    ),
                    depth=data.draw(st.integers(1, 5)),
                    include_deleted=True,
                ),
                metadata=md,
            )
            for n in walked.nodes:
                if n.asset_id in victim.ids:  # only as a dangling id the attacker wrote
                    assert not n.qualified_name and not n.effective_tags, n
        elif kind == "relate":
            ref = data.draw(
                st.sampled_from(
                    [L.AssetRef(asset_id=i) for i in victim.ids[:2]]
                    + [L.AssetRef(qualified_name=n) for n in (NAMES[2], victim.only)]
                )
            )
            up, down = (ref, L.AssetRef(qualified_name=NAMES[3]))
            if data.draw(st.booleans(), label="victim downstream"):
                up, down = down, up
            res = await lineage.IngestRelationships(
                L.IngestRelationshipsRequest(
                    relationships=[
                        L.RelationshipInput(upstream=up, downstream=down, source_event_time=ago(1))
                    ]
                ),
                metadata=md,
            )
            assert len(res.results) == 1
        elif kind == "update_tags":
            await stub.UpdateTags(
                O.UpdateTagsRequest(
                    asset_id=data.draw(st.sampled_from(victim.ids)),
                    add=[common_pb.TagAssignment(name="GDPR")],
                ),
                metadata=md,
            )
            raise AssertionError("tagged another tenant's asset")
        elif kind == "delete":
            await stub.DeleteMetadata(
                O.DeleteMetadataRequest(asset_id=data.draw(st.sampled_from(victim.ids))),
                metadata=md,
            )
            raise AssertionError("deleted another tenant's asset")
        elif kind == "audit":
            trail = await stub.GetAuditTrail(
                O.GetAuditTrailRequest(asset_id=data.draw(st.sampled_from(victim.ids))),
                metadata=md,
            )
            assert not trail.entries
        elif kind == "issues":
            issues = await stub.ListIssues(
                O.ListIssuesRequest(asset_id=data.draw(st.sampled_from(victim.ids))), metadata=md
            )
            assert not issues.issues
        elif kind == "job":
            await stub.GetBulkJob(O.GetBulkJobRequest(job_id=victim.job_id), metadata=md)
            raise AssertionError("read another tenant's bulk job")
        elif kind == "name_tenant":
            await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=attacker.ids[0]),
                metadata=(*md, ("x-lily-tenant", victim.tenant_id)),
            )
            raise AssertionError("a call naming another tenant was answered")
    except grpc.aio.AioRpcError as err:
        allowed = GATE | ({grpc.StatusCode.PERMISSION_DENIED} if kind == "name_tenant" else set())
        assert err.code() in allowed, (kind, err.code(), err.details())
    assert await _fingerprint(stub, lineage, victim) == before


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_generated_watch_filters_never_see_another_tenants_changes(channel, tenants, data):
    from lily.v1 import events_pb2 as E

    stub = metadata_grpc.MetadataServiceStub(channel)
    a_key, v_key = data.draw(st.sampled_from(PAIRS), label="attacker, victim")
    attacker, victim = tenants[a_key], tenants[v_key]
    request = O.WatchChangesRequest(
        entities=data.draw(st.lists(st.sampled_from([E.ENTITY_KIND_ASSET]), max_size=1)),
        asset_types=data.draw(st.lists(st.sampled_from([TABLE, COLUMN]), max_size=2)),
        tags=data.draw(st.lists(st.sampled_from(["PII", "GDPR", "t"]), max_size=2)),
    )
    call = stub.WatchChanges(request, metadata=attacker.md, timeout=30)
    await call.initial_metadata()  # subscribed
    tag = uuid.uuid4().hex[:6]
    await stub.UpdateTags(  # the victim changes: a new tag on its PII asset
        O.UpdateTagsRequest(asset_id=victim.ids[0], add=[common_pb.TagAssignment(name="t")]),
        metadata=victim.md,
    )
    await stub.UpdateTags(
        O.UpdateTagsRequest(asset_id=victim.ids[0], remove=["t"]), metadata=victim.md
    )
    await stub.IngestMetadata(  # and so does the attacker (something it may see)
        O.IngestMetadataRequest(
            assets=[asset(f"{attacker.only}/{tag}", tags=[common_pb.TagAssignment(name="PII")])]
        ),
        metadata=attacker.md,
    )
    seen = []
    try:
        while True:
            got = await asyncio.wait_for(call.read(), 0.5)
            seen.append(got.event)
    except TimeoutError:
        pass
    finally:
        call.cancel()
    assert all(e.tenant_id == attacker.tenant_id for e in seen), seen
