"""The QualityStore port (core/ports.py) on its one backend, Postgres, in a database of its
own (the session's Lily runs a schedule on the shared one, which would claim these rules):
the lease that lets one instance at a time pass over a rule, compare-and-set firings, and
usage windows recorded over."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest_asyncio

from core.domain.quality import Firing, Rule, RuleType, UsageWindow
from core.postgres import create_pool, migrate
from core.quality.store import PostgresQualityStore

DATABASE = "lily_quality_contract"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest_asyncio.fixture(scope="module")
async def store(stack: tuple[str, str]) -> AsyncIterator[PostgresQualityStore]:
    admin = await asyncpg.connect(stack[0])
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    dsn = urllib.parse.urlsplit(stack[0])._replace(path=f"/{DATABASE}").geturl()
    pool = await create_pool(dsn, min_size=1, max_size=8)
    await migrate(pool)
    await pool.execute(
        "INSERT INTO tenants (tenant_id, isolation, state) VALUES ('q', 'SHARED', 'READY')"
    )
    yield PostgresQualityStore(pool)
    await pool.close()


def _rule(**fields: object) -> Rule:
    return Rule(
        "q",
        uuid.uuid4().hex,
        RuleType.ORPHANED,
        created_at=NOW,
        updated_at=NOW,
        **fields,  # type: ignore[arg-type]
    )


async def test_one_owner_at_a_time_holds_a_due_rule(store):
    rule = _rule()
    await store.create_rule(rule)  # due at once
    claims = await asyncio.gather(*(store.claim_due(f"owner-{i}", 30.0, 10) for i in range(4)))
    holders = [i for i, got in enumerate(claims) if rule.rule_id in {r.rule_id for r in got}]
    assert len(holders) == 1
    owner = f"owner-{holders[0]}"
    assert await store.claim_due("late", 30.0, 10) == []  # held

    # a finished pass is not due again until its next time
    await store.finish("not-the-owner", "q", rule.rule_id, NOW, NOW)  # ignored: not theirs
    assert await store.claim_due("late", 30.0, 10) == []
    await store.finish(owner, "q", rule.rule_id, NOW, NOW + timedelta(hours=1))
    assert await store.claim_due("late", 30.0, 10) == []
    assert (await store.get_rule("q", rule.rule_id)).evaluated_at == NOW

    # a changed rule is due at once
    await store.update_rule(rule)
    assert [r.rule_id for r in await store.claim_due("late", 30.0, 10)] == [rule.rule_id]


async def test_a_lapsed_lease_is_claimed_by_another(store):
    rule = _rule()
    await store.create_rule(rule)
    assert [r.rule_id for r in await store.claim_due("dies", 0.2, 10)] == [rule.rule_id]
    assert await store.claim_due("other", 30.0, 10) == []
    await asyncio.sleep(0.4)
    assert [r.rule_id for r in await store.claim_due("other", 30.0, 10)] == [rule.rule_id]
    # the dead owner's finish no longer counts
    await store.finish("dies", "q", rule.rule_id, NOW, NOW + timedelta(hours=1))
    assert await store.claim_due("third", 30.0, 10) == []  # still other's


async def test_firings_move_only_from_the_state_they_were_read_in(store):
    rule = _rule()
    await store.create_rule(rule)
    opened = Firing(1, True, False)
    assert await store.set_firing("q", rule.rule_id, "a" * 32, None, opened)
    assert not await store.set_firing("q", rule.rule_id, "a" * 32, None, opened)  # exists
    synced = Firing(1, True, True)
    assert await store.set_firing("q", rule.rule_id, "a" * 32, opened, synced)
    assert not await store.set_firing("q", rule.rule_id, "a" * 32, opened, synced)  # moved
    assert await store.firings("q", rule.rule_id, ["a" * 32, "b" * 32]) == {"a" * 32: synced}
    assert await store.firings("q", rule.rule_id) == {"a" * 32: synced}  # open
    closed = Firing(1, False, True)
    assert await store.set_firing("q", rule.rule_id, "a" * 32, synced, closed)
    assert await store.firings("q", rule.rule_id) == {}  # neither open nor unsynced

    await store.delete_rule("q", rule.rule_id)  # its firings go with it
    assert await store.firings("q", rule.rule_id, ["a" * 32]) == {}
    assert not await store.set_firing("q", rule.rule_id, "b" * 32, None, opened)


async def test_usage_windows_are_recorded_over_and_summed_by_rate(store):
    a = "c" * 32
    day = NOW - timedelta(days=10)

    def w(d: int, count: int) -> UsageWindow:
        start = day + timedelta(days=d)
        return UsageWindow(a, start, start + timedelta(days=1), count, 2)

    await store.record_usage("q", [w(d, 100) for d in range(8)])
    await store.record_usage("q", [w(8, 0), w(8, 40)])  # the same window twice: the last
    facts = (await store.usage_facts("q", [a, "d" * 32]))[a]
    assert facts.window == w(8, 40)
    assert facts.trailing_rate is not None
    assert abs(facts.trailing_rate - 100 / 86400) < 1e-9  # the 7 windows before it
    assert facts.last_used == w(8, 40).end
    assert await store.usage_facts("q", ["d" * 32]) == {}
    listed = await store.usage("q", a, day + timedelta(days=6))
    assert [u.query_count for u in listed] == [40, 100, 100]  # newest first

    await store.record_usage("q", [w(8, 0)])
    facts = (await store.usage_facts("q", [a]))[a]
    assert facts.last_used == w(7, 100).end  # a window of no queries is no use


async def test_a_runs_reads_add_to_its_window_once(store):
    a = "e" * 32
    hour = NOW.replace(minute=0, second=0) - timedelta(hours=3)

    def run(run_id: str, count: int = 1) -> UsageWindow:
        return UsageWindow(a, hour, hour + timedelta(hours=1), count, 0, run_id)

    await store.record_usage("q", [run("r1"), run("r2"), run("r1")])  # r1 twice in one call
    await store.record_usage("q", [run("r1"), run("r3", 5)])  # r1 again: counted already
    [window] = await store.usage("q", a, hour)
    assert window.query_count == 1 + 1 + 5
    # a window recorded without a run replaces the counts (a collector's total)
    await store.record_usage("q", [UsageWindow(a, hour, hour + timedelta(hours=1), 40)])
    [window] = await store.usage("q", a, hour)
    assert window.query_count == 40
