"""The data-quality engine: evaluates a tenant's rules on assets and keeps one issue open per
rule and asset while the rule's condition holds.

Evaluation (`evaluate`) gathers the facts of a batch of assets at once (their live downstream
assets from the lineage graph and the asset store, their usage from the quality store), asks
core.domain.quality.check of each rule that covers each asset, and moves the firing:

1. the firing's next state is written, not yet synced, over the state it was read in (compare
   and set: if another evaluator moved it first, this one leaves it to them);
2. the issue is raised (external id `<rule>/<asset>/<n>`: the n-th firing) or resolved, both
   idempotent;
3. the firing is marked synced.

A crash or a redelivery between the steps finds the firing not synced and does steps 2-3
again: each firing raises exactly one issue, whoever evaluates and however often.

It is driven two ways: by the change events of a cell (core/workers/quality.py: usage
recorded, assets deleted, tagged or restored, lineage edges changed; one asset and the assets
upstream of it at a time), and by the schedule (`run`): each rule, when due, is leased by one
instance, which evaluates every asset it covers a page at a time, resolves the firings of
assets it no longer covers, and sets the rule's next pass."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from core import metrics
from core.domain.errors import Unavailable
from core.domain.model import Asset, Issue, IssueStatus, SearchQuery, WriteContext
from core.domain.quality import (
    ISSUE_TYPE,
    SOURCE,
    Facts,
    Finding,
    Firing,
    Rule,
    RuleType,
    check,
    external_id,
    transition,
)
from core.metadata.service import MetadataService
from core.ports import AssetStore, LineageGraph, QualityStore, UsageFacts

log = logging.getLogger(__name__)

ACTOR = "lily-quality"
PAGE = 1000  # assets per step of a pass
RULES_TTL = 1.0  # seconds a tenant's rules are cached (changes here forget them at once)
LEASE = 20.0  # seconds a pass holds its rule; renewed every LEASE / 3 while it runs
IDLE = 5.0  # seconds between looks for due rules when none was due

_DOWNSTREAM = frozenset(
    {RuleType.ORPHANED, RuleType.DELETED_WITH_DOWNSTREAM, RuleType.BREAKING_SCHEMA_CHANGE}
)
_USAGE = frozenset(
    {RuleType.QUERY_CHANGE, RuleType.UNUSED, RuleType.ORPHANED, RuleType.BREAKING_SCHEMA_CHANGE}
)


class Place(Protocol):
    """Where a tenant's assets are (a core.cells.Cell)."""

    store: AssetStore
    graph: LineageGraph
    metadata: MetadataService


@dataclass
class Counts:
    evaluated: int = 0
    raised: int = 0
    resolved: int = 0

    def add(self, other: Counts) -> None:
        self.evaluated += other.evaluated
        self.raised += other.raised
        self.resolved += other.resolved


class QualityEngine:
    def __init__(
        self,
        store: QualityStore,
        place_of: Callable[[str], Awaitable[Place]],
        *,
        restricted: Collection[str],
        every: float,
    ) -> None:
        self.store = store
        self._place_of = place_of
        self._restricted = frozenset(restricted)
        self._every = timedelta(seconds=every)
        self._owner = f"lily-{uuid.uuid4().hex[:12]}"
        self._rules: dict[str, tuple[float, list[Rule]]] = {}
        # Testing hook (LILY_TEST_EXIT_AFTER_FIRING=1): die between a firing and its issue.
        self._exit_after_firing = os.environ.get("LILY_TEST_EXIT_AFTER_FIRING") == "1"

    # -- rules, cached per tenant

    async def rules_of(self, tenant_id: str) -> list[Rule]:
        now = asyncio.get_running_loop().time()
        cached = self._rules.get(tenant_id)
        if cached is not None and now - cached[0] < RULES_TTL:
            return cached[1]
        rules = [r for r in await self.store.list_rules(tenant_id) if not r.disabled]
        self._rules[tenant_id] = (now, rules)
        return rules

    def forget(self, tenant_id: str) -> None:
        self._rules.pop(tenant_id, None)

    # -- evaluation

    async def on_assets(
        self, tenant_id: str, asset_ids: Collection[str], changed: Collection[str] = ()
    ) -> Counts:
        """Evaluates every rule of the tenant that covers these assets and the `changed` ones,
        and the assets upstream of those (whose downstream they are)."""
        rules = await self.rules_of(tenant_id)
        if not rules or not (asset_ids or changed):
            return Counts()
        place = await self._place_of(tenant_id)
        ids = set(asset_ids) | set(changed)
        if changed:
            upstream = await place.graph.edges_at(tenant_id, list(changed), forward=False)
            ids |= {e.upstream_id for e in upstream}
        assets = await place.store.get_many(tenant_id, sorted(ids))
        return await self.evaluate(place, rules, list(assets.values()), datetime.now(UTC))

    async def evaluate(
        self, place: Place, rules: Sequence[Rule], assets: Sequence[Asset], now: datetime
    ) -> Counts:
        """Applies each rule to the assets it covers."""
        counts = Counts()
        todo = [(r, [a for a in assets if r.covers(a.asset_id, a.qualified_name)]) for r in rules]
        todo = [(r, covered) for r, covered in todo if covered and not r.disabled]
        if not todo:
            return counts
        tenant_id = todo[0][0].tenant_id
        types = {r.type for r, _ in todo}
        ids = sorted({a.asset_id for _, covered in todo for a in covered})
        downstream = (
            await self._live_downstream(place, tenant_id, ids) if types & _DOWNSTREAM else {}
        )
        usage = await self.store.usage_facts(tenant_id, ids) if types & _USAGE else {}
        for rule, covered in todo:
            firings = await self.store.firings(
                tenant_id, rule.rule_id, [a.asset_id for a in covered]
            )
            for asset in covered:
                u = usage.get(asset.asset_id, UsageFacts())
                facts = Facts(
                    asset,
                    downstream.get(asset.asset_id, 0),
                    u.last_used,
                    u.window,
                    u.trailing_rate,
                )
                finding = check(rule, facts, now, self._restricted)
                counts.evaluated += 1
                await self._move(
                    place, rule, asset.asset_id, firings.get(asset.asset_id), finding, counts
                )
        return counts

    async def _live_downstream(
        self, place: Place, tenant_id: str, asset_ids: Sequence[str]
    ) -> dict[str, int]:
        """How many assets downstream of each asset exist and are not deleted."""
        edges = await place.graph.edges_at(tenant_id, asset_ids, forward=True)
        if not edges:
            return {}
        others = await place.store.get_many(tenant_id, sorted({e.downstream_id for e in edges}))
        live: dict[str, set[str]] = {}
        for e in edges:
            other = others.get(e.downstream_id)
            if other is not None and not other.is_deleted:
                live.setdefault(e.upstream_id, set()).add(e.downstream_id)
        return {k: len(v) for k, v in live.items()}

    async def _move(
        self,
        place: Place,
        rule: Rule,
        asset_id: str,
        before: Firing | None,
        finding: Finding,
        counts: Counts,
    ) -> None:
        after = transition(before, finding.holds)
        if after is None:
            return
        tenant_id = rule.tenant_id
        if after != before and not await self.store.set_firing(
            tenant_id, rule.rule_id, asset_id, before, after
        ):
            return  # another evaluator moved it first
        if self._exit_after_firing:
            log.warning("exiting after a firing, before its issue (LILY_TEST_EXIT_AFTER_FIRING)")
            os._exit(70)
        ctx = WriteContext(tenant_id, ACTOR, "quality", datetime.now(UTC))
        eid = external_id(rule.rule_id, asset_id, after.count)
        if after.open:
            issue = Issue(
                tenant_id,
                "",
                asset_id,
                SOURCE,
                eid,
                type=ISSUE_TYPE[rule.type],
                severity=rule.severity,
                status=IssueStatus.OPEN,
                title=finding.title[:500],
                description=f"{finding.description} (rule {rule.rule_id})"[:4000],
            )
            await place.metadata.raise_issue(ctx, asset_id, issue)
            counts.raised += 1
        else:
            await place.metadata.resolve_issue(ctx, asset_id, SOURCE, eid)
            counts.resolved += 1
        metrics.QUALITY_ISSUES.labels(
            ISSUE_TYPE[rule.type], "raised" if after.open else "resolved"
        ).inc()
        await self.store.set_firing(
            tenant_id, rule.rule_id, asset_id, after, replace(after, synced=True)
        )

    # -- passes

    async def sweep(self, rule: Rule, renew: Callable[[], Awaitable[None]] | None = None) -> Counts:
        """Evaluates the rule on every asset it covers, and resolves its firings on assets it
        no longer covers (or that are gone)."""
        counts = Counts()
        place = await self._place_of(rule.tenant_id)
        live = await self.store.firings(rule.tenant_id, rule.rule_id)
        async for assets in _pages(place.store, rule):
            now = datetime.now(UTC)
            counts.add(await self.evaluate(place, [rule], assets, now))
            for a in assets:
                live.pop(a.asset_id, None)
            if renew is not None:
                await renew()
        for asset_id, firing in live.items():
            await self._move(place, rule, asset_id, firing, Finding(False), counts)
        return counts

    async def retire(self, rule: Rule) -> int:
        """Resolves every issue the rule has open (before it is deleted)."""
        counts = Counts()
        place = await self._place_of(rule.tenant_id)
        for asset_id, firing in (await self.store.firings(rule.tenant_id, rule.rule_id)).items():
            await self._move(place, rule, asset_id, firing, Finding(False), counts)
        return counts.resolved

    async def run(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """The schedule: claims due rules (a lease: one instance at a time) and passes over
        each, until cancelled."""
        while not stopping():
            try:
                due = await self.store.claim_due(self._owner, LEASE, 4)
            except Unavailable as exc:
                log.warning("quality schedule: %s; trying again", exc)
                due = []
            for rule in due:
                try:
                    await self._pass(rule)
                except Exception:  # one rule's failure must not stop the schedule
                    log.exception("quality pass of rule %s failed", rule.rule_id)
            if not due:
                await asyncio.sleep(IDLE)

    async def _pass(self, rule: Rule) -> None:
        started = datetime.now(UTC)
        last = asyncio.get_running_loop().time()
        key = [(rule.tenant_id, rule.rule_id)]

        async def renew() -> None:
            nonlocal last
            if asyncio.get_running_loop().time() - last > LEASE / 3:
                await self.store.renew(self._owner, key, LEASE)
                last = asyncio.get_running_loop().time()

        try:
            counts = await self.sweep(rule, renew)
        except Unavailable as exc:
            log.warning("quality pass of rule %s: %s; again later", rule.rule_id, exc)
            with contextlib.suppress(Unavailable):
                await self.store.finish(
                    self._owner,
                    rule.tenant_id,
                    rule.rule_id,
                    rule.evaluated_at or started,
                    started + timedelta(seconds=30),
                )
            return
        log.info(
            "quality pass of rule %s: %d assets, %d issues raised, %d resolved in %.1f s",
            rule.rule_id,
            counts.evaluated,
            counts.raised,
            counts.resolved,
            (datetime.now(UTC) - started).total_seconds(),
            extra={"tenant_id": rule.tenant_id},
        )
        await self.store.finish(
            self._owner, rule.tenant_id, rule.rule_id, started, started + self._every
        )


async def _pages(store: AssetStore, rule: Rule) -> AsyncIterator[list[Asset]]:
    """The assets a rule covers, a page at a time (deleted ones too)."""
    if rule.asset_id:
        asset = await store.get(rule.tenant_id, rule.asset_id)
        yield [] if asset is None else [asset]
        return
    query = SearchQuery(qualified_name_prefix=rule.qualified_name_prefix, include_deleted=True)
    cursor: str | None = None
    while True:
        assets, cursor = await store.search(rule.tenant_id, query, cursor, PAGE)
        yield assets
        if cursor is None:
            return
