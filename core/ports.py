"""The ports the core depends on. Each has one implementation per backend, chosen at the
composition root (core/server.py); one contract suite (tests/contract) runs over each."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from core.domain.lineage import MAX_LINEAGE_NODES
from core.domain.model import (
    Asset,
    AssetType,
    AuditEntry,
    BulkJob,
    Direction,
    EdgeKey,
    Issue,
    IssueStatus,
    JobCounts,
    LineageEdge,
    PropagationJob,
    SearchQuery,
    Subgraph,
)
from core.domain.quality import Firing, Rule, UsageWindow
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
    - search() returns a page and a cursor for the next one (None: no more; JSON-safe, and
      opaque to callers, who keep it in a signed page token). Pages are stable across
      concurrent inserts (every asset that matched throughout is listed once), each call does
      bounded work, and nothing scans a whole tenant into memory. With a qualified-name
      prefix, results come in name order; without one, in an order of the store's choosing.
      A page may be shorter than `limit` and still have a cursor.
    - Raises core.domain.errors.Unavailable when the backend cannot be reached.
    """

    async def transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan: ...

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None: ...

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None: ...

    async def get_many(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, Asset]:
        """The stored assets among `asset_ids` (deleted ones too), by id."""
        ...

    async def open_issue_counts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        """How many unresolved (open or acknowledged) issues each asset has; assets with none
        are left out."""
        ...

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]: ...

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

    async def put_propagation_job(self, job: PropagationJob) -> None:
        """Writes the job whole (created or replaced)."""
        ...

    async def get_propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob | None: ...


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: Hashable  # of the outbox entry holding it (the store's own key)
    event_id: str
    subject: str
    payload: bytes
    headers: Mapping[str, str]


class Outbox(Protocol):
    """Where a store keeps the change events of committed transactions until the relay
    (core.events.outbox.OutboxRelay) has published them."""

    async def delete_published(self, ids: Collection[Hashable]) -> None:
        """Forgets the entries whose events are all published."""
        ...

    async def relay_stale(
        self, older_than: float, publish: Callable[[list[OutboxRecord]], Awaitable[None]]
    ) -> int:
        """Publishes (with `publish`) and deletes some entries older than `older_than` seconds
        that were not published; returns how many events (0: none left)."""
        ...


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
    - subscribe() yields (subject, payload, headers) published after it starts, in order; a
      payload is one event or a batch of them (core.events.codec.events_of reads either).
    """

    async def publish(self, records: Sequence[OutboxRecord]) -> None: ...

    async def enqueue_ingest(
        self, tenant_id: str, items: Sequence[bytes], headers: Mapping[str, str]
    ) -> None: ...

    def subscribe(self, subject: str) -> AsyncIterator[tuple[str, bytes, Mapping[str, str]]]: ...


class LineageGraph(Protocol):
    """The lineage of a tenant's assets: a directed graph, one node per asset id, edges from
    upstream to downstream with a kind and the source's event time.

    Guarantees every implementation gives (tests/contract/test_lineage_graph.py):
    - Every key leads with the tenant: one tenant never sees another's nodes or edges.
    - Upserts are idempotent, and last-writer-wins by source event time per edge (an older
      upsert or delete of an edge is a no-op); an upsert creates missing nodes.
    - Deletes are soft: a deleted edge or node is kept but never walked; a newer upsert of an
      edge revives it; a deleted node comes back when it is upserted again.
    - Traversals are breadth-first, cycle-safe and bounded by depth (at most
      core.domain.lineage.MAX_LINEAGE_DEPTH) and by `max_nodes`; BOTH is the union of the
      upstream and downstream walks (core.domain.lineage.in_direction does both for every
      store). A start that is unknown or deleted gives an empty subgraph.
    - Failures of the backend raise core.domain.errors.Unavailable."""

    async def upsert_edges(
        self, tenant_id: str, edges: Sequence[LineageEdge]
    ) -> dict[EdgeKey, LineageEdge | None]:
        """Applies the edges (deleted ones too); returns each written edge's stored state
        before the write (None: it was new), by key. core.domain.lineage.changed and
        outcome tell what the write did."""
        ...

    async def get_edges(
        self, tenant_id: str, keys: Sequence[EdgeKey]
    ) -> dict[EdgeKey, LineageEdge]:
        """The stored edges (deleted ones too) among `keys`; unknown keys are left out."""
        ...

    async def edges_at(
        self, tenant_id: str, asset_ids: Sequence[str], forward: bool
    ) -> list[LineageEdge]:
        """The live edges out of (forward) or into these nodes whose other end is live: one
        level of a walk from all of them at once (propagation climbs from a whole affected
        set this way, and asks which of a batch of new assets have any lineage)."""
        ...

    async def delete_node(self, tenant_id: str, asset_id: str) -> bool:
        """Marks the node deleted; False if it was unknown or deleted already."""
        ...

    async def upsert_node(self, tenant_id: str, asset_id: str) -> None:
        """Creates the node, or revives it if deleted."""
        ...

    async def traverse(
        self,
        tenant_id: str,
        start: str,
        direction: Direction,
        depth: int,
        max_nodes: int = MAX_LINEAGE_NODES,
    ) -> Subgraph: ...


ReadView = Literal["full", "redacted", "refused"]


class Access(Protocol):
    """Per-object authorization for the principal of the current call (policy/ implements
    it; the call's own permission was checked before its handler ran). A refusal is recorded
    in the audit trail of denials by the implementation."""

    def may_write(self, asset_type: AssetType, qualified_name: str, method: str) -> bool:
        """Whether the caller may write this asset (`write` on `asset:<TYPE>:<name>`)."""
        ...

    def may_write_all(self, method: str) -> bool:
        """Whether the caller may write every asset (then no asset needs asking of may_write;
        False: it depends on the asset)."""
        ...

    def read_view(self, tag_names: Collection[str], method: str) -> ReadView:
        """How the caller may see an asset carrying these tags: whole, with restricted fields
        blanked, or not at all."""
        ...


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """What usage says of one asset (core.domain.quality.Facts takes them)."""

    last_used: datetime | None = None
    window: UsageWindow | None = None
    trailing_rate: float | None = None


class QualityStore(Protocol):
    """Each tenant's data-quality rules, with their schedule; the usage recorded of its assets;
    and each rule's firings per asset (core/quality). Postgres in both profiles.

    - A rule is claimed for a scheduled pass by one owner at a time (claim_due leases it
      until renewed or finished; a lease that runs out may be claimed again).
    - set_firing writes only over the state it was given (compare and set): False if another
      evaluator moved it first.
    - Failures of the backend raise core.domain.errors.Unavailable."""

    async def create_rule(self, rule: Rule) -> None: ...

    async def get_rule(self, tenant_id: str, rule_id: str) -> Rule | None: ...

    async def list_rules(self, tenant_id: str) -> list[Rule]: ...

    async def update_rule(self, rule: Rule) -> bool:
        """Replaces the rule (due for a pass again at once); False if it is unknown."""
        ...

    async def delete_rule(self, tenant_id: str, rule_id: str) -> bool: ...

    async def claim_due(self, owner: str, lease: float, limit: int) -> list[Rule]:
        """Rules due for a pass that nobody holds, leased to `owner` for `lease` seconds."""
        ...

    async def renew(self, owner: str, keys: Collection[tuple[str, str]], lease: float) -> None: ...

    async def finish(
        self, owner: str, tenant_id: str, rule_id: str, evaluated_at: datetime, due_at: datetime
    ) -> None:
        """Ends `owner`'s lease on the rule: evaluated then, next due at `due_at`."""
        ...

    async def record_usage(self, tenant_id: str, windows: Sequence[UsageWindow]) -> None:
        """Stores the windows; one recorded again replaces what was recorded for it."""
        ...

    async def usage(self, tenant_id: str, asset_id: str, since: datetime) -> list[UsageWindow]:
        """The asset's windows starting at or after `since`, newest first."""
        ...

    async def usage_facts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, UsageFacts]:
        """For each asset with any usage: its last use, newest window and the rate of the
        windows in the week before that one."""
        ...

    async def firings(
        self, tenant_id: str, rule_id: str, asset_ids: Sequence[str] | None = None
    ) -> dict[str, Firing]:
        """The rule's firings on these assets; with None, every firing open or not synced."""
        ...

    async def set_firing(
        self, tenant_id: str, rule_id: str, asset_id: str, before: Firing | None, after: Firing
    ) -> bool: ...
