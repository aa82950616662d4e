"""AssetStore contract: what core.ports.AssetStore promises, on every backend."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from core.domain import rules
from core.domain.model import (
    AssetDraft,
    AssetType,
    JobCounts,
    Outcome,
    PropagationJob,
    PropagationState,
    SearchQuery,
    Tag,
    TagAssignment,
    TagSource,
    WriteContext,
)
from core.domain.rules import Plan
from core.metadata.ingest import ingest_plan
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
    found, _ = await asset_store.search(
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
        found, _ = await asset_store.search(tenant, SearchQuery(owner=owner), None, 10)
        assert [a.qualified_name for a in found] == ["pg://lists/t"], owner
    found, _ = await asset_store.search(tenant, SearchQuery(tag="tag3"), None, 10)
    assert [a.qualified_name for a in found] == ["pg://lists/t"]


async def _all_pages(store, tenant, query, limit):
    """Every page of a search, as names; and how many pages it took."""
    names, after, pages = [], None, 0
    while True:
        found, after = await store.search(tenant, query, after, limit)
        names += [a.qualified_name for a in found]
        pages += 1
        if after is None:
            return names, pages
        assert pages < 1000


# names chosen to trip a directory walk: a name that is also a directory, names ending with
# '/', and siblings that sort between a directory and its children ('-' < '/' < '0')
_TREE = [
    "sf://acct/db/s1/t1",
    "sf://acct/db/s1/t1/c1",
    "sf://acct/db/s1/t1/c2",
    "sf://acct/db/s1/t1-x",
    "sf://acct/db/s1/t1-x/c1",
    "sf://acct/db/s1/t10/c1",
    "sf://acct/db/s1/folder/",
    "sf://acct/db/s1/folder/a",
    "sf://acct/db/s2/t1/c1",
    "sf://acct/dbx/t/c",
    "sf://other/t/c",
]


async def test_prefix_search_lists_names_in_order_across_pages(asset_store, tenant):
    drafts = [
        _draft(qn, owners=("o1",) if i % 2 else ("o2",), data_source="snowflake")
        for i, qn in enumerate(_TREE)
    ]
    await _ingest(asset_store, tenant, drafts)
    for prefix in (
        "sf://acct/db",
        "sf://acct/db/",
        "sf://acct/db/s1/t1",
        "sf://",
        "sf://acct/db/s1/folder/",
    ):
        want = sorted(qn for qn in _TREE if qn.startswith(prefix))
        for limit in (1, 2, 3, 100):
            got, _ = await _all_pages(
                asset_store, tenant, SearchQuery(qualified_name_prefix=prefix), limit
            )
            assert got == want, (prefix, limit)
    # other filters apply inside the prefix, still in name order
    got, _ = await _all_pages(
        asset_store, tenant, SearchQuery(qualified_name_prefix="sf://acct/", owner="o1"), 2
    )
    assert got == sorted(qn for i, qn in enumerate(_TREE) if i % 2 and qn.startswith("sf://acct/"))
    got, _ = await _all_pages(
        asset_store, tenant, SearchQuery(qualified_name_prefix="sf://acct/db/s1/tz"), 5
    )
    assert got == []


async def test_indexed_search_pages_cover_every_match_once(asset_store, tenant):
    drafts = [
        _draft(
            f"pg://idx/t{i:03}",
            owners=(f"owner{i % 3}",),
            data_source="ds" + str(i % 2),
            tags=(TagAssignment("PII"),) if i % 5 == 0 else (),
        )
        for i in range(60)
    ]
    await _ingest(asset_store, tenant, drafts)
    names, pages = await _all_pages(asset_store, tenant, SearchQuery(), 7)
    assert sorted(names) == [d.qualified_name for d in drafts] and len(set(names)) == 60
    assert pages >= 60 // 7
    cases = {
        SearchQuery(owner="owner1"): {i for i in range(60) if i % 3 == 1},
        SearchQuery(tag="PII"): {i for i in range(60) if i % 5 == 0},
        SearchQuery(data_source="ds0", owner="owner0"): {i for i in range(60) if i % 6 == 0},
        SearchQuery(asset_type=AssetType.TABLE): set(),
        SearchQuery(asset_type=AssetType.COLUMN, tag="PII", data_source="ds1"): {
            i for i in range(60) if i % 10 == 5
        },
    }
    for query, want in cases.items():
        names, _ = await _all_pages(asset_store, tenant, query, 4)
        assert sorted(names) == [f"pg://idx/t{i:03}" for i in sorted(want)], query
    # another tenant sees none of it, by any route
    other = tenant + "x"
    assert (await asset_store.search(other, SearchQuery(), None, 10))[0] == []
    assert (await asset_store.search(other, SearchQuery(qualified_name_prefix="pg://"), None, 10))[
        0
    ] == []
    assert await asset_store.get_by_qualified_name(other, "pg://idx/t001") is None
    assert await asset_store.get(other, rules.asset_id_for(tenant, "pg://idx/t001")) is None


async def test_deleted_assets_are_kept_and_hidden_from_search_unless_asked(asset_store, tenant):
    await _ingest(asset_store, tenant, [_draft("pg://del/a"), _draft("pg://del/b")])
    asset_id = rules.asset_id_for(tenant, "pg://del/a")
    ctx = _ctx(tenant)

    def plan(snapshot: Snapshot) -> Plan:
        p = Plan()
        rules.delete(asset_id, snapshot.assets.get(asset_id), None, ctx, p)
        return p

    await asset_store.transact(tenant, TxRequest([asset_id]), plan)
    stored = await asset_store.get(tenant, asset_id)
    assert stored is not None and stored.is_deleted and stored.version == 2
    for query in (SearchQuery(), SearchQuery(qualified_name_prefix="pg://del/")):
        found, _ = await asset_store.search(tenant, query, None, 10)
        assert [a.qualified_name for a in found] == ["pg://del/b"]
        query_all = SearchQuery(
            qualified_name_prefix=query.qualified_name_prefix, include_deleted=True
        )
        found, _ = await asset_store.search(tenant, query_all, None, 10)
        assert sorted(a.qualified_name for a in found) == ["pg://del/a", "pg://del/b"]


async def test_older_source_events_never_overwrite_newer_ones(asset_store, tenant):
    await _ingest(asset_store, tenant, [_draft("pg://lww/a", NOW, description="new")])
    _, decisions = await _ingest(
        asset_store, tenant, [_draft("pg://lww/a", NOW - timedelta(hours=1), description="old")]
    )
    assert decisions[0].outcome == Outcome.STALE
    _, decisions = await _ingest(
        asset_store, tenant, [_draft("pg://lww/a", NOW, description="new")]
    )
    assert decisions[0].outcome == Outcome.UNCHANGED
    # an equal source time with new content is applied (the later arrival wins)
    _, decisions = await _ingest(
        asset_store, tenant, [_draft("pg://lww/a", NOW, description="newer")]
    )
    assert decisions[0].outcome == Outcome.UPDATED
    stored = await asset_store.get(tenant, rules.asset_id_for(tenant, "pg://lww/a"))
    assert (stored.description, stored.version) == ("newer", 2)


async def test_issues_list_newest_first_by_page_and_status(asset_store, tenant):
    from core.domain.model import Issue, IssueStatus

    await _ingest(asset_store, tenant, [_draft("pg://iss/t")])
    asset_id = rules.asset_id_for(tenant, "pg://iss/t")
    ctx = _ctx(tenant)
    for n in range(5):
        issue = Issue(
            tenant_id=tenant,
            issue_id="",
            asset_id=asset_id,
            source="montecarlo",
            external_id=f"inc-{n}",
            title=f"incident {n}",
            status=IssueStatus.RESOLVED if n == 2 else IssueStatus.OPEN,
            opened_at=NOW + timedelta(minutes=n),
        )
        issue_id = rules.issue_id_for(asset_id, "montecarlo", f"inc-{n}")

        def plan(snapshot: Snapshot, issue=issue, issue_id=issue_id) -> Plan:
            p = Plan()
            rules.attach_issue(
                asset_id,
                snapshot.assets.get(asset_id),
                snapshot.issues.get(issue_id),
                issue,
                ctx,
                p,
            )
            return p

        await asset_store.transact(tenant, TxRequest([asset_id], [(asset_id, issue_id)]), plan)
    seen, after = [], None
    while True:
        page = await asset_store.list_issues(tenant, asset_id, None, after, 2)
        seen += [i.title for i in page]
        if len(page) < 2:
            break
        after = (page[-1].opened_at.isoformat(), page[-1].issue_id)
    assert seen == [f"incident {n}" for n in (4, 3, 2, 1, 0)]
    open_ = await asset_store.list_issues(tenant, asset_id, IssueStatus.OPEN, None, 10)
    assert [i.title for i in open_] == [f"incident {n}" for n in (4, 3, 1, 0)]
    assert await asset_store.list_issues(tenant + "x", asset_id, None, None, 10) == []
    # GetLineage's node summaries read these for many assets at once
    other = rules.asset_id_for(tenant, "pg://iss/none")
    assert await asset_store.open_issue_counts(tenant, [asset_id, other]) == {asset_id: 4}
    assert await asset_store.open_issue_counts(tenant + "x", [asset_id]) == {}


async def test_many_assets_are_read_at_once_by_tenant(asset_store, tenant):
    await _ingest(asset_store, tenant, [_draft(f"pg://many/c{i}") for i in range(250)])
    ids = [rules.asset_id_for(tenant, f"pg://many/c{i}") for i in range(0, 250, 2)]
    missing = rules.asset_id_for(tenant, "pg://many/none")
    found = await asset_store.get_many(tenant, [*ids, missing, ids[0]])
    assert set(found) == set(ids)
    assert found[ids[3]].qualified_name == "pg://many/c6"
    assert await asset_store.get_many(tenant + "x", ids) == {}


async def test_audit_trail_pages_in_order(asset_store, tenant):
    for n in range(5):
        await _ingest(
            asset_store,
            tenant,
            [_draft("pg://aud/t", NOW + timedelta(seconds=n), description=f"v{n}")],
        )
    asset_id = rules.asset_id_for(tenant, "pg://aud/t")
    trail, after = [], 0
    while True:
        page = await asset_store.audit_trail(tenant, asset_id, after, 2)
        trail += page
        if len(page) < 2:
            break
        after = page[-1].sequence
    assert [e.asset_version for e in trail] == [1, 2, 3, 4, 5]
    assert len({e.event_id for e in trail}) == 5
    assert await asset_store.audit_trail(tenant + "x", asset_id, 0, 10) == []


async def test_events_of_a_commit_nobody_published_are_relayed_once(asset_store, tenant):
    """The outbox: a transaction's events survive its writer (here: nobody submits them),
    and the relay's poll publishes them and forgets them."""
    from core.events.outbox import OutboxRelay

    plan, _ = await _ingest(asset_store, tenant, [_draft(f"pg://ob/c{i}") for i in range(30)])
    mine = {c.event_id for c in plan.changes}
    published: list = []

    class Bus:
        async def publish(self, records):
            published.extend(records)

    outbox = asset_store if hasattr(asset_store, "relay_stale") else None
    if outbox is None:
        from core.events.outbox import PostgresOutbox

        outbox = PostgresOutbox(asset_store._pool)
    relay = OutboxRelay(outbox, Bus())
    while await relay.relay_once(older_than=0):
        pass
    assert mine <= {r.event_id for r in published}
    assert all(r.subject.startswith(f"lily.{tenant}.") for r in published if r.event_id in mine)
    before = len(published)
    await relay.relay_once(older_than=0)
    assert len(published) == before  # deleted once published


async def test_derived_state_and_tag_flags_round_trip(asset_store, tenant):
    drafts = [_draft("pg://derived/t", tags=(TagAssignment("finance", "", (), True),))]
    await _ingest(asset_store, tenant, drafts)
    asset_id = rules.asset_id_for(tenant, "pg://derived/t")
    ctx = _ctx(tenant)
    pii = Tag("PII", TagSource.PROPAGATED, "email", ("u2", "u1"))

    def plan(snapshot: Snapshot) -> Plan:
        p = Plan()
        rules.set_derived(snapshot.assets[asset_id], {"PII": pii}, ("u9", "u3"), ctx, p)
        return p

    await asset_store.transact(tenant, TxRequest([asset_id]), plan)
    stored = await asset_store.get(tenant, asset_id)
    assert stored is not None
    assert stored.unhealthy_upstream == ("u9", "u3")
    by_name = {t.name: t for t in stored.tags}
    assert by_name["finance"].propagate and not by_name["PII"].propagate
    assert by_name["PII"].upstream_asset_ids == ("u2", "u1")
    # an asset written without any derived state keeps an empty one
    await _ingest(asset_store, tenant, [_draft("pg://derived/u")])
    plain = await asset_store.get(tenant, rules.asset_id_for(tenant, "pg://derived/u"))
    assert plain is not None and plain.unhealthy_upstream == ()


async def test_propagation_jobs_are_written_whole_and_read_by_tenant(asset_store, tenant):
    job = PropagationJob(tenant, "a" * 32, "b" * 32, PropagationState.PENDING, NOW, NOW)
    await asset_store.put_propagation_job(job)
    assert await asset_store.get_propagation_job(tenant, job.job_id) == job
    done = replace(
        job,
        state=PropagationState.SUCCEEDED,
        assets_total=10_000,
        assets_done=10_000,
        assets_changed=9_999,
        requested_by="alice",
        updated_at=NOW + timedelta(seconds=3),
        finished_at=NOW + timedelta(seconds=3),
    )
    await asset_store.put_propagation_job(done)
    assert await asset_store.get_propagation_job(tenant, job.job_id) == done
    assert await asset_store.get_propagation_job(tenant + "x", job.job_id) is None
    assert await asset_store.get_propagation_job(tenant, "c" * 32) is None
