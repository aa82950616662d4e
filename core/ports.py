"""The ports the core depends on. Each has one implementation per backend, chosen at the
composition root (core/server.py); one contract suite (tests/contract) runs over each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from core.domain.model import (
    Asset,
    AuditEntry,
    BulkJob,
    Issue,
    IssueStatus,
    JobCounts,
    SearchQuery,
)
from core.domain.rules import Plan


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a store hands a plan function: the stored state of the rows it locked."""

    assets: Mapping[str, Asset]
    issues: Mapping[str, Issue] = field(default_factory=dict)
    # Of the dedupe keys passed to transact, those never applied before.
    fresh_keys: frozenset[int] = frozenset()


@dataclass(slots=True)
class TxRequest:
    """What transact locks and loads, and the bulk-job counters and dedupe keys it records."""

    asset_ids: Collection[str]
    issue_ids: Collection[tuple[str, str]] = ()  # (asset_id, issue_id)
    dedupe_keys: Collection[int] = ()
    job_counts: Callable[[], Mapping[str, JobCounts]] | None = None


class AssetStore(Protocol):
    """Assets, their issues, audit trail and bulk jobs, for one deployment.

    Guarantees every implementation gives:
    - transact() runs `plan` on the locked current state of the named assets and writes
      everything the plan returns (assets, issues, one audit entry and one outbox event per
      Change, bulk-job counters, dedupe keys) atomically: all or nothing. Concurrent transacts on
      the same asset are serialized; `plan` may be called again if the store retries.
    - Reads never return another tenant's rows: tenant_id leads every key.
    - Soft-deleted assets are returned by get(); callers decide whether to hide them.
    - search() pages by qualified_name (keyset): stable across concurrent inserts, bounded
      memory, never a whole-tenant scan into memory.
    - Raises core.domain.errors.Unavailable when the backend cannot be reached.
    """

    async def transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan: ...

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None: ...

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None: ...

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> list[Asset]: ...

    async def list_issues(
        self,
        tenant_id: str,
        asset_id: str,
        status: IssueStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Issue]: ...

    async def audit_trail(
        self, tenant_id: str, asset_id: str, after_seq: int, limit: int
    ) -> list[AuditEntry]: ...

    async def prune_dedupe(self, older_than: timedelta) -> int:
        """Forgets dedupe keys applied longer ago than `older_than`; returns how many."""
        ...

    async def create_job(self, job: BulkJob) -> None: ...

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob | None: ...

    async def update_job(
        self, tenant_id: str, job_id: str, counts: JobCounts, *, close: bool = False
    ) -> BulkJob | None: ...


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    event_id: str
    subject: str
    payload: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One message of a work queue, with its stream sequence (for de-duplication)."""

    tenant_id: str
    sequence: int
    data: bytes
    deliveries: int


class ChangeBus(Protocol):
    """The change-event bus (JetStream).

    - publish() returns only when every message is stored by the bus; messages with the same
      event id within the de-duplication window are stored once.
    - enqueue_ingest() returns only when every item is durably stored on the ingest queue.
    - subscribe() yields (subject, payload, headers) published after it starts, in order.
    """

    async def publish(self, records: Sequence[OutboxRecord]) -> None: ...

    async def enqueue_ingest(
        self, tenant_id: str, items: Sequence[bytes], headers: Mapping[str, str]
    ) -> None: ...

    def subscribe(self, subject: str) -> AsyncIterator[tuple[str, bytes, Mapping[str, str]]]: ...
