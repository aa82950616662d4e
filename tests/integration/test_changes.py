"""Updates, tags, deletes, versions, issues: each audited and each emitting its ChangeEvent."""

from __future__ import annotations

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as O

from tests.helpers import asset, details, eventually, status_of

USER, SOURCE, RULE, PROPAGATED = (
    common_pb.TAG_SOURCE_USER,
    common_pb.TAG_SOURCE_SOURCE,
    common_pb.TAG_SOURCE_RULE,
    common_pb.TAG_SOURCE_PROPAGATED,
)


async def _ingest(stub, md, *assets):
    res = (
        await stub.IngestMetadata(O.IngestMetadataRequest(assets=list(assets)), metadata=md)
    ).results
    assert all(r.outcome in (O.INGEST_OUTCOME_CREATED, O.INGEST_OUTCOME_UPDATED) for r in res), res
    return [r.asset_id for r in res]


async def test_tags_keep_their_source_and_source_overrides_user(stub, md):
    (aid,) = await _ingest(
        stub,
        md,
        asset("pg://h/db/s/users", tags=[common_pb.TagAssignment(name="PII", value="email")]),
    )
    r = await stub.UpdateTags(
        O.UpdateTagsRequest(
            asset_id=aid,
            add=[
                common_pb.TagAssignment(name="PII", value="none"),
                common_pb.TagAssignment(name="gold"),
            ],
        ),
        metadata=md,
    )
    assert sorted(r.tags_added) == ["PII", "gold"]
    r = await stub.UpdateTags(
        O.UpdateTagsRequest(
            asset_id=aid,
            source=RULE,
            add=[common_pb.TagAssignment(name="GDPR")],
        ),
        metadata=md,
    )
    a = r.asset
    assert a.version == 3
    stored = {(t.name, t.source): t for t in a.tags}
    assert set(stored) == {("PII", SOURCE), ("PII", USER), ("gold", USER), ("GDPR", RULE)}
    effective = {e.name: e for e in a.effective_tags}
    assert (effective["PII"].value, effective["PII"].source) == ("email", SOURCE)
    assert [(t.value, t.source) for t in effective["PII"].overridden] == [("none", USER)]
    # Re-scraping without the tag drops the SOURCE tag only; the user's value becomes effective.
    await _ingest(stub, md, asset("pg://h/db/s/users"))
    a = (await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=md)).asset
    effective = {e.name: e for e in a.effective_tags}
    assert (effective["PII"].value, effective["PII"].source) == ("none", USER)
    assert ("GDPR", RULE) in {(t.name, t.source) for t in a.tags}
    # Removing as USER leaves the other sources alone; removing what is absent changes nothing.
    r = await stub.UpdateTags(
        O.UpdateTagsRequest(asset_id=aid, remove=["PII", "nope"]), metadata=md
    )
    assert list(r.tags_removed) == ["PII"]
    again = await stub.UpdateTags(O.UpdateTagsRequest(asset_id=aid, remove=["PII"]), metadata=md)
    assert again.asset.version == r.asset.version and not again.tags_removed


async def test_propagated_tags_come_only_from_lineage(stub, md):
    (aid,) = await _ingest(stub, md, asset("pg://h/db/s/p"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateTags(
            O.UpdateTagsRequest(
                asset_id=aid,
                source=PROPAGATED,
                add=[common_pb.TagAssignment(name="PII", upstream_asset_ids=["0" * 32])],
            ),
            metadata=md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details(status_of(err.value))["BadRequest"].field_violations] == [
        "source"
    ]


async def test_soft_delete_hides_and_refuses_updates(stub, md):
    (aid,) = await _ingest(stub, md, asset("pg://h/db/s/gone", owners=["ann"]))
    d = await stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=aid), metadata=md)
    assert d.asset.is_deleted and not d.already_deleted and d.asset.version == 2
    d2 = await stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=aid), metadata=md)
    assert d2.already_deleted and d2.asset.version == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        await stub.GetMetadata(
            O.GetMetadataRequest(asset_id=aid, include_deleted=True), metadata=md
        )
    ).asset.is_deleted
    assert not (await stub.SearchMetadata(O.SearchMetadataRequest(owner="ann"), metadata=md)).assets
    assert (
        len(
            (
                await stub.SearchMetadata(
                    O.SearchMetadataRequest(owner="ann", include_deleted=True), metadata=md
                )
            ).assets
        )
        == 1
    )
    for call in (
        stub.UpdateMetadata(
            O.UpdateMetadataRequest(
                asset_id=aid, asset=common_pb.Asset(name="x"), update_mask={"paths": ["name"]}
            ),
            metadata=md,
        ),
        stub.UpdateTags(
            O.UpdateTagsRequest(asset_id=aid, add=[common_pb.TagAssignment(name="x")]), metadata=md
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(status_of(err.value))["ErrorInfo"].reason == "ASSET_DELETED"
    # a newer scrape of the asset brings it back
    res = (
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://h/db/s/gone", owners=["ann"])]), metadata=md
        )
    ).results[0]
    assert (res.outcome, list(res.changed_fields)) == (O.INGEST_OUTCOME_UPDATED, ["is_deleted"])


async def test_expected_version_mismatch_is_aborted_with_current_version(stub, md):
    (aid,) = await _ingest(stub, md, asset("pg://h/db/s/v"))
    ok = await stub.UpdateMetadata(
        O.UpdateMetadataRequest(
            asset_id=aid,
            asset=common_pb.Asset(description="d", owners=["bo"]),
            update_mask={"paths": ["description", "owners"]},
            expected_version=1,
        ),
        metadata=md,
    )
    assert (ok.asset.version, sorted(ok.changed_fields)) == (2, ["description", "owners"])
    assert ok.asset.name == "v"  # not in the mask: untouched
    for call in (
        stub.UpdateMetadata(
            O.UpdateMetadataRequest(
                asset_id=aid,
                asset=common_pb.Asset(description="e"),
                update_mask={"paths": ["description"]},
                expected_version=1,
            ),
            metadata=md,
        ),
        stub.UpdateTags(
            O.UpdateTagsRequest(
                asset_id=aid, add=[common_pb.TagAssignment(name="t")], expected_version=7
            ),
            metadata=md,
        ),
        stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=aid, expected_version=1), metadata=md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.ABORTED
        info = details(status_of(err.value))["ErrorInfo"]
        assert (info.reason, info.metadata["current_version"]) == ("VERSION_MISMATCH", "2")
    assert (
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=md)
    ).asset.description == "d"


async def test_every_change_is_audited_and_evented_with_trace_context(stub, md, tenant, event_log):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = (
        *md,
        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
        ("x-lily-principal", "ann@acme"),  # a claim, not a credential: ignored
    )
    (aid,) = await _ingest(stub, traced, asset("pg://h/db/s/audited"))
    await stub.UpdateMetadata(
        O.UpdateMetadataRequest(
            asset_id=aid,
            asset=common_pb.Asset(description="x"),
            update_mask={"paths": ["description"]},
        ),
        metadata=traced,
    )
    await stub.UpdateTags(
        O.UpdateTagsRequest(asset_id=aid, add=[common_pb.TagAssignment(name="PII")]),
        metadata=traced,
    )
    await stub.UpdateTags(O.UpdateTagsRequest(asset_id=aid, remove=["PII"]), metadata=traced)
    issue = common_pb.DataQualityIssue(
        source="monte_carlo",
        external_id="inc-1",
        type="freshness",
        severity=common_pb.ISSUE_SEVERITY_HIGH,
        title="late",
    )
    att = await stub.AttachIssue(O.AttachIssueRequest(asset_id=aid, issue=issue), metadata=traced)
    assert att.created and att.issue.status == common_pb.ISSUE_STATUS_OPEN
    await stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=aid), metadata=traced)

    trail = (await stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=aid), metadata=md)).entries
    assert [(e.action, e.change) for e in trail] == [
        ("IngestMetadata", events_pb.CHANGE_KIND_CREATED),
        ("UpdateMetadata", events_pb.CHANGE_KIND_UPDATED),
        ("UpdateTags", events_pb.CHANGE_KIND_TAGGED),
        ("UpdateTags", events_pb.CHANGE_KIND_UNTAGGED),
        ("AttachIssue", events_pb.CHANGE_KIND_ATTACHED),
        ("DeleteMetadata", events_pb.CHANGE_KIND_DELETED),
    ]
    assert {e.principal for e in trail} == {f"admin@{tenant}"}  # who the credential proves
    assert list(trail[1].changed_fields) == ["description"]

    expected = [
        f"lily.{tenant}.asset.created",
        f"lily.{tenant}.asset.updated",
        f"lily.{tenant}.asset.tagged",
        f"lily.{tenant}.asset.untagged",
        f"lily.{tenant}.issue.attached",
        f"lily.{tenant}.asset.deleted",
    ]
    got = await eventually(lambda: _when(len(event_log.events()) >= 6, event_log.events))
    assert [s for s, _, _ in got] == expected
    assert [e.event_id for _, e, _ in got] == [e.event_id for e in trail]
    for _, event, headers in got:
        assert (event.tenant_id, event.asset_id) == (tenant, aid)
        assert event.actor == f"admin@{tenant}"
        assert headers["traceparent"].split("-")[1] == trace_id
        assert headers["Nats-Msg-Id"] == event.event_id
    assert [e.asset_version for _, e, _ in got] == [1, 2, 3, 4, 4, 5]
    assert got[4][1].issue.external_id == "inc-1"
    # re-attaching the same incident updates it, and says so
    issue.status = common_pb.ISSUE_STATUS_RESOLVED
    with pytest.raises(grpc.aio.AioRpcError):  # the asset is deleted now
        await stub.AttachIssue(O.AttachIssueRequest(asset_id=aid, issue=issue), metadata=md)


async def test_issues_are_updated_by_external_id_and_listed(stub, md):
    (aid,) = await _ingest(stub, md, asset("pg://h/db/s/dq"))
    base = dict(source="monte_carlo", type="volume")
    for n in range(3):
        await stub.AttachIssue(
            O.AttachIssueRequest(
                asset_id=aid, issue=common_pb.DataQualityIssue(external_id=f"i{n}", **base)
            ),
            metadata=md,
        )
    upd = await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=aid,
            issue=common_pb.DataQualityIssue(
                external_id="i1", status=common_pb.ISSUE_STATUS_RESOLVED, **base
            ),
        ),
        metadata=md,
    )
    assert not upd.created and upd.issue.HasField("resolved_at")
    same = await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=aid,
            issue=common_pb.DataQualityIssue(
                external_id="i1",
                status=common_pb.ISSUE_STATUS_RESOLVED,
                resolved_at=upd.issue.resolved_at,
                **base,
            ),
        ),
        metadata=md,
    )
    assert same.issue.issue_id == upd.issue.issue_id
    page1 = await stub.ListIssues(O.ListIssuesRequest(asset_id=aid, page_size=2), metadata=md)
    page2 = await stub.ListIssues(
        O.ListIssuesRequest(asset_id=aid, page_size=2, page_token=page1.next_page_token),
        metadata=md,
    )
    ids = [i.external_id for i in page1.issues] + [i.external_id for i in page2.issues]
    assert sorted(ids) == ["i0", "i1", "i2"] and not page2.next_page_token
    resolved = await stub.ListIssues(
        O.ListIssuesRequest(asset_id=aid, status=common_pb.ISSUE_STATUS_RESOLVED), metadata=md
    )
    assert [i.external_id for i in resolved.issues] == ["i1"]
    trail = (await stub.GetAuditTrail(O.GetAuditTrailRequest(asset_id=aid), metadata=md)).entries
    assert [e.change for e in trail].count(
        events_pb.CHANGE_KIND_UPDATED
    ) == 1  # the no-op re-attach wrote nothing


async def _when(cond, value):
    return value() if cond else None
