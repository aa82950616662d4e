"""LineageService over gRPC and REST: relationships in, walks out; every edge change audited
and published."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O

from tests.helpers import ago, asset, details, eventually, status_of

DOWN, UP, BOTH = (
    L.LINEAGE_DIRECTION_DOWNSTREAM,
    L.LINEAGE_DIRECTION_UPSTREAM,
    L.LINEAGE_DIRECTION_BOTH,
)


@pytest.fixture
def lineage(channel: grpc.aio.Channel) -> lineage_grpc.LineageServiceStub:
    return lineage_grpc.LineageServiceStub(channel)


def rel(up: str, down: str, seconds_ago: float = 60, kind: str = "") -> L.RelationshipInput:
    return L.RelationshipInput(
        upstream=L.AssetRef(qualified_name=up),
        downstream=L.AssetRef(qualified_name=down),
        type=kind,
        source_event_time=ago(seconds_ago),
    )


async def _ids(stub, md, *names: str) -> list[str]:
    res = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(n) for n in names]), metadata=md
    )
    return [r.asset_id for r in res.results]


async def test_edges_in_walks_out_with_asset_summaries(stub, lineage, md):
    raw, clean, report = await _ids(stub, md, "pg://l/raw", "pg://l/clean", "pg://l/report")
    await stub.UpdateTags(
        O.UpdateTagsRequest(asset_id=raw, add=[common_pb.TagAssignment(name="PII")]), metadata=md
    )
    await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=clean,
            issue=common_pb.DataQualityIssue(source="monte_carlo", external_id="i1", title="x"),
        ),
        metadata=md,
    )
    res = await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                rel("pg://l/raw", "pg://l/clean"),
                rel("pg://l/clean", "pg://l/report"),
                # a scraper's edge to an asset that has not arrived yet
                rel("pg://l/report", "pg://l/later", kind="USED_IN"),
            ]
        ),
        metadata=md,
    )
    assert [r.outcome for r in res.results] == [L.RELATIONSHIP_OUTCOME_CREATED] * 3
    assert res.results[0].relationship.upstream_asset_id == raw
    assert res.results[0].relationship.type == "DERIVED_FROM"  # the default

    down = await lineage.GetLineage(L.GetLineageRequest(asset_id=raw), metadata=md)
    nodes = {n.qualified_name or n.asset_id: n for n in down.nodes}
    assert {n.depth for n in down.nodes} == {0, 1, 2, 3}
    assert nodes["pg://l/raw"].depth == 0
    assert [t.name for t in nodes["pg://l/raw"].effective_tags] == ["PII"]
    assert nodes["pg://l/clean"].open_issue_count == 1
    assert nodes["pg://l/report"].asset_type == common_pb.ASSET_TYPE_TABLE
    later = [n for n in down.nodes if not n.exists]
    assert len(later) == 1 and later[0].depth == 3 and later[0].qualified_name == ""
    assert len(down.relationships) == 3

    one = await lineage.GetLineage(L.GetLineageRequest(asset_id=raw, depth=1), metadata=md)
    assert {n.asset_id for n in one.nodes} == {raw, clean}
    up = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=report, direction=UP, depth=5), metadata=md
    )
    assert {n.asset_id: n.depth for n in up.nodes} == {report: 0, clean: 1, raw: 2}
    both = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=clean, direction=BOTH), metadata=md
    )
    assert {n.asset_id for n in both.nodes} >= {raw, clean, report}

    # the asset that was missing arrives: its node resolves
    (later_id,) = await _ids(stub, md, "pg://l/later")
    again = await lineage.GetLineage(L.GetLineageRequest(asset_id=raw), metadata=md)
    arrived = next(n for n in again.nodes if n.asset_id == later_id)
    assert arrived.exists and arrived.qualified_name == "pg://l/later"


async def test_edge_changes_are_last_writer_wins_audited_and_published(
    stub, lineage, md, event_log
):
    a, b = await _ids(stub, md, "pg://e/a", "pg://e/b")
    first = await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(relationships=[rel("pg://e/a", "pg://e/b", 60)]),
        metadata=md,
    )
    assert first.results[0].outcome == L.RELATIONSHIP_OUTCOME_CREATED
    same = await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[rel("pg://e/a", "pg://e/b", 30), rel("pg://e/a", "pg://e/b", 90)]
        ),
        metadata=md,
    )
    assert [r.outcome for r in same.results] == [
        L.RELATIONSHIP_OUTCOME_UNCHANGED,  # newer, same edge
        L.RELATIONSHIP_OUTCOME_STALE,  # older than its twin in the batch
    ]
    older_delete = await lineage.DeleteRelationships(
        L.DeleteRelationshipsRequest(relationships=[rel("pg://e/a", "pg://e/b", 45)]),
        metadata=md,
    )
    assert older_delete.results[0].outcome == L.RELATIONSHIP_OUTCOME_STALE
    walk = await lineage.GetLineage(L.GetLineageRequest(asset_id=a), metadata=md)
    assert {n.asset_id for n in walk.nodes} == {a, b}

    deleted = await lineage.DeleteRelationships(
        L.DeleteRelationshipsRequest(relationships=[rel("pg://e/a", "pg://e/b", 1)]),
        metadata=md,
    )
    assert deleted.results[0].outcome == L.RELATIONSHIP_OUTCOME_DELETED
    assert deleted.results[0].relationship.is_deleted
    walk = await lineage.GetLineage(L.GetLineageRequest(asset_id=a), metadata=md)
    assert [n.asset_id for n in walk.nodes] == [a]

    async def published():
        events = [(s, e, h) for s, e, h in event_log.events() if ".relationship." in s]
        kinds = [(s.rsplit(".", 2)[-2:], e.relationship.downstream_asset_id) for s, e, _ in events]
        assert kinds == [(["relationship", "created"], b), (["relationship", "deleted"], b)]
        return events

    events = await eventually(published)
    assert all(e.asset_id == a and e.qualified_name == "pg://e/a" for _, e, _ in events)
    trail = await stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=a), metadata=md)
    assert [e.action for e in trail.entries][-2:] == ["IngestRelationships", "DeleteRelationships"]


async def test_bad_relationships_are_refused_one_by_one_and_nothing_else_is_lost(
    lineage, md, tenant
):
    res = await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                rel("pg://b/x", "pg://b/y"),
                L.RelationshipInput(upstream=L.AssetRef(asset_id="nope")),
                rel("pg://b/x", "pg://b/z", kind="lower-case"),
                rel("pg://b/x", "pg://b/w", seconds_ago=-3600),  # an hour ahead
            ]
        ),
        metadata=md,
    )
    outcomes = [r.outcome for r in res.results]
    assert outcomes == [L.RELATIONSHIP_OUTCOME_CREATED] + [L.RELATIONSHIP_OUTCOME_REJECTED] * 3
    fields = [
        {v.field for v in details(r.error)["BadRequest"].field_violations} for r in res.results[1:]
    ]
    assert fields == [
        {"relationships[1].upstream.asset_id", "relationships[1].downstream"},
        {"relationships[2].type"},
        {"relationships[3].source_event_time"},
    ]
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await lineage.IngestRelationships(
            L.IngestRelationshipsRequest(relationships=[rel("a://x", "a://y")] * 1001),
            metadata=md,
        )
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for request, code in (
        (L.GetLineageRequest(asset_id="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (L.GetLineageRequest(asset_id="0" * 32, depth=51), grpc.StatusCode.INVALID_ARGUMENT),
        (L.GetLineageRequest(asset_id="0" * 32, direction=9), grpc.StatusCode.INVALID_ARGUMENT),
        (L.GetLineageRequest(asset_id="0" * 32), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await lineage.GetLineage(request, metadata=md)
        assert refused.value.code() == code
        assert status_of(refused.value).message


async def test_tenants_never_see_each_others_lineage(stub, lineage, md, other_md):
    (a,) = await _ids(stub, md, "pg://t/a")
    await lineage.IngestRelationships(
        L.IngestRelationshipsRequest(relationships=[rel("pg://t/a", "pg://t/b")]), metadata=md
    )
    other = other_md
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await lineage.GetLineage(L.GetLineageRequest(asset_id=a), metadata=other)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    # the same names in another tenant are other assets, with no edges
    await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset("pg://t/a")]), metadata=other)
    res = await stub.LookupMetadata(
        O.LookupMetadataRequest(qualified_name="pg://t/a"), metadata=other
    )
    theirs = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=res.asset.asset_id), metadata=other
    )
    assert [n.asset_id for n in theirs.nodes] == [res.asset.asset_id]


async def test_lineage_over_rest(http, stub, md):
    (a,) = await _ids(stub, md, "pg://r/a")
    body = {
        "relationships": [
            {"upstream": {"qualifiedName": "pg://r/a"}, "downstream": {"qualifiedName": "pg://r/b"}}
        ]
    }
    created = await http.post("/api/v1/lineage", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["results"][0]["outcome"] == "RELATIONSHIP_OUTCOME_CREATED"
    walk = await http.get(f"/api/v1/lineage/{a}", params={"direction": "LINEAGE_DIRECTION_BOTH"})
    assert walk.status_code == 200, walk.text
    assert len(walk.json()["nodes"]) == 2
    gone = await http.post("/api/v1/lineage:delete", json=body)
    assert gone.json()["results"][0]["outcome"] == "RELATIONSHIP_OUTCOME_DELETED"
    missing = await http.get("/api/v1/lineage/" + "0" * 32)
    assert missing.status_code == 404
    started = await http.post(f"/api/v1/lineage/{a}:propagate", json={})
    assert started.status_code == 200, started.text
    job_id = started.json()["job"]["jobId"]
    assert started.json()["job"]["state"] == "PROPAGATION_JOB_STATE_PENDING"

    async def finished():
        got = await http.get(f"/api/v1/lineage/jobs/{job_id}")
        assert got.status_code == 200, got.text
        assert got.json()["job"]["state"] == "PROPAGATION_JOB_STATE_SUCCEEDED"
        return got.json()["job"]

    job = await eventually(finished)
    assert job["assetId"] == a and job["assetsTotal"] == job["assetsDone"]
    assert (await http.get("/api/v1/lineage/jobs/" + "0" * 32)).status_code == 404
    assert (await http.post("/api/v1/lineage/" + "0" * 32 + ":propagate")).status_code == 404
