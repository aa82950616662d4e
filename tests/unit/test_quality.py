"""The data-quality rules as pure functions (core/domain/quality.py): what each rule type
finds, and that a firing raises and resolves each issue once whatever the order of
evaluations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.domain.model import Asset, AssetType, Tag, TagSource
from core.domain.quality import (
    Facts,
    Firing,
    Rule,
    RuleType,
    UsageWindow,
    check,
    external_id,
    transition,
)

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
RESTRICTED = ("PII", "GDPR")


def _asset(
    age_days: float = 60,
    deleted: bool = False,
    kind: AssetType = AssetType.TABLE,
    tags: tuple[Tag, ...] = (),
) -> Asset:
    born = NOW - timedelta(days=age_days)
    return Asset(
        "t", "a" * 32, "pg://h/db/s/t", kind, 1, born, born, born, tags=tags, is_deleted=deleted
    )


def _rule(kind: RuleType, threshold: float = 0.0, **fields: object) -> Rule:
    return Rule("t", "r" * 32, kind, threshold=threshold, **fields)  # type: ignore[arg-type]


def _window(count: int, hours: float = 24) -> UsageWindow:
    return UsageWindow("a" * 32, NOW - timedelta(hours=hours), NOW, count)


def test_query_change_compares_the_window_with_the_week_before():
    rule = _rule(RuleType.QUERY_CHANGE)  # 15% by default
    per_day = 100 / 86400  # the trailing rate, in queries per second
    assert (
        check(rule, Facts(_asset(), window=_window(114), trailing_rate=per_day), NOW, ()).holds
        is False
    )
    rose = check(rule, Facts(_asset(), window=_window(120), trailing_rate=per_day), NOW, ())
    assert rose.holds and "rose 20%" in rose.description
    fell = check(rule, Facts(_asset(), window=_window(50), trailing_rate=per_day), NOW, ())
    assert fell.holds and "fell 50%" in fell.description
    # an hour's window compares by its rate: 5 in an hour is 120 a day
    hourly = check(
        rule, Facts(_asset(), window=_window(5, hours=1), trailing_rate=per_day), NOW, ()
    )
    assert hourly.holds and "rose 20%" in hourly.description
    # no history: nothing to compare with; none before and some now: a rise
    assert check(rule, Facts(_asset(), window=_window(50)), NOW, ()).holds is False
    assert check(rule, Facts(_asset(), window=_window(5), trailing_rate=0.0), NOW, ()).holds
    assert (
        check(
            _rule(RuleType.QUERY_CHANGE, 60),
            Facts(_asset(), window=_window(50), trailing_rate=per_day),
            NOW,
            (),
        ).holds
        is False
    )


def test_unused_and_orphaned_need_age_idleness_and_for_orphans_nothing_downstream():
    unused, orphaned = _rule(RuleType.UNUSED, 30), _rule(RuleType.ORPHANED, 30)
    old_use = NOW - timedelta(days=31)
    assert check(unused, Facts(_asset(), last_used=old_use), NOW, ()).holds
    assert check(unused, Facts(_asset()), NOW, ()).holds  # never used at all
    assert not check(unused, Facts(_asset(age_days=10)), NOW, ()).holds  # too young to tell
    assert not check(unused, Facts(_asset(), last_used=NOW - timedelta(days=2)), NOW, ()).holds
    assert not check(unused, Facts(_asset(deleted=True)), NOW, ()).holds
    assert check(orphaned, Facts(_asset(), last_used=old_use), NOW, ()).holds
    assert not check(orphaned, Facts(_asset(), live_downstream=1, last_used=old_use), NOW, ()).holds


def test_deleted_with_downstream_and_breaking_schema_changes():
    deleted = _rule(RuleType.DELETED_WITH_DOWNSTREAM)
    assert check(deleted, Facts(_asset(deleted=True), live_downstream=2), NOW, ()).holds
    assert not check(deleted, Facts(_asset(deleted=True)), NOW, ()).holds
    assert not check(deleted, Facts(_asset(), live_downstream=2), NOW, ()).holds

    breaking = _rule(RuleType.BREAKING_SCHEMA_CHANGE)  # "used": downstream, or queried in 7 days
    pii = (Tag("PII", TagSource.USER),)
    column = _asset(kind=AssetType.COLUMN, tags=pii)
    assert check(breaking, Facts(column, live_downstream=1), NOW, RESTRICTED).holds
    recent = NOW - timedelta(days=1)
    assert check(breaking, Facts(column, last_used=recent), NOW, RESTRICTED).holds
    assert not check(
        breaking, Facts(column, last_used=NOW - timedelta(days=9)), NOW, RESTRICTED
    ).holds
    assert not check(breaking, Facts(column, live_downstream=1), NOW, ()).holds  # not restricted
    gone = _asset(kind=AssetType.COLUMN, deleted=True)
    assert check(breaking, Facts(gone, live_downstream=1), NOW, RESTRICTED).holds
    table = _asset(tags=pii)
    assert not check(breaking, Facts(table, live_downstream=1), NOW, RESTRICTED).holds
    # a restricted tag that only propagated here is not this column's change
    inherited = _asset(kind=AssetType.COLUMN, tags=(Tag("PII", TagSource.PROPAGATED),))
    assert not check(breaking, Facts(inherited, live_downstream=1), NOW, RESTRICTED).holds


def test_a_rule_covers_its_asset_or_its_prefix():
    assert _rule(RuleType.UNUSED, asset_id="b" * 32).covers("b" * 32, "x")
    assert not _rule(RuleType.UNUSED, asset_id="b" * 32).covers("c" * 32, "x")
    assert _rule(RuleType.UNUSED, qualified_name_prefix="pg://h/").covers("c" * 32, "pg://h/t")
    assert not _rule(RuleType.UNUSED, qualified_name_prefix="pg://h/").covers("c" * 32, "pg://x")
    assert _rule(RuleType.UNUSED).covers("c" * 32, "anything")


@given(st.lists(st.booleans(), max_size=30), st.lists(st.booleans(), max_size=30))
def test_each_firing_raises_one_issue_and_resolves_it_once(findings, crashes):
    """Evaluations in any order, with a crash (the issue write lost) after any transition:
    the issues written are one per firing, each raised before it is resolved, and the state
    ends synced with the last finding."""
    state: Firing | None = None
    written: list[tuple[str, str]] = []
    crash = iter(crashes)
    for holds in findings:
        while True:
            after = transition(state, holds)
            if after is None:
                break
            state = after  # step 1, written
            if next(crash, False):
                continue  # died before the issue write; evaluated again
            written.append(
                (external_id("r", "a", after.count), "open" if after.open else "resolved")
            )
            state = Firing(after.count, after.open, True)  # step 3
    raised = [eid for eid, what in written if what == "open"]
    resolved = [eid for eid, what in written if what == "resolved"]
    assert len(set(raised)) == len(raised) and len(set(resolved)) == len(resolved)
    assert set(resolved) <= set(raised)
    fired = sum(
        1 for before, now in zip([False, *findings], findings, strict=False) if now and not before
    )
    assert len(raised) == fired
    assert state is None or (state.synced and state.open == findings[-1])
