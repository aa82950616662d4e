"""CassandraAssetStore: the AssetStore port on Cassandra (distributed profile).

The data model and its partition arithmetic are in cassandra.md beside this package; how a
transaction is made all-or-nothing without multi-partition transactions in intents.py. The
parts: rows.py (how rows are laid out), statements.py (prepared statements and how they run),
intents.py (transactions and the outbox of their intents), reads.py (reads and search),
jobs.py (bulk and propagation jobs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from datetime import timedelta

from cassandra.cluster import Session

from core.domain.model import (
    Asset,
    AuditEntry,
    BulkJob,
    Issue,
    IssueStatus,
    JobCounts,
    PropagationJob,
    SearchQuery,
)
from core.domain.rules import Plan
from core.metadata.stores.cassandra.intents import Intents
from core.metadata.stores.cassandra.jobs import Jobs
from core.metadata.stores.cassandra.reads import Reads
from core.metadata.stores.cassandra.rows import Clock
from core.metadata.stores.cassandra.statements import Statements
from core.ports import OutboxRecord, Snapshot, TxRequest


class CassandraAssetStore:
    """The AssetStore port on Cassandra. See core.ports.AssetStore for its guarantees, and
    intents.py for how transact keeps them. Also the outbox (core.ports.Outbox) of the
    intents it writes."""

    def __init__(self, session: Session, *, timeout: float = 10.0) -> None:
        self.session = session
        db = Statements(session, timeout=timeout)
        clock = Clock()
        self._db = db
        self.intents = Intents(db, clock)
        self._reads = Reads(db, clock)
        self._jobs = Jobs(db, clock)

    @classmethod
    async def open(cls, session: Session, *, timeout: float = 10.0) -> CassandraAssetStore:
        """The store on a session whose keyspace is migrated, with its statements prepared."""
        store = cls(session, timeout=timeout)
        await store._db.prepare_all()
        return store

    # -- transactions and their outbox ----------------------------------------------------

    async def transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        return await self.intents.transact(tenant_id, request, plan)

    async def delete_published(self, ids: Collection[Hashable]) -> None:
        await self.intents.delete_published(ids)

    async def relay_stale(
        self, older_than: float, publish: Callable[[list[OutboxRecord]], Awaitable[None]]
    ) -> int:
        return await self.intents.relay_stale(older_than, publish)

    async def prune_dedupe(self, older_than: timedelta) -> int:
        """Nothing to do: dedupe keys are written with a TTL of a day, and expire by
        themselves (the worker keeps them DEDUPE_KEEP = one day too)."""
        return 0

    # -- reads ----------------------------------------------------------------------------

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None:
        return await self._reads.get(tenant_id, asset_id)

    async def get_many(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, Asset]:
        return await self._reads.get_many(tenant_id, asset_ids)

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None:
        return await self._reads.get_by_qualified_name(tenant_id, qualified_name)

    async def open_issue_counts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        return await self._reads.open_issue_counts(tenant_id, asset_ids)

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        return await self._reads.search(tenant_id, query, after, limit)

    async def list_issues(
        self,
        tenant_id: str,
        asset_id: str,
        status: IssueStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Issue]:
        return await self._reads.list_issues(tenant_id, asset_id, status, after, limit)

    async def audit_trail(
        self, tenant_id: str, asset_id: str, after_seq: int, limit: int
    ) -> list[AuditEntry]:
        return await self._reads.audit_trail(tenant_id, asset_id, after_seq, limit)

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(self, job: BulkJob) -> None:
        await self._jobs.create_job(job)

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob | None:
        return await self._jobs.get_job(tenant_id, job_id)

    async def update_job(
        self, tenant_id: str, job_id: str, counts: JobCounts, *, close: bool = False
    ) -> BulkJob | None:
        return await self._jobs.update_job(tenant_id, job_id, counts, close=close)

    async def put_propagation_job(self, job: PropagationJob) -> None:
        await self._jobs.put_propagation_job(job)

    async def get_propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob | None:
        return await self._jobs.get_propagation_job(tenant_id, job_id)
