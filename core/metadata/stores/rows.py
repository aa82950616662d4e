"""How every asset store writes the parts of an asset that have no column type of their own."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from core.domain.model import Tag, TagSource

# An asset's stored fields, in the order both stores write them (after the tenant).
ASSET_COLUMNS = (
    "asset_id",
    "qualified_name",
    "asset_type",
    "name",
    "description",
    "owners",
    "data_source",
    "parent_qualified_name",
    "parent_id",
    "tags",
    "tag_names",
    "business_terms",
    "attributes",
    "external_id",
    "version",
    "is_deleted",
    "created_at",
    "updated_at",
    "source_event_time",
    "unhealthy_upstream",
)


def tag_json(tag: Tag) -> dict[str, Any]:
    d = {
        "n": tag.name,
        "s": int(tag.source),
        "v": tag.value,
        "u": list(tag.upstream_asset_ids),
        "by": tag.applied_by,
        "at": tag.applied_at.isoformat() if tag.applied_at else None,
    }
    if tag.propagate:
        d["p"] = True
    return d


def tag_from_json(d: Mapping[str, Any]) -> Tag:
    return Tag(
        d["n"],
        TagSource(d["s"]),
        d.get("v", ""),
        tuple(d.get("u", ())),
        d.get("by", ""),
        datetime.fromisoformat(d["at"]) if d.get("at") else None,
        bool(d.get("p", False)),
    )
