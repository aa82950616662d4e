"""What an ingest call returns (each item's result, its refusals, a stream's summary), and the
plan that applies a batch of drafts: shared by MetadataService (strong writes) and the ingest
worker (eventual ones)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core import metrics
from core.domain import rules
from core.domain.errors import LilyError
from core.domain.model import AssetDraft, Consistency, JobCounts, Outcome, WriteContext
from core.domain.rules import Plan
from core.ports import Snapshot

log = logging.getLogger(__name__)

# A batch waiting for an ingest lane (its drafts, and its rejected count), or None: no more.
Lane = tuple[list[tuple[int, AssetDraft]], int] | None
# Drafts with their index in the call (or stream).
Drafts = Sequence[tuple[int, AssetDraft]]


def count_outcomes(outcomes: Mapping[Outcome, int], consistency: str) -> None:
    """lily_assets_ingested_total, by outcome."""
    for outcome, n in outcomes.items():
        if n:
            metrics.ASSETS.labels(outcome.name, consistency).inc(n)


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first failure in a task group, unwrapped (nested groups included)."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first


async def shielded(work: Coroutine[Any, Any, None]) -> None:
    """Runs `work` to its end even if the caller is cancelled meanwhile (a failure after the
    caller left is logged)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_failure)  # nobody else will see how it ends
        raise


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ingest: queueing failed after its caller left", exc_info=task.exception())


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    asset_id: str
    qualified_name: str
    outcome: Outcome
    consistency: Consistency
    version: int = 0
    changed_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item of an ingest that was refused (invalid, or not the caller's to write)."""

    index: int
    qualified_name: str
    error: LilyError


@dataclass(slots=True)
class StreamSummary:
    """What an ingest stream did: outcomes by count, and its refused items (the first
    `keep` of them listed)."""

    keep: int
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def refused(self, rejections: Sequence[Rejection]) -> None:
        self.rejected += len(rejections)
        self.rejections.extend(rejections[: max(self.keep - len(self.rejections), 0)])


def ingest_plan(
    drafts: Sequence[tuple[int, AssetDraft, WriteContext]], decisions: dict[int, rules.Decision]
) -> Callable[[Snapshot], Plan]:
    """The plan that applies drafts in order (a later draft of the same asset sees the earlier)."""

    def plan(snapshot: Snapshot) -> Plan:
        decisions.clear()
        current = dict(snapshot.assets)
        result = Plan()
        for index, draft, ctx in drafts:
            asset_id = rules.asset_id_for(ctx.tenant_id, draft.qualified_name)
            decision = rules.ingest(current.get(asset_id), draft, ctx, result)
            if decision.asset is not None:
                current[asset_id] = decision.asset
            decisions[index] = decision
        return result

    return plan


def counts_of(decisions: Mapping[int, rules.Decision]) -> JobCounts:
    outcomes = [d.outcome for d in decisions.values()]
    return JobCounts(
        written=sum(o in (Outcome.CREATED, Outcome.UPDATED) for o in outcomes),
        unchanged=outcomes.count(Outcome.UNCHANGED),
        stale=outcomes.count(Outcome.STALE),
    )
