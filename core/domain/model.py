"""The domain's types: immutable values (see `value`); the wire format (protobuf) is mapped at
the edges."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")

# What a tenant id is: 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit
# (it leads keys and NATS subjects, and names schemas and keyspaces).
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[_T]) -> type[_T]:
    """An immutable domain value. The type checker enforces the immutability (the class is a
    frozen dataclass to it); at run time it is a plain slotted dataclass, because a frozen
    dataclass's __init__ costs about three times as much, and the ingest path builds several
    of these per asset. Values hash by their fields, as frozen dataclasses do."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


class AssetType(enum.IntEnum):
    """Mirrors lily.v1.AssetType (same numbers)."""

    DATABASE = 1
    SCHEMA = 2
    TABLE = 3
    VIEW = 4
    COLUMN = 5
    DASHBOARD = 6
    BI_FIELD = 7
    PIPELINE = 8


class TagSource(enum.IntEnum):
    """Mirrors lily.v1.TagSource. Lower precedence number wins in the effective view."""

    SOURCE = 1
    USER = 2
    PROPAGATED = 3
    RULE = 4

    @property
    def precedence(self) -> int:
        return _PRECEDENCE[self]


_PRECEDENCE = {TagSource.SOURCE: 0, TagSource.USER: 1, TagSource.RULE: 2, TagSource.PROPAGATED: 3}


class Consistency(enum.IntEnum):
    STRONG = 1
    EVENTUAL = 2


class Outcome(enum.IntEnum):
    """Mirrors lily.v1.IngestOutcome."""

    CREATED = 1
    UPDATED = 2
    UNCHANGED = 3
    STALE = 4
    ACCEPTED = 5
    REJECTED = 6


class EntityKind(enum.IntEnum):
    ASSET = 1
    ISSUE = 2
    RELATIONSHIP = 3
    PROPAGATION = 4

    @property
    def token(self) -> str:
        return self.name.lower()


class ChangeKind(enum.IntEnum):
    CREATED = 1
    UPDATED = 2
    TAGGED = 3
    UNTAGGED = 4
    DELETED = 5
    ATTACHED = 6

    @property
    def token(self) -> str:
        return self.name.lower()


class IssueSeverity(enum.IntEnum):
    UNSPECIFIED = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class IssueStatus(enum.IntEnum):
    UNSPECIFIED = 0
    OPEN = 1
    ACKNOWLEDGED = 2
    RESOLVED = 3


@value
class Tag:
    name: str
    source: TagSource
    value: str = ""
    upstream_asset_ids: tuple[str, ...] = ()
    applied_by: str = ""
    applied_at: datetime | None = None
    propagate: bool = False  # travels downstream even if not a configured propagating tag

    @property
    def key(self) -> tuple[str, TagSource]:
        return (self.name, self.source)


@value
class TagAssignment:
    name: str
    value: str = ""
    upstream_asset_ids: tuple[str, ...] = ()
    propagate: bool = False


@value
class EffectiveTag:
    name: str
    value: str
    source: TagSource
    overridden: tuple[Tag, ...] = ()


@value
class AssetDraft:
    """An asset as submitted for ingest, before it meets what is stored."""

    qualified_name: str
    asset_type: AssetType
    source_event_time: datetime
    name: str = ""
    description: str = ""
    owners: tuple[str, ...] = ()
    data_source: str = ""
    parent_qualified_name: str = ""
    tags: tuple[TagAssignment, ...] = ()
    business_terms: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    external_id: str = ""
    # Tags set by Lily's pre-ingest transformers (stored with source RULE; added or updated,
    # never removed by an ingest).
    rule_tags: tuple[TagAssignment, ...] = ()
    # The draft as it was submitted, encoded (opaque here): queues carry it unchanged.
    wire: bytes = field(default=b"", compare=False, repr=False)


@value
class Asset:
    tenant_id: str
    asset_id: str
    qualified_name: str
    asset_type: AssetType
    version: int
    created_at: datetime
    updated_at: datetime
    source_event_time: datetime
    name: str = ""
    description: str = ""
    owners: tuple[str, ...] = ()
    data_source: str = ""
    parent_qualified_name: str = ""
    parent_id: str = ""
    tags: tuple[Tag, ...] = ()
    business_terms: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    external_id: str = ""
    is_deleted: bool = False
    # Assets upstream with an open data-quality issue (kept by propagation).
    unhealthy_upstream: tuple[str, ...] = ()


@value
class AssetView:
    """An asset as a caller may see it: whole, or with the restricted fields blanked (those
    `redacted` names), with the consistency class its type is written with."""

    asset: Asset
    consistency: Consistency
    redacted: tuple[str, ...] = ()


@value
class Issue:
    """A data-quality incident on an asset."""

    tenant_id: str
    issue_id: str
    asset_id: str
    source: str
    external_id: str
    type: str = ""
    severity: IssueSeverity = IssueSeverity.UNSPECIFIED
    status: IssueStatus = IssueStatus.OPEN
    title: str = ""
    description: str = ""
    url: str = ""
    opened_at: datetime | None = None
    updated_at: datetime | None = None
    resolved_at: datetime | None = None


@value
class WriteContext:
    """Who is writing, from where, and the trace the write belongs to."""

    tenant_id: str
    actor: str
    action: str
    now: datetime
    request_id: str = ""
    origin: str = ""
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    cause_event_id: str = ""


@value
class Change:
    """One state change: becomes an audit entry and a ChangeEvent, in the same transaction."""

    event_id: str
    tenant_id: str
    entity: EntityKind
    change: ChangeKind
    asset_id: str
    qualified_name: str
    asset_type: AssetType | None  # None: an edge's upstream asset that has not arrived yet
    asset_version: int
    changed_fields: tuple[str, ...]
    actor: str
    action: str
    occurred_at: datetime
    tags: tuple[str, ...] = ()
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()
    issue: Issue | None = None
    relationship: LineageEdge | None = None
    own_tags_moved: tuple[str, ...] = ()  # (see lily.v1.ChangeEvent)
    propagate_tags_moved: tuple[str, ...] = ()
    request_id: str = ""
    origin: str = ""
    cause_event_id: str = ""
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    unhealthy_upstream: tuple[str, ...] = ()  # of a health change: the asset's, after it

    @property
    def subject(self) -> str:
        return f"lily.{self.tenant_id}.{self.entity.token}.{self.change.token}"


@value
class AuditEntry:
    sequence: int
    asset_id: str
    principal: str
    action: str
    change: ChangeKind
    changed_fields: tuple[str, ...]
    asset_version: int
    at: datetime
    request_id: str = ""
    origin: str = ""
    event_id: str = ""


class PropagationState(enum.IntEnum):
    """Mirrors lily.v1.PropagationJobState."""

    PENDING = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4


@value
class PropagationJob:
    """A propagation downstream from one asset; its id is the id of the event that caused it."""

    tenant_id: str
    job_id: str
    asset_id: str
    state: PropagationState
    created_at: datetime
    updated_at: datetime
    assets_total: int = 0
    assets_done: int = 0
    assets_changed: int = 0
    requested_by: str = ""
    error: str = ""
    finished_at: datetime | None = None


class BulkJobState(enum.IntEnum):
    OPEN = 1
    DRAINING = 2
    SUCCEEDED = 3
    FAILED = 4


@value
class BulkJob:
    tenant_id: str
    job_id: str
    created_at: datetime
    updated_at: datetime
    description: str = ""
    closed: bool = False
    accepted: int = 0
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: int = 0
    write_failed: int = 0
    finished_at: datetime | None = None

    @property
    def failed(self) -> int:
        return self.rejected + self.write_failed

    @property
    def settled(self) -> int:
        return self.written + self.unchanged + self.stale + self.write_failed

    @property
    def state(self) -> BulkJobState:
        if not self.closed:
            return BulkJobState.OPEN
        if self.settled < self.accepted:
            return BulkJobState.DRAINING
        return BulkJobState.FAILED if self.failed else BulkJobState.SUCCEEDED


@value
class JobCounts:
    """Increments to a bulk job's counters."""

    accepted: int = 0
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: int = 0
    write_failed: int = 0

    def __add__(self, other: JobCounts) -> JobCounts:
        return JobCounts(*(a + b for a, b in zip(_astuple(self), _astuple(other), strict=True)))

    @property
    def empty(self) -> bool:
        return not any(_astuple(self))


def _astuple(c: JobCounts) -> tuple[int, ...]:
    return (c.accepted, c.written, c.unchanged, c.stale, c.rejected, c.write_failed)


@value
class SearchQuery:
    asset_type: AssetType | None = None
    tag: str = ""
    qualified_name_prefix: str = ""
    data_source: str = ""
    owner: str = ""
    include_deleted: bool = False


# -- lineage ---------------------------------------------------------------------------------


class Direction(enum.IntEnum):
    """Mirrors lily.v1.LineageDirection (same numbers)."""

    UPSTREAM = 1
    DOWNSTREAM = 2
    BOTH = 3


@value
class LineageEdge:
    """Data flows from `upstream_id` to `downstream_id` (asset ids of one tenant). An edge is
    identified by (upstream_id, downstream_id, kind); the latest source event time wins."""

    upstream_id: str
    downstream_id: str
    kind: str
    source_event_time: datetime
    is_deleted: bool = False

    @property
    def key(self) -> EdgeKey:
        return (self.upstream_id, self.downstream_id, self.kind)


# An edge's identity: (upstream_id, downstream_id, kind).
EdgeKey = tuple[str, str, str]


class EdgeOutcome(enum.IntEnum):
    """What a write did to one edge; mirrors lily.v1.RelationshipOutcome (same numbers)."""

    CREATED = 1  # a new live edge, or a deleted one revived
    UNCHANGED = 3  # same live state as stored (a newer time is kept)
    STALE = 4  # older than the stored edge: nothing changed
    DELETED = 5  # a live edge deleted


@value
class Subgraph:
    """What a traversal reached: each node with its distance from the start (the start itself
    at 0), and the live edges among them along the direction walked."""

    nodes: Mapping[str, int]
    edges: tuple[LineageEdge, ...]
    truncated: bool = False  # stopped at the node limit
