"""Data-quality rules: what each rule type looks for, as pure functions of an asset's facts.

A rule covers one asset or every asset under a qualified-name prefix. For an asset it covers,
`check` says whether its condition holds now (a Finding that holds, with a title and why) or
not (one that does not: an issue it raised before is resolved). The engine
(core/quality/engine.py) gathers the facts, a page of assets at a time or one asset as an
event arrives, and keeps one issue open per rule and asset while the condition holds
(`transition`).

Usage is compared as a rate (queries per second of the window), so windows of any length
compare: for equal windows that is the average query count of the windows before it."""

from __future__ import annotations

import enum
from collections.abc import Collection
from datetime import datetime, timedelta

from core.domain.model import Asset, AssetType, IssueSeverity, TagSource, value

SOURCE = "lily_dq"  # the source of the issues rules raise
TRAILING = timedelta(days=7)  # QUERY_CHANGE compares a window with the week before it
MAX_WINDOW = timedelta(days=31)
FIELD_TYPES = frozenset({AssetType.COLUMN, AssetType.BI_FIELD})


class RuleType(enum.IntEnum):
    """Mirrors lily.v1.RuleType (same numbers)."""

    UNSPECIFIED = 0
    QUERY_CHANGE = 1
    UNUSED = 2
    ORPHANED = 3
    DELETED_WITH_DOWNSTREAM = 4
    BREAKING_SCHEMA_CHANGE = 5


# threshold 0 means: percent for QUERY_CHANGE, days for the others that read it
DEFAULT_THRESHOLD = {
    RuleType.QUERY_CHANGE: 15.0,
    RuleType.UNUSED: 30.0,
    RuleType.ORPHANED: 30.0,
    RuleType.BREAKING_SCHEMA_CHANGE: 7.0,
}
ISSUE_TYPE = {
    RuleType.QUERY_CHANGE: "query_change",
    RuleType.UNUSED: "unused",
    RuleType.ORPHANED: "orphaned",
    RuleType.DELETED_WITH_DOWNSTREAM: "deleted_with_downstream",
    RuleType.BREAKING_SCHEMA_CHANGE: "breaking_schema_change",
}
# Rules whose condition moves with time alone (evaluated on the schedule); the others move
# with events (and the schedule catches what an event missed).
TIMED = frozenset({RuleType.UNUSED, RuleType.ORPHANED})


@value
class Rule:
    tenant_id: str
    rule_id: str
    type: RuleType
    asset_id: str = ""
    qualified_name_prefix: str = ""
    threshold: float = 0.0
    severity: IssueSeverity = IssueSeverity.MEDIUM
    disabled: bool = False
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    evaluated_at: datetime | None = None

    @property
    def limit(self) -> float:
        """The threshold, or the type's default."""
        return self.threshold or DEFAULT_THRESHOLD.get(self.type, 0.0)

    def covers(self, asset_id: str, qualified_name: str) -> bool:
        if self.asset_id:
            return asset_id == self.asset_id
        return qualified_name.startswith(self.qualified_name_prefix)


@value
class UsageWindow:
    asset_id: str
    start: datetime
    end: datetime
    query_count: int
    distinct_users: int = 0
    run_id: str = ""  # a run's reads add to the window, once per run (see RecordUsage)

    @property
    def rate(self) -> float:
        return self.query_count / max((self.end - self.start).total_seconds(), 1.0)


@value
class Facts:
    """What the rules need to know of one asset."""

    asset: Asset
    # Assets downstream of it in lineage that are not deleted.
    live_downstream: int = 0
    # The end of its last window with any queries.
    last_used: datetime | None = None
    # Its newest usage window, and the rate of the windows in the week before it (None: none).
    window: UsageWindow | None = None
    trailing_rate: float | None = None


@value
class Finding:
    holds: bool
    title: str = ""
    description: str = ""


CLEAR = Finding(False)


def _idle(facts: Facts, days: float, now: datetime) -> str | None:
    """Why the asset counts as unused for `days` (None: it does not)."""
    span = timedelta(days=days)
    created = facts.asset.created_at
    if facts.asset.is_deleted or now - created < span:
        return None
    if facts.last_used is None:
        return f"no recorded queries in the {days:g} days since it was created"
    if now - facts.last_used < span:
        return None
    return f"no queries since {facts.last_used:%Y-%m-%d %H:%M} UTC ({days:g} days or more)"


def _query_change(facts: Facts, percent: float) -> Finding:
    window, trailing = facts.window, facts.trailing_rate
    if window is None or trailing is None:
        return CLEAR
    if trailing == 0:
        if window.rate == 0:
            return CLEAR
        moved = "rose from none"
    else:
        change = (window.rate - trailing) / trailing * 100
        if abs(change) <= percent:
            return CLEAR
        moved = f"{'rose' if change > 0 else 'fell'} {abs(change):.0f}%"
    return Finding(
        True,
        f"Queries {moved.split(' ')[0]} sharply on {_name(facts.asset)}",
        f"{window.query_count} queries from {window.start:%Y-%m-%d %H:%M} to "
        f"{window.end:%Y-%m-%d %H:%M} UTC: the rate {moved} against the 7 days before "
        f"(threshold {percent:g}%).",
    )


def check(rule: Rule, facts: Facts, now: datetime, restricted: Collection[str]) -> Finding:
    """Whether the rule's condition holds for the asset now."""
    asset = facts.asset
    kind = rule.type
    if kind == RuleType.QUERY_CHANGE:
        return CLEAR if asset.is_deleted else _query_change(facts, rule.limit)
    if kind in (RuleType.UNUSED, RuleType.ORPHANED):
        idle = _idle(facts, rule.limit, now)
        if idle is None or (kind == RuleType.ORPHANED and facts.live_downstream):
            return CLEAR
        what = "orphaned" if kind == RuleType.ORPHANED else "unused"
        also = "; nothing downstream depends on it" if kind == RuleType.ORPHANED else ""
        return Finding(True, f"{_name(asset)} is {what}", f"{idle}{also}.")
    if kind == RuleType.DELETED_WITH_DOWNSTREAM:
        if not asset.is_deleted or not facts.live_downstream:
            return CLEAR
        return Finding(
            True,
            f"{_name(asset)} was deleted but is still used downstream",
            f"{facts.live_downstream} asset(s) downstream in lineage still depend on it.",
        )
    if kind == RuleType.BREAKING_SCHEMA_CHANGE:
        return _breaking(rule, facts, now, restricted)
    return CLEAR


def _breaking(rule: Rule, facts: Facts, now: datetime, restricted: Collection[str]) -> Finding:
    asset = facts.asset
    if asset.asset_type not in FIELD_TYPES:
        return CLEAR
    own = {t.name for t in asset.tags if t.source != TagSource.PROPAGATED}
    closed = sorted(set(restricted) & own)  # (a tag it inherited is not its own change)
    if not asset.is_deleted and not closed:
        return CLEAR
    recent = facts.last_used is not None and now - facts.last_used < timedelta(days=rule.limit)
    if not facts.live_downstream and not recent:
        return CLEAR
    change = "removed" if asset.is_deleted else f"restricted ({', '.join(closed)})"
    users = []
    if facts.live_downstream:
        users.append(f"{facts.live_downstream} asset(s) downstream in lineage")
    if recent:
        users.append(f"queries in the last {rule.limit:g} days")
    return Finding(
        True,
        f"{_name(asset)} was {change.split(' ')[0]} while still in use",
        f"The {asset.asset_type.name.lower().replace('_', ' ')} was {change}, but "
        f"{' and '.join(users)} still use it.",
    )


def _name(asset: Asset) -> str:
    return asset.name or asset.qualified_name


# -- one issue per firing ------------------------------------------------------------------


@value
class Firing:
    """The state of a rule on one asset: its `count`-th firing, whether that is open, and
    whether the issue already says so (`synced`: False while the issue still has to be
    raised or resolved, e.g. after a crash between the two writes)."""

    count: int = 0
    open: bool = False
    synced: bool = True


def transition(firing: Firing | None, holds: bool) -> Firing | None:
    """The next state of a firing for what the rule found, or None when nothing is to do.
    Raising or resolving an issue is idempotent (its external id names the firing), so a
    state that is not synced is written again until the issue write is confirmed."""
    now = firing or Firing()
    if holds and not now.open:
        return Firing(now.count + 1, True, False)
    if not holds and now.open:
        return Firing(now.count, False, False)
    if not now.synced:
        return now
    return None


def external_id(rule_id: str, asset_id: str, count: int) -> str:
    return f"{rule_id}/{asset_id}/{count}"
