"""Propagation downstream through the running server's worker: a PII tag reaches everything
downstream, with its origins, and is withdrawn where nothing supplies it any more."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O

from tests.helpers import ago, asset, eventually

PROPAGATED = common_pb.TAG_SOURCE_PROPAGATED


@pytest.fixture
def lineage(channel: grpc.aio.Channel) -> lineage_grpc.LineageServiceStub:
    return lineage_grpc.LineageServiceStub(channel)


def rel(up: str, down: str) -> L.RelationshipInput:
    return L.RelationshipInput(
        upstream=L.AssetRef(qualified_name=up),
        downstream=L.AssetRef(qualified_name=down),
        source_event_time=ago(60),
    )


async def _ids(stub, md, *names: str) -> dict[str, str]:
    res = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(n) for n in names]), metadata=md
    )
    return {n: r.asset_id for n, r in zip(names, res.results, strict=True)}


async def _edges(lineage, md, *pairs: tuple[str, str], delete: bool = False) -> None:
    rels = [rel(u, d) for u, d in pairs]
    if delete:
        await lineage.DeleteRelationships(
            L.DeleteRelationshipsRequest(relationships=rels), metadata=md
        )
    else:
        await lineage.IngestRelationships(
            L.IngestRelationshipsRequest(relationships=rels), metadata=md
        )


async def _tag(stub, md, asset_id: str, name: str, *, remove: bool = False) -> None:
    request = O.UpdateTagsRequest(asset_id=asset_id, source=common_pb.TAG_SOURCE_USER)
    if remove:
        request.remove.append(name)
    else:
        request.add.append(common_pb.TagAssignment(name=name))
    await stub.UpdateTags(request, metadata=md)


async def _propagated(stub, md, asset_id: str) -> dict[str, set[str]]:
    got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=md)
    return {t.name: set(t.upstream_asset_ids) for t in got.asset.tags if t.source == PROPAGATED}


async def _until(stub, md, asset_id: str, expected: dict[str, set[str]]):
    async def check():
        assert await _propagated(stub, md, asset_id) == expected
        return True

    await eventually(check, timeout=15)


async def test_a_tag_reaches_everything_downstream_and_leaves_with_its_source(
    stub, lineage, md, event_log
):
    ids = await _ids(stub, md, *(f"pg://p/n{i}" for i in range(5)), "pg://p/side")
    n = [ids[f"pg://p/n{i}"] for i in range(5)]
    await _edges(lineage, md, *((f"pg://p/n{i}", f"pg://p/n{i + 1}") for i in range(4)))
    await _edges(lineage, md, ("pg://p/n1", "pg://p/side"))
    await _tag(stub, md, n[0], "PII")
    await _tag(stub, md, n[0], "gold")  # not a propagating tag
    for downstream in (*n[1:], ids["pg://p/side"]):
        await _until(stub, md, downstream, {"PII": {n[0]}})
    assert await _propagated(stub, md, n[0]) == {}

    # each asset that changed got one event, caused by the tagging
    async def caused():
        tagged = [e for _, e, _ in event_log.events(".asset.tagged") if e.cause_event_id]
        assert sorted(e.asset_id for e in tagged) == sorted((*n[1:], ids["pg://p/side"]))
        return tagged

    await eventually(caused)
    versions = {
        i: (await stub.GetMetadata(O.GetMetadataRequest(asset_id=i), metadata=md)).asset.version
        for i in n
    }

    # the same again changes nothing (idempotent: no version churn)
    await _tag(stub, md, n[0], "PII", remove=True)
    for downstream in n[1:]:
        await _until(stub, md, downstream, {})
    await _tag(stub, md, n[0], "PII")
    await _until(stub, md, n[4], {"PII": {n[0]}})
    after = {
        i: (await stub.GetMetadata(O.GetMetadataRequest(asset_id=i), metadata=md)).asset.version
        for i in n
    }
    assert all(after[i] == versions[i] + 2 for i in n[1:])  # removed once, added once


async def test_a_second_source_keeps_the_tag_and_own_tags_are_never_removed(stub, lineage, md):
    ids = await _ids(stub, md, "pg://q/p1", "pg://q/p2", "pg://q/child", "pg://q/own")
    p1, p2, child, own = (ids[k] for k in ("pg://q/p1", "pg://q/p2", "pg://q/child", "pg://q/own"))
    await _edges(lineage, md, ("pg://q/p1", "pg://q/child"), ("pg://q/p2", "pg://q/child"))
    await _edges(lineage, md, ("pg://q/child", "pg://q/own"))
    await _tag(stub, md, own, "PII")  # its own USER tag
    await _tag(stub, md, p1, "PII")
    await _tag(stub, md, p2, "PII")
    await _until(stub, md, child, {"PII": {p1, p2}})
    await _until(stub, md, own, {"PII": {p1, p2}})
    await _tag(stub, md, p1, "PII", remove=True)
    await _until(stub, md, child, {"PII": {p2}})  # two PII parents, one removed: still PII
    await _tag(stub, md, p2, "PII", remove=True)
    await _until(stub, md, child, {})
    await _until(stub, md, own, {})
    got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=own), metadata=md)
    assert [(t.name, t.source) for t in got.asset.tags] == [("PII", common_pb.TAG_SOURCE_USER)]


async def test_new_and_deleted_edges_move_what_they_carry(stub, lineage, md):
    ids = await _ids(stub, md, "pg://r/src", "pg://r/a", "pg://r/b")
    src, a, b = ids["pg://r/src"], ids["pg://r/a"], ids["pg://r/b"]
    await _edges(lineage, md, ("pg://r/a", "pg://r/b"))
    await _tag(stub, md, src, "GDPR")
    await _edges(lineage, md, ("pg://r/src", "pg://r/a"))  # a new edge from a tagged asset
    await _until(stub, md, a, {"GDPR": {src}})
    await _until(stub, md, b, {"GDPR": {src}})
    await _edges(lineage, md, ("pg://r/src", "pg://r/a"), delete=True)
    await _until(stub, md, a, {})
    await _until(stub, md, b, {})


async def test_an_asset_that_arrives_after_its_lineage_inherits_at_once(stub, lineage, md):
    ids = await _ids(stub, md, "pg://s/src")
    await _edges(lineage, md, ("pg://s/src", "pg://s/late"))
    await _tag(stub, md, ids["pg://s/src"], "PII")
    late = await _ids(stub, md, "pg://s/late")  # the scraper reaches it only now
    await _until(stub, md, late["pg://s/late"], {"PII": {ids["pg://s/src"]}})
