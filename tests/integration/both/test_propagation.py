"""Propagation downstream through the running server's worker: a PII tag reaches everything
downstream, with its origins, and is withdrawn where nothing supplies it any more."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import metadata_pb2 as O

from tests.helpers import (
    edges,
    eventually,
    ingest_ids,
    tag,
)

PROPAGATED = common_pb.TAG_SOURCE_PROPAGATED


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
    ids = await ingest_ids(stub, md, *(f"pg://p/n{i}" for i in range(5)), "pg://p/side")
    n = [ids[f"pg://p/n{i}"] for i in range(5)]
    await edges(lineage, md, *((f"pg://p/n{i}", f"pg://p/n{i + 1}") for i in range(4)))
    await edges(lineage, md, ("pg://p/n1", "pg://p/side"))
    await tag(stub, md, n[0], "PII")
    await tag(stub, md, n[0], "gold")  # not a propagating tag
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
    await tag(stub, md, n[0], "PII", remove=True)
    for downstream in n[1:]:
        await _until(stub, md, downstream, {})
    await tag(stub, md, n[0], "PII")
    await _until(stub, md, n[4], {"PII": {n[0]}})
    after = {
        i: (await stub.GetMetadata(O.GetMetadataRequest(asset_id=i), metadata=md)).asset.version
        for i in n
    }
    assert all(after[i] == versions[i] + 2 for i in n[1:])  # removed once, added once


async def test_a_second_source_keeps_the_tag_and_own_tags_are_never_removed(stub, lineage, md):
    ids = await ingest_ids(stub, md, "pg://q/p1", "pg://q/p2", "pg://q/child", "pg://q/own")
    p1, p2, child, own = (ids[k] for k in ("pg://q/p1", "pg://q/p2", "pg://q/child", "pg://q/own"))
    await edges(lineage, md, ("pg://q/p1", "pg://q/child"), ("pg://q/p2", "pg://q/child"))
    await edges(lineage, md, ("pg://q/child", "pg://q/own"))
    await tag(stub, md, own, "PII")  # its own USER tag
    await tag(stub, md, p1, "PII")
    await tag(stub, md, p2, "PII")
    await _until(stub, md, child, {"PII": {p1, p2}})
    await _until(stub, md, own, {"PII": {p1, p2}})
    await tag(stub, md, p1, "PII", remove=True)
    await _until(stub, md, child, {"PII": {p2}})  # two PII parents, one removed: still PII
    await tag(stub, md, p2, "PII", remove=True)
    await _until(stub, md, child, {})
    await _until(stub, md, own, {})
    got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=own), metadata=md)
    assert [(t.name, t.source) for t in got.asset.tags] == [("PII", common_pb.TAG_SOURCE_USER)]


async def test_new_and_deleted_edges_move_what_they_carry(stub, lineage, md):
    ids = await ingest_ids(stub, md, "pg://r/src", "pg://r/a", "pg://r/b")
    src, a, b = ids["pg://r/src"], ids["pg://r/a"], ids["pg://r/b"]
    await edges(lineage, md, ("pg://r/a", "pg://r/b"))
    await tag(stub, md, src, "GDPR")
    await edges(lineage, md, ("pg://r/src", "pg://r/a"))  # a new edge from a tagged asset
    await _until(stub, md, a, {"GDPR": {src}})
    await _until(stub, md, b, {"GDPR": {src}})
    await edges(lineage, md, ("pg://r/src", "pg://r/a"), delete=True)
    await _until(stub, md, a, {})
    await _until(stub, md, b, {})


async def test_an_asset_that_arrives_after_its_lineage_inherits_at_once(stub, lineage, md):
    ids = await ingest_ids(stub, md, "pg://s/src")
    await edges(lineage, md, ("pg://s/src", "pg://s/late"))
    await tag(stub, md, ids["pg://s/src"], "PII")
    late = await ingest_ids(stub, md, "pg://s/late")  # the scraper reaches it only now
    await _until(stub, md, late["pg://s/late"], {"PII": {ids["pg://s/src"]}})


async def test_a_tag_marked_propagate_travels_like_the_configured_ones(stub, lineage, md):
    ids = await ingest_ids(stub, md, "pg://f/src", "pg://f/mid", "pg://f/leaf")
    src, mid, leaf = ids["pg://f/src"], ids["pg://f/mid"], ids["pg://f/leaf"]
    await edges(lineage, md, ("pg://f/src", "pg://f/mid"), ("pg://f/mid", "pg://f/leaf"))
    await stub.UpdateTags(
        O.UpdateTagsRequest(
            asset_id=src,
            source=common_pb.TAG_SOURCE_USER,
            add=[
                common_pb.TagAssignment(name="finance", propagate=True),
                common_pb.TagAssignment(name="gold"),  # neither configured nor marked
            ],
        ),
        metadata=md,
    )
    await _until(stub, md, leaf, {"finance": {src}})
    assert await _propagated(stub, md, mid) == {"finance": {src}}
    # unmarking it (same tag, propagate off) withdraws it downstream
    await stub.UpdateTags(
        O.UpdateTagsRequest(
            asset_id=src,
            source=common_pb.TAG_SOURCE_USER,
            add=[common_pb.TagAssignment(name="finance")],
        ),
        metadata=md,
    )
    await _until(stub, md, leaf, {})


async def _finished(lineage, md, job_id: str) -> L.PropagationJob:
    """The job, once it has succeeded."""

    async def check():
        try:
            got = await lineage.GetPropagationJob(
                L.GetPropagationJobRequest(job_id=job_id), metadata=md
            )
        except grpc.aio.AioRpcError as exc:  # not started yet
            raise AssertionError(exc.code()) from exc
        assert got.job.state == L.PROPAGATION_JOB_STATE_SUCCEEDED
        return got.job

    return await eventually(check, timeout=15)


def _issue(
    external_id: str, status: int = common_pb.ISSUE_STATUS_OPEN
) -> common_pb.DataQualityIssue:
    return common_pb.DataQualityIssue(
        source="montecarlo", external_id=external_id, title="freshness", status=status
    )


async def test_an_open_issue_marks_everything_downstream_until_it_is_resolved(
    stub, lineage, md, event_log
):
    ids = await ingest_ids(stub, md, "pg://h/src", "pg://h/mid", "pg://h/leaf", "pg://h/other")
    src, mid, leaf = ids["pg://h/src"], ids["pg://h/mid"], ids["pg://h/leaf"]
    await edges(lineage, md, ("pg://h/src", "pg://h/mid"), ("pg://h/mid", "pg://h/leaf"))
    await edges(lineage, md, ("pg://h/other", "pg://h/leaf"))
    attached = await stub.AttachIssue(
        O.AttachIssueRequest(asset_id=src, issue=_issue("inc-1")), metadata=md
    )

    async def health(asset_id: str, expected: list[str]) -> None:
        async def check():
            got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=md)
            assert list(got.asset.unhealthy_upstream_asset_ids) == expected
            return True

        await eventually(check, timeout=15)

    await health(leaf, [src])
    await health(mid, [src])
    await health(src, [])  # its own issue is not an upstream one
    walk = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=src, direction=L.LINEAGE_DIRECTION_DOWNSTREAM), metadata=md
    )
    nodes = {n.asset_id: n for n in walk.nodes}
    assert list(nodes[leaf].unhealthy_upstream_asset_ids) == [src]
    assert nodes[src].open_issue_count == 1

    # each marked asset got an event, caused by the issue's
    async def attached_event():
        return next(
            (e for _, e, _ in event_log.events(".issue.attached") if e.asset_id == src), None
        )

    issue_event = await eventually(attached_event)

    async def marked():
        got = [
            e
            for _, e, _ in event_log.events(".asset.updated")
            if "unhealthy_upstream_asset_ids" in e.changed_fields
        ]
        assert sorted(e.asset_id for e in got) == sorted([mid, leaf])
        # (caused by the issue, or by an edge whose recompute ran after the issue committed)
        edges = {e.event_id for _, e, _ in event_log.events(".relationship.created")}
        assert {e.cause_event_id for e in got} <= {issue_event.event_id, *edges}
        return got

    await eventually(marked)

    job = await _finished(lineage, md, issue_event.event_id)
    assert (job.assets_total, job.assets_done) == (2, 2)
    mine = [e for e in await eventually(marked) if e.cause_event_id == issue_event.event_id]
    assert job.assets_changed == len(mine)

    # a second unhealthy upstream, then the first resolved: only the second is left
    await stub.AttachIssue(
        O.AttachIssueRequest(asset_id=ids["pg://h/other"], issue=_issue("inc-2")), metadata=md
    )
    await health(leaf, sorted([src, ids["pg://h/other"]]))
    resolved = _issue("inc-1", common_pb.ISSUE_STATUS_RESOLVED)
    await stub.AttachIssue(O.AttachIssueRequest(asset_id=src, issue=resolved), metadata=md)
    await health(leaf, [ids["pg://h/other"]])
    await health(mid, [])
    assert attached.created


async def test_propagate_downstream_runs_a_job_with_progress(
    stub, lineage, md, other_md, event_log
):
    names = [f"pg://j/n{i}" for i in range(30)]
    ids = await ingest_ids(stub, md, "pg://j/root", *names)
    root = ids["pg://j/root"]
    await edges(lineage, md, *(("pg://j/root", n) for n in names))
    await tag(stub, md, root, "PII")
    for n in names:
        await _until(stub, md, ids[n], {"PII": {root}})

    # a tag change is a job too, named by its event
    async def tag_event():
        return next(
            (e for _, e, _ in event_log.events(".asset.tagged") if e.asset_id == root), None
        )

    tagged = await eventually(tag_event)
    job = await _finished(lineage, md, tagged.event_id)
    assert (job.assets_total, job.assets_done) == (30, 30)
    assert job.asset_id == root
    # (the edges' own recompute may have got there first if it ran after the tag committed)
    caused = [e for _, e, _ in event_log.events(".asset.tagged") if e.cause_event_id == job.job_id]
    assert job.assets_changed == len(caused)

    # a re-run finds everything right: done, nothing changed, no events
    started = await lineage.PropagateDownstream(
        L.PropagateDownstreamRequest(asset_id=root), metadata=md
    )
    assert started.job.state == L.PROPAGATION_JOB_STATE_PENDING

    rerun = await _finished(lineage, md, started.job.job_id)
    assert (rerun.assets_total, rerun.assets_done, rerun.assets_changed) == (31, 31, 0)
    assert rerun.requested_by and rerun.finished_at.seconds
    assert not [e for _, e, _ in event_log.events() if e.cause_event_id == started.job.job_id]
    audit = await stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=root), metadata=md)
    assert audit.entries[-1].action == "PropagateDownstream"

    # refusals: unknown asset and job, malformed ids, another tenant's job
    elsewhere = other_md
    job_id = started.job.job_id
    for call, request, who, code in (
        (lineage.PropagateDownstream, L.PropagateDownstreamRequest(asset_id="0" * 32), md, 5),
        (lineage.PropagateDownstream, L.PropagateDownstreamRequest(asset_id="x"), md, 3),
        (lineage.GetPropagationJob, L.GetPropagationJobRequest(job_id="0" * 32), md, 5),
        (lineage.GetPropagationJob, L.GetPropagationJobRequest(), md, 3),
        (lineage.GetPropagationJob, L.GetPropagationJobRequest(job_id=job_id), elsewhere, 5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=who)
        assert err.value.code().value[0] == code, request
