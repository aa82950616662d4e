"""Data-quality rules through the running server, on both profiles: each rule type raises one
issue on the asset when its condition holds (which then marks what is downstream) and
resolves it when the condition clears; usage goes in through RecordUsage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as O
from lily.v1 import quality_pb2 as Q
from lily.v1 import quality_pb2_grpc as quality_grpc

from tests.helpers import (
    COLUMN,
    Metadata,
    asset,
    edges,
    eventually,
    ingest_ids,
    status_of,
    tag,
    ts,
    violations,
)

OPEN, RESOLVED = common_pb.ISSUE_STATUS_OPEN, common_pb.ISSUE_STATUS_RESOLVED


@pytest.fixture
def quality(served) -> quality_grpc.DataQualityServiceStub:
    return quality_grpc.DataQualityServiceStub(served[0])


async def _rule(quality, md: Metadata, kind, prefix: str, threshold: float = 0.0) -> Q.Rule:
    made = await quality.CreateRule(
        Q.CreateRuleRequest(
            rule=Q.Rule(type=kind, qualified_name_prefix=prefix, threshold=threshold)
        ),
        metadata=md,
    )
    return made.rule


async def _issues(stub, md: Metadata, asset_id: str) -> list[common_pb.DataQualityIssue]:
    got = await stub.ListIssues(O.ListIssuesRequest(asset_id=asset_id), metadata=md)
    return [i for i in got.issues if i.source == "lily_dq"]


async def _until_issues(stub, md, asset_id: str, *statuses: int, timeout: float = 15.0):
    """The asset's lily_dq issues, once their statuses (newest first) are these."""

    async def check():
        found = await _issues(stub, md, asset_id)
        assert [i.status for i in found] == list(statuses), found
        return found

    return await eventually(check, timeout=timeout)


async def test_a_deletion_with_downstream_raises_one_issue_until_nothing_depends_on_it(
    stub, lineage, quality, md
):
    ids = await ingest_ids(stub, md, "pg://dq/a", "pg://dq/b", "pg://dq/c")
    a, b = ids["pg://dq/a"], ids["pg://dq/b"]
    await edges(lineage, md, ("pg://dq/a", "pg://dq/b"), ("pg://dq/b", "pg://dq/c"))
    rule = await _rule(quality, md, Q.RULE_TYPE_DELETED_WITH_DOWNSTREAM, "pg://dq/")

    await stub.DeleteMetadata(O.DeleteMetadataRequest(asset_id=a), metadata=md)
    [issue] = await _until_issues(stub, md, a, OPEN)
    assert issue.type == "deleted_with_downstream"
    assert issue.external_id == f"{rule.rule_id}/{a}/1"
    assert "1 asset(s) downstream" in issue.description

    async def marked():  # the issue marks what is downstream, as any open issue does
        got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=b), metadata=md)
        assert list(got.asset.unhealthy_upstream_asset_ids) == [a]
        return True

    await eventually(marked, timeout=15)

    # a pass over everything the rule covers finds nothing more to raise
    again = await quality.EvaluateRule(Q.EvaluateRuleRequest(rule_id=rule.rule_id), metadata=md)
    assert (again.evaluated, again.raised) == (3, 0)

    await edges(lineage, md, ("pg://dq/a", "pg://dq/b"), delete=True)
    [issue] = await _until_issues(stub, md, a, RESOLVED)
    assert issue.title and issue.resolved_at.seconds > 0  # resolved, saying what it said

    # it fires again: a second issue, for the second firing
    await edges(lineage, md, ("pg://dq/a", "pg://dq/b"))
    found = await _until_issues(stub, md, a, OPEN, RESOLVED)
    assert found[0].external_id == f"{rule.rule_id}/{a}/2"


async def test_a_column_made_private_while_used_downstream_breaks_it(stub, lineage, quality, md):
    ids = await ingest_ids(stub, md, "pg://br/t")
    made = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[asset("pg://br/t/email", COLUMN, parent_qualified_name="pg://br/t")]
        ),
        metadata=md,
    )
    column = made.results[0].asset_id
    await ingest_ids(stub, md, "pg://br/report")
    await edges(lineage, md, ("pg://br/t/email", "pg://br/report"))
    await _rule(quality, md, Q.RULE_TYPE_BREAKING_SCHEMA_CHANGE, "pg://br/")

    await tag(stub, md, column, "PII")
    [issue] = await _until_issues(stub, md, column, OPEN)
    assert issue.type == "breaking_schema_change"
    assert "restricted (PII)" in issue.description
    assert await _issues(stub, md, ids["pg://br/t"]) == []  # a table is not a column

    await tag(stub, md, column, "PII", remove=True)
    await _until_issues(stub, md, column, RESOLVED)


async def test_queries_that_jump_from_their_weekly_rate_raise_an_issue(stub, quality, md):
    ids = await ingest_ids(stub, md, "pg://use/dash", "pg://use/calm")
    dash = ids["pg://use/dash"]
    await _rule(quality, md, Q.RULE_TYPE_QUERY_CHANGE, "pg://use/")  # default 15%
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=8)

    def window(qn: str, d: int, count: int) -> Q.Usage:
        start = day + timedelta(days=d)
        return Q.Usage(
            qualified_name=qn,
            window_start=ts(start),
            window_end=ts(start + timedelta(days=1)),
            query_count=count,
            distinct_users=3,
        )

    week = [window(qn, d, 100) for qn in ("pg://use/dash", "pg://use/calm") for d in range(7)]
    done = await quality.RecordUsage(Q.RecordUsageRequest(usage=week), metadata=md)
    assert done.accepted == 14
    await quality.RecordUsage(
        Q.RecordUsageRequest(
            usage=[window("pg://use/dash", 7, 60), window("pg://use/calm", 7, 110)]
        ),
        metadata=md,
    )
    [issue] = await _until_issues(stub, md, dash, OPEN)
    assert issue.type == "query_change" and "fell 40%" in issue.description
    assert await _issues(stub, md, ids["pg://use/calm"]) == []  # 10%: within the threshold

    listed = await quality.ListUsage(Q.ListUsageRequest(asset_id=dash), metadata=md)
    assert [u.query_count for u in listed.usage] == [60] + [100] * 7  # newest first

    # the same window sent again with the usual count: recorded over, and the issue resolved
    await quality.RecordUsage(
        Q.RecordUsageRequest(usage=[window("pg://use/dash", 7, 98)]), metadata=md
    )
    await _until_issues(stub, md, dash, RESOLVED)


async def test_unused_and_orphaned_assets_are_found_by_a_pass(stub, lineage, quality, md):
    ids = await ingest_ids(stub, md, "pg://idle/a", "pg://idle/b", "pg://idle/used")
    await edges(lineage, md, ("pg://idle/a", "pg://idle/b"))
    # "unused for 5 seconds" stands for "for 30 days" here: the assets are that old when the
    # rules look, and `used` was queried just before
    await asyncio.sleep(5)
    now = datetime.now(UTC)
    used = Q.Usage(
        qualified_name="pg://idle/used",
        window_start=ts(now - timedelta(minutes=1)),
        window_end=ts(now),
        query_count=5,
    )
    await quality.RecordUsage(Q.RecordUsageRequest(usage=[used]), metadata=md)

    async def recorded():
        got = await quality.ListUsage(
            Q.ListUsageRequest(asset_id=ids["pg://idle/used"]), metadata=md
        )
        return len(got.usage) == 1

    await eventually(recorded)
    days = 5 / 86400
    unused = await _rule(quality, md, Q.RULE_TYPE_UNUSED, "pg://idle/", days)
    orphaned = await _rule(quality, md, Q.RULE_TYPE_ORPHANED, "pg://idle/", days)
    for rule in (unused, orphaned):
        done = await quality.EvaluateRule(Q.EvaluateRuleRequest(rule_id=rule.rule_id), metadata=md)
        assert done.evaluated == 3  # (the schedule may have raised some of them first)

    async def found():
        return {
            qn: sorted(i.type for i in await _issues(stub, md, ids[qn]))
            for qn in ("pg://idle/a", "pg://idle/b", "pg://idle/used")
        }

    async def idle():
        # a feeds b (unused, not orphaned); b feeds nothing; `used` was queried
        assert await found() == {
            "pg://idle/a": ["unused"],
            "pg://idle/b": ["orphaned", "unused"],
            "pg://idle/used": [],
        }
        return True

    await eventually(idle, timeout=3)

    deleted = await quality.DeleteRule(Q.DeleteRuleRequest(rule_id=unused.rule_id), metadata=md)
    assert deleted.resolved >= 2  # (and `used`, if it has gone idle meanwhile)
    statuses = {i.type: i.status for i in await _issues(stub, md, ids["pg://idle/b"])}
    assert statuses == {"unused": RESOLVED, "orphaned": OPEN}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await quality.GetRule(Q.GetRuleRequest(rule_id=unused.rule_id), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rules_are_managed_and_bad_ones_refused(quality, md, other_md):
    made = await _rule(quality, md, Q.RULE_TYPE_ORPHANED, "pg://m/", 45)
    assert made.severity == common_pb.ISSUE_SEVERITY_MEDIUM and made.created_at.seconds > 0
    got = await quality.GetRule(Q.GetRuleRequest(rule_id=made.rule_id), metadata=md)
    assert got.rule == made

    changed = await quality.UpdateRule(
        Q.UpdateRuleRequest(
            rule_id=made.rule_id,
            rule=Q.Rule(threshold=60, severity=common_pb.ISSUE_SEVERITY_HIGH),
            update_mask=FieldMask(paths=["threshold", "severity"]),
        ),
        metadata=md,
    )
    assert (changed.rule.threshold, changed.rule.severity) == (60, common_pb.ISSUE_SEVERITY_HIGH)
    assert changed.rule.qualified_name_prefix == "pg://m/"
    listed = await quality.ListRules(Q.ListRulesRequest(type=Q.RULE_TYPE_ORPHANED), metadata=md)
    assert [r.rule_id for r in listed.rules] == [made.rule_id]

    # another tenant sees none of it
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await quality.GetRule(Q.GetRuleRequest(rule_id=made.rule_id), metadata=other_md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    bad = [
        (Q.Rule(qualified_name_prefix="x"), "rule.type"),
        (Q.Rule(type=99), "rule.type"),
        (Q.Rule(type=Q.RULE_TYPE_UNUSED, threshold=-1), "rule.threshold"),
        (Q.Rule(type=Q.RULE_TYPE_UNUSED, threshold=float("nan")), "rule.threshold"),
        (Q.Rule(type=Q.RULE_TYPE_UNUSED, asset_id="nope"), "rule.asset_id"),
        (
            Q.Rule(type=Q.RULE_TYPE_UNUSED, asset_id="0" * 32, qualified_name_prefix="x"),
            "rule.qualified_name_prefix",
        ),
    ]
    for rule, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await quality.CreateRule(Q.CreateRuleRequest(rule=rule), metadata=md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(status_of(err.value)), (rule, field)

    now = datetime.now(UTC)
    usage = [
        Q.Usage(window_start=ts(now - timedelta(hours=1)), window_end=ts(now)),
        Q.Usage(qualified_name="q", window_start=ts(now), window_end=ts(now - timedelta(hours=1))),
        Q.Usage(qualified_name="q", window_start=ts(now - timedelta(days=40)), window_end=ts(now)),
        Q.Usage(
            qualified_name="q",
            window_start=ts(now - timedelta(hours=1)),
            window_end=ts(now),
            query_count=-1,
        ),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await quality.RecordUsage(Q.RecordUsageRequest(usage=usage), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(status_of(err.value))) == {
        "usage[0]",
        "usage[1].window_end",
        "usage[2].window_end",
        "usage[3]",
    }
