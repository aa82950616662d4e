"""Domain rules: identity, last-writer-wins, tag precedence, soft delete, versions.

Each function takes what is stored and what is asked, and returns what to store and which
changes to record. None does I/O; stores call them inside their transaction."""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from core.domain.errors import (
    AssetDeleted,
    AssetNotFound,
    FieldViolation,
    InvalidArgument,
    VersionMismatch,
)
from core.domain.model import (
    Asset,
    AssetDraft,
    AssetType,
    Change,
    ChangeKind,
    Consistency,
    EffectiveTag,
    EntityKind,
    Issue,
    IssueStatus,
    Outcome,
    Tag,
    TagAssignment,
    TagSource,
    WriteContext,
    value,
)

_ASSET_NS = uuid.UUID("6f1c1d1e-7b7a-4f0e-9a53-4c1e5f0a1a11")
_ASSET_NS_BYTES = _ASSET_NS.bytes
_ISSUE_NS = uuid.UUID("0b8b3f5c-2d0c-4bb1-8f3e-1f6f1c7e2d22")

DEFAULT_CONSISTENCY: Mapping[AssetType, Consistency] = {
    AssetType.DATABASE: Consistency.STRONG,
    AssetType.SCHEMA: Consistency.STRONG,
    AssetType.TABLE: Consistency.STRONG,
    AssetType.VIEW: Consistency.STRONG,
    AssetType.DASHBOARD: Consistency.STRONG,
    AssetType.PIPELINE: Consistency.STRONG,
    AssetType.COLUMN: Consistency.EVENTUAL,
    AssetType.BI_FIELD: Consistency.EVENTUAL,
}

# Fields UpdateMetadata may change (update_mask paths).
MUTABLE_FIELDS = (
    "name",
    "description",
    "owners",
    "data_source",
    "business_terms",
    "attributes",
    "external_id",
)
# Fields blanked when a reader may not see an asset's restricted tags (read_view "redacted").
REDACTED_FIELDS = ("description", "attributes", "business_terms", "external_id")
# Fields compared on ingest to decide UNCHANGED.
_CONTENT_FIELDS = (
    "asset_type",
    "name",
    "description",
    "owners",
    "data_source",
    "parent_qualified_name",
    "business_terms",
    "attributes",
    "external_id",
)


# (Kept for the names one ingest call carries again, such as its columns' parents; a bigger
# cache only made every process grow with each new name until it was full, ~20 MB.)
@functools.lru_cache(maxsize=4096)
def asset_id_for(tenant_id: str, qualified_name: str) -> str:
    """Stable id of an asset: the same (tenant, qualified name) always gives the same id
    (a name-based UUID, version 5, as 32 hex digits; computed without uuid's overhead)."""
    digest = bytearray(
        hashlib.sha1(_ASSET_NS_BYTES + f"{tenant_id}\x00{qualified_name}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def issue_id_for(asset_id: str, source: str, external_id: str) -> str:
    return uuid.uuid5(_ISSUE_NS, f"{asset_id}\x00{source}\x00{external_id}").hex


_EVENT_PREFIX = os.urandom(8).hex()
_event_seq = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_event_id() -> str:
    """Unique event id: a random per-process prefix and a counter (32 hex digits)."""
    return f"{_EVENT_PREFIX}{next(_event_seq) & 0xFFFFFFFFFFFFFFFF:016x}"


def effective_tags(tags: Iterable[Tag]) -> list[EffectiveTag]:
    """One tag per name: SOURCE beats USER beats RULE beats PROPAGATED; the rest are kept as
    overridden so nobody's value is lost."""
    by_name: dict[str, list[Tag]] = {}
    for tag in tags:
        by_name.setdefault(tag.name, []).append(tag)
    result = []
    for name in sorted(by_name):
        ranked = sorted(by_name[name], key=lambda t: t.source.precedence)
        top = ranked[0]
        result.append(EffectiveTag(name, top.value, top.source, tuple(ranked[1:])))
    return result


def effective_tag_names(tags: Iterable[Tag]) -> tuple[str, ...]:
    return tuple(sorted({t.name for t in tags})) if tags else ()


@dataclass(slots=True)
class Plan:
    """What a store must write in one transaction, and what to tell the caller."""

    saves: list[Asset] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    # Filled by the store: the outbox records it wrote for `changes` (opaque to the domain).
    outbox: list[Any] = field(default_factory=list)


@value
class Decision:
    outcome: Outcome
    asset: Asset | None
    changed_fields: tuple[str, ...] = ()


def _change(
    ctx: WriteContext,
    asset: Asset,
    kind: ChangeKind,
    fields: Sequence[str],
    added: Sequence[str] = (),
    removed: Sequence[str] = (),
    names: tuple[str, ...] | None = None,
) -> Change:
    return Change(
        event_id=new_event_id(),
        tenant_id=ctx.tenant_id,
        entity=EntityKind.ASSET,
        change=kind,
        asset_id=asset.asset_id,
        qualified_name=asset.qualified_name,
        asset_type=asset.asset_type,
        asset_version=asset.version,
        changed_fields=tuple(fields),
        actor=ctx.actor,
        action=ctx.action,
        occurred_at=ctx.now,
        tags=effective_tag_names(asset.tags) if names is None else names,
        tags_added=tuple(added),
        tags_removed=tuple(removed),
        request_id=ctx.request_id,
        origin=ctx.origin,
        cause_event_id=ctx.cause_event_id,
        trace_headers=ctx.trace_headers,
    )


def with_tags_moved(change: Change, before: Iterable[Tag], after: Iterable[Tag]) -> Change:
    """The change with the names of the asset's own tags (every source but PROPAGATED) whose
    presence, value or propagate flag differ, and of those the ones marked propagate on
    either side."""

    def own(tags: Iterable[Tag]) -> dict[tuple[str, TagSource], Tag]:
        return {t.key: t for t in tags if t.source != TagSource.PROPAGATED}

    b, a = own(before), own(after)
    keys = [
        k
        for k in b.keys() | a.keys()
        if k not in b or k not in a or (b[k].value, b[k].propagate) != (a[k].value, a[k].propagate)
    ]
    flagged = {k[0] for k in keys if (k in b and b[k].propagate) or (k in a and a[k].propagate)}
    return replace(
        change,
        own_tags_moved=tuple(sorted({k[0] for k in keys})),
        propagate_tags_moved=tuple(sorted(flagged)),
    )


def _tags_of(
    assigned: tuple[TagAssignment, ...], source: TagSource, ctx: WriteContext
) -> tuple[Tag, ...]:
    """A draft's tags of one source, one per name (the last given)."""
    if not assigned:
        return ()
    return tuple(
        Tag(t.name, source, t.value, (), ctx.actor, ctx.now, t.propagate)
        for t in {t.name: t for t in assigned}.values()
    )


def _tag_set(tags: Iterable[Tag], source: TagSource) -> set[tuple[str, str, bool]]:
    return {(t.name, t.value, t.propagate) for t in tags if t.source == source}


def ingest(existing: Asset | None, draft: AssetDraft, ctx: WriteContext, plan: Plan) -> Decision:
    """Applies one ingested asset: last writer wins by source event time; the version moves
    only when something changed; SOURCE tags are replaced, other sources' tags kept; a deleted
    asset that is ingested again (newer) comes back."""
    asset_id = asset_id_for(ctx.tenant_id, draft.qualified_name)
    parent_id = (
        asset_id_for(ctx.tenant_id, draft.parent_qualified_name)
        if draft.parent_qualified_name
        else ""
    )
    source_tags = _tags_of(draft.tags, TagSource.SOURCE, ctx)
    rule_tags = _tags_of(draft.rule_tags, TagSource.RULE, ctx)
    fields = _draft_fields(draft, parent_id)
    if existing is None:
        asset = Asset(
            tenant_id=ctx.tenant_id,
            asset_id=asset_id,
            qualified_name=draft.qualified_name,
            version=1,
            created_at=ctx.now,
            updated_at=ctx.now,
            source_event_time=draft.source_event_time,
            tags=source_tags + rule_tags,
            **fields,
        )
        plan.saves.append(asset)
        names = effective_tag_names(asset.tags)
        plan.changes.append(
            _change(ctx, asset, ChangeKind.CREATED, ("*",), added=names, names=names)
        )
        return Decision(Outcome.CREATED, asset, ("*",))
    if draft.source_event_time < existing.source_event_time:
        return Decision(Outcome.STALE, existing)
    changed = [
        f for f in _CONTENT_FIELDS if _norm(getattr(draft, f)) != _norm(getattr(existing, f))
    ]
    old_source = _tag_set(existing.tags, TagSource.SOURCE)
    new_source = {(t.name, t.value, t.propagate) for t in source_tags}
    # a transformer's RULE tags are added or updated, never removed by an ingest
    renamed = {t.name for t in rule_tags}
    if old_source != new_source or (
        rule_tags
        and not {(t.name, t.value, t.propagate) for t in rule_tags}
        <= _tag_set(existing.tags, TagSource.RULE)
    ):
        changed.append("tags")
    if existing.is_deleted:
        changed.append("is_deleted")
    if not changed:
        return Decision(Outcome.UNCHANGED, existing)
    kept = tuple(
        t
        for t in existing.tags
        if t.source != TagSource.SOURCE and not (t.source == TagSource.RULE and t.name in renamed)
    )
    asset = replace(
        existing,
        tags=kept + source_tags + rule_tags,
        is_deleted=False,
        version=existing.version + 1,
        updated_at=ctx.now,
        source_event_time=draft.source_event_time,
        **fields,
    )
    before, after = set(effective_tag_names(existing.tags)), set(effective_tag_names(asset.tags))
    plan.saves.append(asset)
    change = _change(
        ctx, asset, ChangeKind.UPDATED, changed, sorted(after - before), sorted(before - after)
    )
    if "tags" in changed:
        change = with_tags_moved(change, existing.tags, asset.tags)
    plan.changes.append(change)
    return Decision(Outcome.UPDATED, asset, tuple(changed))


def _draft_fields(draft: AssetDraft, parent_id: str) -> dict[str, Any]:
    """The asset fields an ingest sets from the draft (the rest are kept or derived)."""
    return {
        "asset_type": draft.asset_type,
        "name": draft.name,
        "description": draft.description,
        "owners": draft.owners,
        "data_source": draft.data_source,
        "parent_qualified_name": draft.parent_qualified_name,
        "parent_id": parent_id,
        "business_terms": draft.business_terms,
        "attributes": dict(draft.attributes),
        "external_id": draft.external_id,
    }


def _norm(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _check_writable(asset_id: str, existing: Asset | None, expected_version: int | None) -> Asset:
    if existing is None:
        raise AssetNotFound(asset_id)
    if existing.is_deleted:
        raise AssetDeleted(asset_id)
    if expected_version is not None and expected_version != existing.version:
        raise VersionMismatch(asset_id, expected_version, existing.version)
    return existing


def masked_values(
    paths: Sequence[str], fields: Mapping[str, object], out: list[FieldViolation]
) -> dict[str, object]:
    """What an update sets: each path of its field mask once (in mask order), with its value
    in `fields`, as an asset keeps it (a sequence as a tuple, a mapping as a dict). A mask
    that is empty or names a field an update may not change is reported in `out`."""
    if not paths:
        out.append(FieldViolation("update_mask", "is required"))
    values: dict[str, object] = {}
    for i, path in enumerate(paths):
        if path not in MUTABLE_FIELDS:
            out.append(
                FieldViolation(
                    f"update_mask.paths[{i}]",
                    f"{path!r} is not one of {', '.join(MUTABLE_FIELDS)}",
                )
            )
        elif path not in values:
            values[path] = _kept(fields[path])
    return values


def _kept(value: object) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable):
        return tuple(value)
    return value


def redact(asset: Asset) -> Asset:
    """The asset with REDACTED_FIELDS blanked (for a reader who may not see its restricted
    tags)."""
    return replace(asset, description="", attributes={}, business_terms=(), external_id="")


def assignable(source: TagSource) -> None:
    """Refuses a tag source nobody may assign by hand: PROPAGATED tags come from lineage
    (the propagation worker owns them and would withdraw a manual one at its next pass)."""
    if source == TagSource.PROPAGATED:
        raise InvalidArgument(
            [
                FieldViolation(
                    "source",
                    "PROPAGATED tags come from lineage (the propagation worker owns them): "
                    "tag the upstream asset instead",
                )
            ]
        )


def update(
    asset_id: str,
    existing: Asset | None,
    values: Mapping[str, object],
    expected_version: int | None,
    event_time: datetime,
    ctx: WriteContext,
    plan: Plan,
) -> Decision:
    """Sets the given mutable fields. Refuses a missing or deleted asset and a version
    mismatch; an update older than the stored source event time is STALE."""
    current = _check_writable(asset_id, existing, expected_version)
    if event_time < current.source_event_time:
        return Decision(Outcome.STALE, current)
    changed = tuple(f for f in values if _norm(values[f]) != _norm(getattr(current, f)))
    if not changed:
        return Decision(Outcome.UNCHANGED, current)
    asset = replace(
        current,
        **{f: values[f] for f in changed},  # type: ignore[arg-type]
        version=current.version + 1,
        updated_at=ctx.now,
        source_event_time=event_time,
    )
    plan.saves.append(asset)
    plan.changes.append(_change(ctx, asset, ChangeKind.UPDATED, changed))
    return Decision(Outcome.UPDATED, asset, changed)


def update_tags(
    asset_id: str,
    existing: Asset | None,
    add: Sequence[TagAssignment],
    remove: Sequence[str],
    source: TagSource,
    expected_version: int | None,
    ctx: WriteContext,
    plan: Plan,
) -> tuple[Asset, list[str], list[str]]:
    """Adds and removes one source's tags. Returns the asset and the tag names that were
    actually added and removed (for that source). Other sources' tags are never touched."""
    current = _check_writable(asset_id, existing, expected_version)
    mine = {t.name: t for t in current.tags if t.source == source}
    others = [t for t in current.tags if t.source != source]
    added, removed = [], []
    for name in remove:
        if mine.pop(name, None) is not None:
            removed.append(name)
    for a in add:
        old = mine.get(a.name)
        upstream = tuple(
            sorted(set(a.upstream_asset_ids) | set(old.upstream_asset_ids if old else ()))
        )
        tag = Tag(a.name, source, a.value, upstream, ctx.actor, ctx.now, a.propagate)
        if old is None or (old.value, old.upstream_asset_ids, old.propagate) != (
            tag.value,
            tag.upstream_asset_ids,
            tag.propagate,
        ):
            mine[a.name] = tag
            added.append(a.name)
    if not added and not removed:
        return current, [], []
    asset = replace(
        current,
        tags=tuple(others) + tuple(mine.values()),
        version=current.version + 1,
        updated_at=ctx.now,
    )
    plan.saves.append(asset)
    if added:
        change = _change(ctx, asset, ChangeKind.TAGGED, ("tags",), added=added)
        plan.changes.append(with_tags_moved(change, current.tags, asset.tags))
    if removed:
        change = _change(ctx, asset, ChangeKind.UNTAGGED, ("tags",), removed=removed)
        plan.changes.append(with_tags_moved(change, current.tags, asset.tags))
    return asset, added, removed


def propagated_delta(tags: Iterable[Tag], wanted: Mapping[str, Tag]) -> tuple[list[str], list[str]]:
    """The PROPAGATED tag names to (re)write, by value or origins, and to remove, for the
    tags to become `wanted`."""
    mine = {t.name: t for t in tags if t.source == TagSource.PROPAGATED}
    removed = sorted(set(mine) - set(wanted))
    added = sorted(
        name
        for name, t in wanted.items()
        if name not in mine
        or (mine[name].value, mine[name].upstream_asset_ids) != (t.value, t.upstream_asset_ids)
    )
    return added, removed


def derived_differs(asset: Asset, wanted: Mapping[str, Tag], unhealthy: tuple[str, ...]) -> bool:
    """Whether the asset's derived state (PROPAGATED tags, unhealthy upstream) is not yet
    `wanted` and `unhealthy` (set_derived would write it)."""
    return any(propagated_delta(asset.tags, wanted)) or asset.unhealthy_upstream != unhealthy


def request_propagation(
    asset_id: str, existing: Asset | None, event_id: str, ctx: WriteContext, plan: Plan
) -> None:
    """A PropagateDownstream request: an audited change on the asset whose event (id
    `event_id`, the job's id) the propagation worker runs."""
    if existing is None or existing.is_deleted:
        raise AssetNotFound(asset_id)
    change = _change(ctx, existing, ChangeKind.CREATED, (), names=())
    plan.changes.append(replace(change, event_id=event_id, entity=EntityKind.PROPAGATION))


def set_derived(
    existing: Asset,
    wanted: Mapping[str, Tag],
    unhealthy: tuple[str, ...],
    ctx: WriteContext,
    plan: Plan,
) -> Asset:
    """Makes what propagation derives for an asset exactly so: its PROPAGATED tags `wanted`
    (by name: value and origins; see core.domain.propagation), leaving every other source's
    tags alone, and its unhealthy upstream `unhealthy`. Nothing changes, and the version
    stays, when they already are; ctx.cause_event_id says what caused it."""
    if existing.is_deleted or not derived_differs(existing, wanted, unhealthy):
        return existing
    added, removed = propagated_delta(existing.tags, wanted)
    health = existing.unhealthy_upstream != unhealthy
    gone = {*removed, *added}  # (an added name whose origins changed is replaced)
    tags = [t for t in existing.tags if t.source != TagSource.PROPAGATED or t.name not in gone]
    tags += [replace(wanted[n], applied_by=ctx.actor, applied_at=ctx.now) for n in added]
    asset = replace(
        existing,
        tags=tuple(tags),
        unhealthy_upstream=unhealthy,
        version=existing.version + 1,
        updated_at=ctx.now,
    )
    plan.saves.append(asset)
    if added:
        plan.changes.append(_change(ctx, asset, ChangeKind.TAGGED, ("tags",), added=added))
    if removed:
        plan.changes.append(_change(ctx, asset, ChangeKind.UNTAGGED, ("tags",), removed=removed))
    if health:
        fields = ("unhealthy_upstream_asset_ids",)
        health_change = _change(ctx, asset, ChangeKind.UPDATED, fields)
        plan.changes.append(replace(health_change, unhealthy_upstream=unhealthy))
    return asset


def delete(
    asset_id: str,
    existing: Asset | None,
    expected_version: int | None,
    ctx: WriteContext,
    plan: Plan,
) -> tuple[Asset, bool]:
    """Soft delete. Deleting a deleted asset changes nothing and is not an error."""
    if existing is None:
        raise AssetNotFound(asset_id)
    if existing.is_deleted:
        return existing, True
    if expected_version is not None and expected_version != existing.version:
        raise VersionMismatch(asset_id, expected_version, existing.version)
    asset = replace(existing, is_deleted=True, version=existing.version + 1, updated_at=ctx.now)
    plan.saves.append(asset)
    plan.changes.append(_change(ctx, asset, ChangeKind.DELETED, ("is_deleted",)))
    return asset, False


def attach_issue(
    asset_id: str,
    existing_asset: Asset | None,
    existing_issue: Issue | None,
    issue: Issue,
    ctx: WriteContext,
    plan: Plan,
    *,
    of_deleted: bool = False,
) -> tuple[Issue, bool]:
    """Attaches (or updates, for the same source and external id) a data-quality issue; with
    `of_deleted`, to a deleted asset too (Lily's own rules speak of deleted assets)."""
    if of_deleted and existing_asset is None:
        raise AssetNotFound(asset_id)
    asset = existing_asset if of_deleted else _check_writable(asset_id, existing_asset, None)
    assert asset is not None
    stored = replace(
        issue,
        tenant_id=ctx.tenant_id,
        asset_id=asset_id,
        issue_id=issue_id_for(asset_id, issue.source, issue.external_id),
        opened_at=(existing_issue.opened_at if existing_issue else None)
        or issue.opened_at
        or ctx.now,
        updated_at=ctx.now,
    )
    if existing_issue is not None and replace(existing_issue, updated_at=None) == replace(
        stored, updated_at=None
    ):
        return existing_issue, False
    plan.issues.append(stored)
    kind = ChangeKind.ATTACHED if existing_issue is None else ChangeKind.UPDATED
    change = _change(ctx, asset, kind, ("issues",))
    plan.changes.append(replace(change, entity=EntityKind.ISSUE, issue=stored))
    return stored, existing_issue is None


def resolve_issue(
    asset_id: str,
    existing_asset: Asset | None,
    existing_issue: Issue | None,
    ctx: WriteContext,
    plan: Plan,
) -> bool:
    """Resolves an issue that is not resolved yet, keeping what it says; False if there is no
    such issue or it is resolved already."""
    if existing_issue is None or existing_issue.status == IssueStatus.RESOLVED:
        return False
    resolved = replace(existing_issue, status=IssueStatus.RESOLVED, resolved_at=ctx.now)
    attach_issue(asset_id, existing_asset, existing_issue, resolved, ctx, plan, of_deleted=True)
    return True
