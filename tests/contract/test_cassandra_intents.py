"""The Cassandra store's commit protocol where it differs from a database transaction: a
writer that dies between its commit (the intent) and applying it. Postgres has no such
window (one transaction), so these run on Cassandra only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from core.domain import rules
from core.domain.errors import Unavailable
from core.domain.model import AssetDraft, AssetType, BulkJob, JobCounts, WriteContext
from core.domain.rules import Plan
from core.events.outbox import OutboxRelay
from core.metadata.ingest import counts_of, ingest_plan
from core.metadata.stores.cassandra import CassandraAssetStore
from core.ports import Snapshot, TxRequest

NOW = datetime.now(UTC).replace(microsecond=0)


async def _consume(store: CassandraAssetStore, tenant: str, job_id: str, key: int) -> set[int]:
    """One work message of 40 columns with dedupe key `key`, as the ingest worker applies it;
    returns the keys the store saw as fresh."""
    ctx = WriteContext(tenant_id=tenant, actor="test", action="worker", now=NOW)
    drafts = [
        AssetDraft(
            qualified_name=f"pg://crash/t/c{i}",
            asset_type=AssetType.COLUMN,
            source_event_time=NOW,
        )
        for i in range(40)
    ]
    decisions: dict[int, rules.Decision] = {}
    fresh: set[int] = set()
    base = ingest_plan([(i, d, ctx) for i, d in enumerate(drafts)], decisions)

    def only_if_fresh(snapshot: Snapshot) -> Plan:
        fresh.update(snapshot.fresh_keys)
        return base(snapshot) if snapshot.fresh_keys else Plan()

    await store.transact(
        tenant,
        TxRequest(
            [rules.asset_id_for(tenant, d.qualified_name) for d in drafts],
            dedupe_keys=[key],
            job_counts=lambda: {job_id: counts_of(decisions)} if decisions else {},
        ),
        only_if_fresh,
    )
    return fresh


async def test_a_writer_dying_after_its_commit_loses_nothing_and_counts_nothing_twice(
    cassandra_asset_store: CassandraAssetStore, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cassandra_asset_store
    job = BulkJob(tenant_id=tenant, job_id="c" * 32, created_at=NOW, updated_at=NOW)
    await store.create_job(job)
    await store.update_job(tenant, job.job_id, JobCounts(accepted=40))

    async def dies(*args: object) -> None:
        raise Unavailable("the writer died after committing")

    monkeypatch.setattr(store.intents, "apply", dies)
    with pytest.raises(Unavailable):
        await _consume(store, tenant, job.job_id, key=4096)
    monkeypatch.undo()
    assert (await store.get_job(tenant, job.job_id)).written == 0  # committed, not applied

    # The message is redelivered (its worker never acked it): the commit already holds it.
    assert await _consume(store, tenant, job.job_id, key=4096) == set()

    published: list = []

    class Bus:
        async def publish(self, records: list) -> None:
            published.extend(records)

    relay = OutboxRelay(store, Bus())
    while await relay.relay_once(older_than=0):
        pass
    stored = await store.get_job(tenant, job.job_id)
    assert (stored.accepted, stored.written) == (40, 40)
    assert len({r.event_id for r in published if r.subject.startswith(f"lily.{tenant}.")}) == 40
    found = await store.get(tenant, rules.asset_id_for(tenant, "pg://crash/t/c39"))
    assert found is not None and found.version == 1


async def test_two_writers_handed_the_same_message_at_once_apply_it_once(
    cassandra_asset_store: CassandraAssetStore, tenant: str
) -> None:
    """JetStream can hand one message to two workers at once (a first delivery that its
    fetcher picked up late, after the redelivery). Two store instances stand for two worker
    processes: one applies the message, the other is told to hold it, and once the first has
    committed it finds the message applied."""
    first = cassandra_asset_store
    second = await CassandraAssetStore.open(first.session)
    job = BulkJob(tenant_id=tenant, job_id="d" * 32, created_at=NOW, updated_at=NOW)
    await first.create_job(job)
    await first.update_job(tenant, job.job_id, JobCounts(accepted=40))

    outcomes = await asyncio.gather(
        *(_consume(store, tenant, job.job_id, key=8192) for store in (first, second)),
        return_exceptions=True,
    )
    applied = [o for o in outcomes if o == {8192}]
    held = [o for o in outcomes if isinstance(o, Unavailable)]
    assert len(applied) == 1 and len(held) == 1, outcomes
    # The holder's retry: the message is applied already, and nothing is counted twice.
    loser = (first, second)[outcomes.index(held[0])]
    assert await _consume(loser, tenant, job.job_id, key=8192) == set()
    stored = await first.get_job(tenant, job.job_id)
    assert (stored.accepted, stored.written) == (40, 40)
