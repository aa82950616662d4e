"""How the Cassandra asset store lays its rows out: times as microseconds, an asset, an issue,
an audit entry and a propagation job as column values, and the name directory's paths (see
cassandra.md beside this package for the tables)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from core.domain.model import (
    Asset,
    AssetType,
    AuditEntry,
    Change,
    ChangeKind,
    Issue,
    IssueSeverity,
    IssueStatus,
    PropagationJob,
    PropagationState,
    SearchQuery,
)
from core.metadata.stores.rows import ASSET_COLUMNS as _STORED_ASSET_COLUMNS
from core.metadata.stores.rows import tag_from_json, tag_json

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SEQ_NONCE = int.from_bytes(os.urandom(2), "big") & 0x3FF


def micros(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def opt_micros(dt: datetime | None) -> int | None:
    return None if dt is None else micros(dt)


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def opt_from_micros(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def month(us: int) -> int:
    d = from_micros(us)
    return d.year * 12 + d.month - 1


class Clock:
    """Strictly increasing microseconds for this process (audit sequence numbers, intent
    timestamps): wall time, bumped past the last value handed out."""

    def __init__(self) -> None:
        self._last = 0

    def now_us(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last

    def seq(self) -> int:
        """An audit sequence number: the time in its high bits (so it also names the month),
        and 10 bits of this process, so two processes never collide."""
        return (self.now_us() << 10) | _SEQ_NONCE


def parent_dir(name: str) -> str:
    """The directory an entry lives in: the name up to its last '/', not counting a '/' that
    ends the name ('a/b/c' and 'a/b/c/' are both entries of 'a/b/')."""
    return name[: name.rfind("/", 0, len(name) - 1) + 1]


def ancestors(name: str) -> Iterable[tuple[str, str]]:
    """(directory, entry) of every directory marker above `name`, nearest first."""
    d = parent_dir(name)
    while d:
        up = parent_dir(d)
        yield up, d
        d = up


ASSET_COLUMNS = ("tenant_id", *_STORED_ASSET_COLUMNS)
ISSUE_COLUMNS = (
    "tenant_id",
    "asset_id",
    "issue_id",
    "source",
    "external_id",
    "type",
    "severity",
    "status",
    "title",
    "description",
    "url",
    "opened_at",
    "updated_at",
    "resolved_at",
)
AUDIT_COLUMNS = (
    "tenant_id",
    "asset_id",
    "month",
    "seq",
    "principal",
    "action",
    "change",
    "changed_fields",
    "asset_version",
    "at",
    "request_id",
    "origin",
    "event_id",
)
PROPAGATION_JOB_COLUMNS = (
    "tenant_id",
    "job_id",
    "asset_id",
    "state",
    "assets_total",
    "assets_done",
    "assets_changed",
    "requested_by",
    "error",
    "created_at",
    "updated_at",
    "finished_at",
)
COUNT_FIELDS = ("accepted", "written", "unchanged", "stale", "rejected", "write_failed")


def insert(table: str, columns: Sequence[str], using: str = "") -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){using}"


def asset_row(a: Asset) -> list[Any]:
    """An asset as the values of ASSET_COLUMNS (JSON-safe: it is also what an intent holds)."""
    return [
        a.tenant_id,
        a.asset_id,
        a.qualified_name,
        int(a.asset_type),
        a.name,
        a.description,
        list(a.owners),
        a.data_source,
        a.parent_qualified_name,
        a.parent_id,
        orjson.dumps([tag_json(t) for t in a.tags]).decode() if a.tags else "[]",
        sorted({t.name for t in a.tags}),
        list(a.business_terms),
        dict(a.attributes),
        a.external_id,
        a.version,
        a.is_deleted,
        micros(a.created_at),
        micros(a.updated_at),
        micros(a.source_event_time),
        list(a.unhealthy_upstream),
    ]


def asset_from_row(r: Any) -> Asset:
    return Asset(
        tenant_id=r.tenant_id,
        asset_id=r.asset_id,
        qualified_name=r.qualified_name,
        asset_type=AssetType(r.asset_type),
        version=r.version,
        created_at=from_micros(r.created_at),
        updated_at=from_micros(r.updated_at),
        source_event_time=from_micros(r.source_event_time),
        name=r.name or "",
        description=r.description or "",
        owners=tuple(r.owners or ()),
        data_source=r.data_source or "",
        parent_qualified_name=r.parent_qualified_name or "",
        parent_id=r.parent_id or "",
        tags=tuple(tag_from_json(t) for t in orjson.loads(r.tags or "[]")),
        business_terms=tuple(r.business_terms or ()),
        attributes=dict(r.attributes or {}),
        external_id=r.external_id or "",
        is_deleted=bool(r.is_deleted),
        unhealthy_upstream=tuple(r.unhealthy_upstream or ()),
    )


def issue_row(i: Issue) -> list[Any]:
    return [
        i.tenant_id,
        i.asset_id,
        i.issue_id,
        i.source,
        i.external_id,
        i.type,
        int(i.severity),
        int(i.status),
        i.title,
        i.description,
        i.url,
        opt_micros(i.opened_at),
        opt_micros(i.updated_at),
        opt_micros(i.resolved_at),
    ]


def issue_from_row(r: Any) -> Issue:
    return Issue(
        tenant_id=r.tenant_id,
        issue_id=r.issue_id,
        asset_id=r.asset_id,
        source=r.source or "",
        external_id=r.external_id or "",
        type=r.type or "",
        severity=IssueSeverity(r.severity),
        status=IssueStatus(r.status),
        title=r.title or "",
        description=r.description or "",
        url=r.url or "",
        opened_at=opt_from_micros(r.opened_at),
        updated_at=opt_from_micros(r.updated_at),
        resolved_at=opt_from_micros(r.resolved_at),
    )


def matches(a: Asset, q: SearchQuery) -> bool:
    return (
        (q.asset_type is None or a.asset_type == q.asset_type)
        and (not q.tag or any(t.name == q.tag for t in a.tags))
        and a.qualified_name.startswith(q.qualified_name_prefix)
        and (not q.data_source or a.data_source == q.data_source)
        and (not q.owner or q.owner in a.owners)
        and (q.include_deleted or not a.is_deleted)
    )


def audit_row(tenant_id: str, c: Change, month_: int, seq: int) -> list[Any]:
    """A change's audit entry as the values of AUDIT_COLUMNS."""
    return [
        tenant_id,
        c.asset_id,
        month_,
        seq,
        c.actor,
        c.action,
        int(c.change),
        list(c.changed_fields),
        c.asset_version,
        micros(c.occurred_at),
        c.request_id,
        c.origin,
        c.event_id,
    ]


def audit_from_row(r: Any) -> AuditEntry:
    return AuditEntry(
        sequence=r.seq,
        asset_id=r.asset_id,
        principal=r.principal,
        action=r.action,
        change=ChangeKind(r.change),
        changed_fields=tuple(r.changed_fields or ()),
        asset_version=r.asset_version,
        at=from_micros(r.at),
        request_id=r.request_id or "",
        origin=r.origin or "",
        event_id=r.event_id or "",
    )


def propagation_job_row(job: PropagationJob) -> list[Any]:
    """A propagation job as the values of PROPAGATION_JOB_COLUMNS."""
    return [
        job.tenant_id,
        job.job_id,
        job.asset_id,
        int(job.state),
        job.assets_total,
        job.assets_done,
        job.assets_changed,
        job.requested_by,
        job.error,
        micros(job.created_at),
        micros(job.updated_at),
        opt_micros(job.finished_at),
    ]


def propagation_job_from_row(r: Any) -> PropagationJob:
    return PropagationJob(
        tenant_id=r.tenant_id,
        job_id=r.job_id,
        asset_id=r.asset_id,
        state=PropagationState(r.state),
        created_at=from_micros(r.created_at),
        updated_at=from_micros(r.updated_at),
        assets_total=r.assets_total or 0,
        assets_done=r.assets_done or 0,
        assets_changed=r.assets_changed or 0,
        requested_by=r.requested_by or "",
        error=r.error or "",
        finished_at=opt_from_micros(r.finished_at),
    )
