"""metadata.proto requests and replies <-> what MetadataService takes and answers.

Decoding validates: every problem of a request is collected as a field violation and raised
as one InvalidArgument (core.wire.validation); the common.proto messages are converted by
core.wire.common."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as metadata_pb

from core.domain import rules
from core.domain.errors import FieldViolation, InvalidArgument
from core.domain.model import (
    AssetDraft,
    AssetView,
    AuditEntry,
    BulkJob,
    IssueStatus,
    SearchQuery,
    TagAssignment,
    TagSource,
)
from core.events.watch import WatchFilter
from core.metadata.ingest import ItemResult, Rejection
from core.wire.common import asset_to_pb, asset_type_of, draft_from_pb, tag_assignments, ts_pb
from core.wire.status import to_status
from core.wire.validation import (
    MAX_DESCRIPTION_BYTES,
    MAX_QUALIFIED_NAME_BYTES,
    MAX_TAG_BYTES,
    MAX_TEXT_BYTES,
    check_attributes,
    check_strings,
    check_text,
    refuse,
    timestamp_or,
)

# -- requests ---------------------------------------------------------------------------------


def drafts_from_pb(
    assets: Sequence[common_pb.AssetInput], now: datetime, offset: int = 0
) -> tuple[list[tuple[int, AssetDraft]], list[Rejection]]:
    """The valid assets of an ingest as drafts (with their index in the call, or stream, from
    `offset`), and a Rejection for each invalid one."""
    drafts, rejected = [], []
    for i, pb in enumerate(assets, start=offset):
        problems: list[FieldViolation] = []
        draft = draft_from_pb(pb, f"assets[{i - offset}]", now, problems)
        if draft is None:
            rejected.append(Rejection(i, pb.qualified_name[:2048], InvalidArgument(problems)))
        else:
            drafts.append((i, draft))
    return drafts, rejected


def expected_version(request: object) -> int | None:
    """An update's `expected_version`, if it sets one."""
    return request.expected_version if request.HasField("expected_version") else None  # type: ignore[attr-defined]


def qualified_name_from_pb(request: metadata_pb.LookupMetadataRequest) -> str:
    problems: list[FieldViolation] = []
    check_text(
        "qualified_name", request.qualified_name, MAX_QUALIFIED_NAME_BYTES, problems, required=True
    )
    refuse(problems)
    return request.qualified_name


def update_from_pb(
    request: metadata_pb.UpdateMetadataRequest, now: datetime
) -> tuple[dict[str, object], datetime]:
    """The fields an UpdateMetadata sets (rules.masked_values), and its source event time."""
    problems: list[FieldViolation] = []
    a = request.asset
    values = rules.masked_values(
        list(request.update_mask.paths),
        {name: getattr(a, name) for name in rules.MUTABLE_FIELDS},
        problems,
    )
    for name in ("name", "data_source", "external_id"):
        check_text(f"asset.{name}", getattr(a, name), MAX_TEXT_BYTES, problems)
    check_text("asset.description", a.description, MAX_DESCRIPTION_BYTES, problems)
    check_strings("asset.owners", list(a.owners), problems)
    check_strings("asset.business_terms", list(a.business_terms), problems)
    check_attributes("asset.attributes", a.attributes, problems)
    event_time = timestamp_or("source_event_time", request.source_event_time, now, problems)
    refuse(problems)
    return values, event_time


def tags_from_pb(
    request: metadata_pb.UpdateTagsRequest,
) -> tuple[TagSource, tuple[TagAssignment, ...], list[str]]:
    """An UpdateTags' source (USER unless given), tags to add and tag names to remove."""
    problems: list[FieldViolation] = []
    try:
        source = TagSource(request.source) if request.source else TagSource.USER
    except ValueError:
        problems.append(FieldViolation("source", f"is not a known tag source ({request.source})"))
        source = TagSource.USER
    add = tag_assignments("add", request.add, source, problems)
    remove = list(request.remove)
    check_strings("remove", remove, problems)
    if not add and not remove:
        problems.append(FieldViolation("add", "add or remove at least one tag"))
    refuse(problems)
    return source, add, remove


def search_from_pb(request: metadata_pb.SearchMetadataRequest) -> SearchQuery:
    problems: list[FieldViolation] = []
    asset_type = asset_type_of("asset_type", request.asset_type, problems, required=False)
    check_text("tag", request.tag, MAX_TAG_BYTES, problems)
    check_text(
        "qualified_name_prefix",
        request.qualified_name_prefix,
        MAX_QUALIFIED_NAME_BYTES,
        problems,
    )
    for name in ("data_source", "owner"):
        check_text(name, getattr(request, name), MAX_TEXT_BYTES, problems)
    refuse(problems)
    return SearchQuery(
        asset_type,
        request.tag,
        request.qualified_name_prefix,
        request.data_source,
        request.owner,
        request.include_deleted,
    )


def issue_status_from_pb(status: int) -> IssueStatus | None:
    """A ListIssues filter (None: any status)."""
    try:
        return IssueStatus(status) if status else None
    except ValueError as exc:
        raise InvalidArgument([FieldViolation("status", "is not a known status")]) from exc


def description_from_pb(request: metadata_pb.CreateBulkJobRequest) -> str:
    problems: list[FieldViolation] = []
    check_text("description", request.description, MAX_TEXT_BYTES, problems)
    refuse(problems)
    return request.description


def watch_filter_from_pb(request: metadata_pb.WatchChangesRequest) -> WatchFilter:
    problems: list[FieldViolation] = []
    for i, t in enumerate(request.asset_types):
        asset_type_of(f"asset_types[{i}]", t, problems)
    for i, tag in enumerate(request.tags):
        check_text(f"tags[{i}]", tag, MAX_TAG_BYTES, problems, required=True)
    refuse(problems)
    return WatchFilter(
        frozenset(request.entities),
        frozenset(request.changes),
        frozenset(request.asset_types),
        frozenset(request.tags),
    )


# -- replies ----------------------------------------------------------------------------------


def view_to_pb(view: AssetView) -> common_pb.Asset:
    """An asset as the caller may see it (redacted_fields names what was blanked)."""
    pb = asset_to_pb(view.asset, view.consistency)
    if view.redacted:
        pb.redacted_fields.extend(view.redacted)
    return pb


def results_to_pb(
    results: Sequence[ItemResult], rejections: Sequence[Rejection]
) -> list[metadata_pb.IngestResult]:
    """One IngestResult per item of the call, in its order."""
    out = [
        metadata_pb.IngestResult(
            index=r.index,
            asset_id=r.asset_id,
            qualified_name=r.qualified_name,
            outcome=metadata_pb.IngestOutcome.ValueType(r.outcome),
            version=r.version,
            consistency=common_pb.ConsistencyClass.ValueType(r.consistency),
            changed_fields=r.changed_fields,
        )
        for r in results
    ]
    out += map(rejection_to_pb, rejections)
    return sorted(out, key=lambda r: r.index)


def rejection_to_pb(r: Rejection) -> metadata_pb.IngestResult:
    return metadata_pb.IngestResult(
        index=r.index,
        qualified_name=r.qualified_name,
        outcome=metadata_pb.INGEST_OUTCOME_REJECTED,
        error=to_status(r.error),
    )


def audit_to_pb(entry: AuditEntry) -> metadata_pb.AuditEntry:
    return metadata_pb.AuditEntry(
        sequence=entry.sequence,
        asset_id=entry.asset_id,
        principal=entry.principal,
        action=entry.action,
        change=events_pb.ChangeKind.ValueType(entry.change),
        changed_fields=entry.changed_fields,
        asset_version=entry.asset_version,
        at=ts_pb(entry.at),
        request_id=entry.request_id,
        origin=entry.origin,
        event_id=entry.event_id,
    )


def job_to_pb(job: BulkJob) -> metadata_pb.BulkJob:
    return metadata_pb.BulkJob(
        job_id=job.job_id,
        description=job.description,
        state=metadata_pb.BulkJobState.ValueType(job.state),
        accepted=job.accepted,
        written=job.written,
        unchanged=job.unchanged,
        stale=job.stale,
        failed=job.failed,
        created_at=ts_pb(job.created_at),
        updated_at=ts_pb(job.updated_at),
        finished_at=ts_pb(job.finished_at),
    )
