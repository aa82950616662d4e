"""AssetStore contract: what core.ports.AssetStore promises, on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from core.domain import rules
from core.domain.model import AssetDraft, AssetType, JobCounts, Outcome, SearchQuery, WriteContext
from core.domain.rules import Plan
from core.metadata.service import ingest_plan
from core.ports import Snapshot, TxRequest

NOW = datetime.now(UTC).replace(microsecond=0)


def _ctx(tenant: str) -> WriteContext:
    return WriteContext(tenant_id=tenant, actor="test", action="contract", now=NOW)


async def _ingest(store, tenant, drafts, **tx):
    decisions: dict[int, rules.Decision] = {}
    ctx = _ctx(tenant)
    ids = [rules.asset_id_for(tenant, d.qualified_name) for d in drafts]
    plan = await store.transact(
        tenant,
        TxRequest(ids, **tx),
        ingest_plan([(i, d, ctx) for i, d in enumerate(drafts)], decisions),
    )
    return plan, decisions


def _draft(qn: str, t: datetime = NOW, **kw) -> AssetDraft:
    return AssetDraft(qualified_name=qn, asset_type=AssetType.COLUMN, source_event_time=t, **kw)


async def test_one_transaction_can_write_20000_assets_with_their_events(asset_store, tenant):
    plan, decisions = await _ingest(
        asset_store, tenant, [_draft(f"pg://big/c{i}") for i in range(20_000)]
    )
    assert {d.outcome for d in decisions.values()} == {Outcome.CREATED}
    assert len(plan.outbox) == len(plan.changes) == 20_000
    found = await asset_store.search(
        tenant, SearchQuery(qualified_name_prefix="pg://big/"), None, 5
    )
    assert [a.qualified_name for a in found] == sorted(f"pg://big/c{i}" for i in range(20_000))[:5]


async def test_racing_creators_of_one_asset_serialize(asset_store, tenant):
    drafts = [
        _draft("pg://race/x", NOW + timedelta(seconds=i), description=f"d{i}") for i in range(12)
    ]
    results = await asyncio.gather(*(_ingest(asset_store, tenant, [d]) for d in drafts))
    outcomes = [r[1][0].outcome for r in results]
    assert outcomes.count(Outcome.CREATED) == 1
    assert set(outcomes) <= {Outcome.CREATED, Outcome.UPDATED, Outcome.STALE}
    stored = await asset_store.get(tenant, rules.asset_id_for(tenant, "pg://race/x"))
    assert stored is not None
    written = outcomes.count(Outcome.CREATED) + outcomes.count(Outcome.UPDATED)
    assert stored.version == written  # every applied write bumped the version exactly once
    assert stored.description == "d11"  # the newest event time won
    trail = await asset_store.audit_trail(tenant, stored.asset_id, 0, 100)
    assert [e.asset_version for e in trail] == list(range(1, written + 1))


async def test_dedupe_keys_are_fresh_once_and_job_counts_commit_with_the_writes(
    asset_store, tenant
):
    from core.domain.model import BulkJob

    job = BulkJob(tenant_id=tenant, job_id="a" * 32, created_at=NOW, updated_at=NOW)
    await asset_store.create_job(job)
    seen: list[frozenset[int]] = []

    def plan(snapshot: Snapshot) -> Plan:
        seen.append(snapshot.fresh_keys)
        return Plan()

    counts = lambda: {job.job_id: JobCounts(accepted=2, written=2)}  # noqa: E731
    await asset_store.transact(tenant, TxRequest([], dedupe_keys=[7, 8], job_counts=counts), plan)
    await asset_store.transact(tenant, TxRequest([], dedupe_keys=[8, 9]), plan)
    assert seen == [frozenset({7, 8}), frozenset({9})]
    stored = await asset_store.get_job(tenant, job.job_id)
    assert (stored.accepted, stored.written, stored.closed) == (2, 2, False)
    closed = await asset_store.update_job(tenant, job.job_id, JobCounts(), close=True)
    assert closed.closed and closed.finished_at is not None
    assert await asset_store.get_job("someone-else", job.job_id) is None


async def test_list_fields_round_trip_exactly(asset_store, tenant):
    from core.domain.model import TagAssignment

    tricky = ('a"b', "back\\slash", "{brace}", "com,ma", "NULL", "  spaced  ", "ü∂", '\\"', "'")
    drafts = [
        _draft(
            "pg://lists/t",
            owners=tricky,
            business_terms=tuple(reversed(tricky)),
            tags=tuple(TagAssignment(f"tag{i}", v) for i, v in enumerate(tricky)),
            attributes={k: k for k in tricky},
        ),
    ]
    await _ingest(asset_store, tenant, drafts)
    stored = await asset_store.get(tenant, rules.asset_id_for(tenant, "pg://lists/t"))
    assert stored is not None
    assert stored.owners == tricky
    assert stored.business_terms == tuple(reversed(tricky))
    assert {(t.name, t.value) for t in stored.tags} == {
        (f"tag{i}", v) for i, v in enumerate(tricky)
    }
    assert dict(stored.attributes) == {k: k for k in tricky}
    for owner in tricky:
        found = await asset_store.search(tenant, SearchQuery(owner=owner), None, 10)
        assert [a.qualified_name for a in found] == ["pg://lists/t"], owner
    found = await asset_store.search(tenant, SearchQuery(tag="tag3"), None, 10)
    assert [a.qualified_name for a in found] == ["pg://lists/t"]
