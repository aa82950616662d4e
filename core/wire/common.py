"""common.proto messages <-> domain types (assets, tags, issues, relationships), with the
validation of what comes in (core.wire.validation)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb

from core.domain.errors import FieldViolation
from core.domain.model import (
    Asset,
    AssetDraft,
    AssetType,
    Consistency,
    Issue,
    IssueSeverity,
    IssueStatus,
    LineageEdge,
    Tag,
    TagAssignment,
    TagSource,
)
from core.domain.rules import effective_tags
from core.wire.validation import (
    MAX_DESCRIPTION_BYTES,
    MAX_LIST,
    MAX_QUALIFIED_NAME_BYTES,
    MAX_TEXT_BYTES,
    check_asset_id,
    check_attributes,
    check_strings,
    check_text,
    timestamp_or,
)

# One asset, encoded: keeps every queued work message well under NATS's 1 MiB payload limit.
MAX_ASSET_BYTES = 256 * 1024
_TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}$")


def tag_assignments(
    path: str,
    tags: Iterable[common_pb.TagAssignment],
    source: TagSource,
    out: list[FieldViolation],
) -> tuple[TagAssignment, ...]:
    result = []
    items = list(tags)
    if len(items) > MAX_LIST:
        out.append(FieldViolation(path, f"has more than {MAX_LIST} entries"))
        return ()
    for i, t in enumerate(items):
        if not _TAG_NAME.match(t.name):
            out.append(
                FieldViolation(
                    f"{path}[{i}].name",
                    "must be 1-128 characters of letters, digits and _.:/-, "
                    "starting with a letter or digit",
                )
            )
        check_text(f"{path}[{i}].value", t.value, MAX_TEXT_BYTES, out)
        if t.upstream_asset_ids and source != TagSource.PROPAGATED:
            out.append(
                FieldViolation(
                    f"{path}[{i}].upstream_asset_ids", "is only allowed for PROPAGATED tags"
                )
            )
        for j, up in enumerate(t.upstream_asset_ids):
            check_asset_id(f"{path}[{i}].upstream_asset_ids[{j}]", up, out)
        result.append(TagAssignment(t.name, t.value, tuple(t.upstream_asset_ids), t.propagate))
    return tuple(result)


_ASSET_TYPES = {t.value: t for t in AssetType}


def asset_type_of(
    path: str, value: int, out: list[FieldViolation], *, required: bool = True
) -> AssetType | None:
    if value == 0:
        if required:
            out.append(FieldViolation(path, "is required"))
        return None
    asset_type = _ASSET_TYPES.get(value)
    if asset_type is None:
        out.append(FieldViolation(path, f"is not a known asset type ({value})"))
    return asset_type


def map_of(values: Mapping[str, str]) -> dict[str, str]:
    """A protobuf map field as a dict (twice as fast as dict(), which goes through the
    Mapping mixin's views)."""
    return {k: values[k] for k in values}


def draft_from_pb(
    pb: common_pb.AssetInput, path: str, now: datetime, out: list[FieldViolation]
) -> AssetDraft | None:
    """An AssetInput as a domain draft, or None with the reasons appended to `out` (its
    `rule_tags` are Lily's transformers' alone: refused from callers)."""
    start = len(out)
    if pb.ByteSize() > MAX_ASSET_BYTES:
        out.append(FieldViolation(path, f"is larger than {MAX_ASSET_BYTES // 1024} KiB encoded"))
        return None
    check_text(
        f"{path}.qualified_name", pb.qualified_name, MAX_QUALIFIED_NAME_BYTES, out, required=True
    )
    asset_type = asset_type_of(f"{path}.asset_type", pb.asset_type, out)
    check_text(f"{path}.name", pb.name, MAX_TEXT_BYTES, out)
    check_text(f"{path}.description", pb.description, MAX_DESCRIPTION_BYTES, out)
    # (repeated and map fields are costly to read: each once, and only if present)
    owners = tuple(pb.owners) if pb.owners else ()
    terms = tuple(pb.business_terms) if pb.business_terms else ()
    attributes = map_of(pb.attributes) if pb.attributes else {}
    check_strings(f"{path}.owners", owners, out)
    check_text(f"{path}.data_source", pb.data_source, MAX_TEXT_BYTES, out)
    check_text(
        f"{path}.parent_qualified_name", pb.parent_qualified_name, MAX_QUALIFIED_NAME_BYTES, out
    )
    tags = tag_assignments(f"{path}.tags", pb.tags, TagSource.SOURCE, out) if pb.tags else ()
    check_strings(f"{path}.business_terms", terms, out)
    check_attributes(f"{path}.attributes", attributes, out)
    check_text(f"{path}.external_id", pb.external_id, MAX_TEXT_BYTES, out)
    if pb.rule_tags:
        out.append(FieldViolation(f"{path}.rule_tags", "is set by Lily's transformers only"))
    event_time = (
        timestamp_or(f"{path}.source_event_time", pb.source_event_time, now, out)
        if pb.HasField("source_event_time")
        else now
    )
    if len(out) > start or asset_type is None:
        return None
    return AssetDraft(
        qualified_name=pb.qualified_name,
        asset_type=asset_type,
        source_event_time=event_time,
        name=pb.name,
        description=pb.description,
        owners=owners,
        data_source=pb.data_source,
        parent_qualified_name=pb.parent_qualified_name,
        tags=tags,
        business_terms=terms,
        attributes=attributes,
        external_id=pb.external_id,
        wire=pb.SerializeToString(),
    )


def check_changed(
    before: AssetDraft, after: AssetDraft, path: str, out: list[FieldViolation]
) -> None:
    """Checks what a transformer changed of a valid draft as draft_from_pb checks an input
    (only the fields that changed: the others were checked when it came in)."""
    for name in _DRAFT_FIELDS:
        value = getattr(after, name)
        if value == getattr(before, name):
            continue
        at = f"{path}.{name}"
        if name in ("qualified_name", "parent_qualified_name"):
            required = name == "qualified_name"
            check_text(at, value, MAX_QUALIFIED_NAME_BYTES, out, required=required)
        elif name == "description":
            check_text(at, value, MAX_DESCRIPTION_BYTES, out)
        elif name in ("owners", "business_terms"):
            check_strings(at, tuple(value), out)
        elif name == "attributes":
            check_attributes(at, dict(value), out)
        elif name in ("tags", "rule_tags"):
            source = TagSource.SOURCE if name == "tags" else TagSource.RULE
            tag_assignments(at, value, source, out)
        elif name == "asset_type":
            if value not in AssetType._value2member_map_:
                out.append(FieldViolation(at, "is not an asset type"))
        elif name == "source_event_time":
            if not isinstance(value, datetime) or value.tzinfo is None:
                out.append(FieldViolation(at, "must be a time with its zone"))
        else:
            check_text(at, value, MAX_TEXT_BYTES, out)


_DRAFT_FIELDS = tuple(f.name for f in dataclasses.fields(AssetDraft) if f.name != "wire")


def draft_from_trusted_pb(pb: common_pb.AssetInput, default_time: datetime) -> AssetDraft:
    """An AssetInput that Lily validated when it accepted it (from its own work queue).
    Hot in the ingest worker: empty fields are skipped rather than converted."""
    event_time = default_time
    if pb.HasField("source_event_time"):
        ts = pb.source_event_time
        event_time = datetime.fromtimestamp(ts.seconds, UTC) + timedelta(
            microseconds=ts.nanos // 1000
        )
    return AssetDraft(
        qualified_name=pb.qualified_name,
        asset_type=_ASSET_TYPES[pb.asset_type],
        source_event_time=event_time,
        name=pb.name,
        description=pb.description,
        owners=tuple(pb.owners) if pb.owners else (),
        data_source=pb.data_source,
        parent_qualified_name=pb.parent_qualified_name,
        tags=_trusted_tags(pb.tags) if pb.tags else (),
        business_terms=tuple(pb.business_terms) if pb.business_terms else (),
        attributes=map_of(pb.attributes) if pb.attributes else {},
        external_id=pb.external_id,
        rule_tags=_trusted_tags(pb.rule_tags) if pb.rule_tags else (),
    )


def _trusted_tags(tags: Iterable[common_pb.TagAssignment]) -> tuple[TagAssignment, ...]:
    return tuple(TagAssignment(t.name, t.value, (), t.propagate) for t in tags)


def ts_pb(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def tag_to_pb(tag: Tag) -> common_pb.Tag:
    return common_pb.Tag(
        name=tag.name,
        value=tag.value,
        source=common_pb.TagSource.ValueType(tag.source),
        upstream_asset_ids=tag.upstream_asset_ids,
        applied_by=tag.applied_by,
        applied_at=ts_pb(tag.applied_at),
        propagate=tag.propagate,
    )


def effective_tags_to_pb(tags: Iterable[Tag]) -> list[common_pb.EffectiveTag]:
    return [
        common_pb.EffectiveTag(
            name=e.name,
            value=e.value,
            source=common_pb.TagSource.ValueType(e.source),
            overridden=[tag_to_pb(t) for t in e.overridden],
        )
        for e in effective_tags(tags)
    ]


def asset_to_pb(asset: Asset, consistency: Consistency | None = None) -> common_pb.Asset:
    return common_pb.Asset(
        tenant_id=asset.tenant_id,
        asset_id=asset.asset_id,
        qualified_name=asset.qualified_name,
        asset_type=common_pb.AssetType.ValueType(asset.asset_type),
        name=asset.name,
        description=asset.description,
        owners=asset.owners,
        data_source=asset.data_source,
        parent_qualified_name=asset.parent_qualified_name,
        parent_id=asset.parent_id,
        tags=[tag_to_pb(t) for t in sorted(asset.tags, key=lambda t: (t.name, t.source))],
        effective_tags=effective_tags_to_pb(asset.tags),
        business_terms=asset.business_terms,
        attributes=dict(asset.attributes),
        version=asset.version,
        is_deleted=asset.is_deleted,
        external_id=asset.external_id,
        created_at=ts_pb(asset.created_at),
        updated_at=ts_pb(asset.updated_at),
        source_event_time=ts_pb(asset.source_event_time),
        consistency=common_pb.ConsistencyClass.ValueType(consistency or 0),
        unhealthy_upstream_asset_ids=asset.unhealthy_upstream,
    )


def relationship_to_pb(edge: LineageEdge) -> common_pb.Relationship:
    return common_pb.Relationship(
        upstream_asset_id=edge.upstream_id,
        downstream_asset_id=edge.downstream_id,
        type=edge.kind,
        source_event_time=ts_pb(edge.source_event_time),
        is_deleted=edge.is_deleted,
    )


def issue_to_pb(issue: Issue) -> common_pb.DataQualityIssue:
    return common_pb.DataQualityIssue(
        issue_id=issue.issue_id,
        asset_id=issue.asset_id,
        external_id=issue.external_id,
        source=issue.source,
        type=issue.type,
        severity=common_pb.IssueSeverity.ValueType(issue.severity),
        status=common_pb.IssueStatus.ValueType(issue.status),
        title=issue.title,
        description=issue.description,
        url=issue.url,
        opened_at=ts_pb(issue.opened_at),
        updated_at=ts_pb(issue.updated_at),
        resolved_at=ts_pb(issue.resolved_at),
    )


def issue_from_pb(
    pb: common_pb.DataQualityIssue,
    tenant_id: str,
    asset_id: str,
    now: datetime,
    out: list[FieldViolation],
) -> Issue:
    check_text("issue.source", pb.source, MAX_TEXT_BYTES, out, required=True)
    check_text("issue.external_id", pb.external_id, MAX_TEXT_BYTES, out, required=True)
    for name in ("type", "title", "url"):
        check_text(f"issue.{name}", getattr(pb, name), MAX_TEXT_BYTES, out)
    check_text("issue.description", pb.description, MAX_DESCRIPTION_BYTES, out)
    severity, status = IssueSeverity.UNSPECIFIED, IssueStatus.OPEN
    try:
        severity = IssueSeverity(pb.severity)
    except ValueError:
        out.append(FieldViolation("issue.severity", f"is not a known severity ({pb.severity})"))
    try:
        status = IssueStatus(pb.status) if pb.status else IssueStatus.OPEN
    except ValueError:
        out.append(FieldViolation("issue.status", f"is not a known status ({pb.status})"))
    opened = timestamp_or("issue.opened_at", pb.opened_at, now, out)
    resolved = (
        timestamp_or("issue.resolved_at", pb.resolved_at, now, out)
        if pb.HasField("resolved_at")
        else None
    )
    if status == IssueStatus.RESOLVED and resolved is None:
        resolved = now
    return Issue(
        tenant_id=tenant_id,
        issue_id="",
        asset_id=asset_id,
        source=pb.source,
        external_id=pb.external_id,
        type=pb.type,
        severity=severity,
        status=status,
        title=pb.title,
        description=pb.description,
        url=pb.url,
        opened_at=opened,
        resolved_at=resolved,
    )


def draft_to_pb(draft: AssetDraft) -> common_pb.AssetInput:
    return common_pb.AssetInput(
        qualified_name=draft.qualified_name,
        asset_type=common_pb.AssetType.ValueType(draft.asset_type),
        name=draft.name,
        description=draft.description,
        owners=draft.owners,
        data_source=draft.data_source,
        parent_qualified_name=draft.parent_qualified_name,
        tags=_tags_pb(draft.tags),
        business_terms=draft.business_terms,
        attributes=dict(draft.attributes),
        external_id=draft.external_id,
        source_event_time=ts_pb(draft.source_event_time),
        rule_tags=_tags_pb(draft.rule_tags),
    )


def _tags_pb(tags: Iterable[TagAssignment]) -> list[common_pb.TagAssignment]:
    return [
        common_pb.TagAssignment(name=t.name, value=t.value, propagate=t.propagate) for t in tags
    ]
