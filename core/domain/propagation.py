"""Propagation downstream, as plain functions (core/lineage/propagation.md has the plan).

An asset's PROPAGATED tags are recomputed from the truth, never patched: tag T reaches D from
every asset U upstream of D (within the depth bound, over live edges) that carries T as its
own tag (SOURCE, USER or RULE) when T propagates. Those U are T's origins on D, recorded as
the tag's upstream_asset_ids. Removing a tag, an edge or an asset then needs no bookkeeping of
paths: recompute, and what no origin supplies any more is gone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from core.domain.model import Tag, TagSource

DEFAULT_PROPAGATING = frozenset({"PII", "GDPR"})
DEFAULT_MAX_DEPTH = 10

# tag name -> the upstream assets that supply it
Origins = dict[str, frozenset[str]]


def own_propagating(tags: Iterable[Tag], propagating: frozenset[str]) -> dict[str, str]:
    """The propagating tags an asset carries itself (not PROPAGATED ones), name -> value."""
    found: dict[str, str] = {}
    for t in sorted(tags, key=lambda t: t.source.precedence):
        if t.source != TagSource.PROPAGATED and t.name in propagating:
            found.setdefault(t.name, t.value)
    return found


def origins(
    affected: Iterable[str],
    parents: Mapping[str, Sequence[str]],
    own: Mapping[str, Mapping[str, str]],
    max_depth: int,
) -> dict[str, Origins]:
    """For each affected asset, each tag that reaches it and where from: a breadth-first
    walk up `parents` (asset -> its live upstream neighbours) to `max_depth` steps,
    cycle-safe; `own` holds each asset's own propagating tags (own_propagating)."""
    result: dict[str, Origins] = {}
    for start in affected:
        found: dict[str, set[str]] = {}
        seen = {start}
        frontier = [start]
        for _ in range(max_depth):
            following = []
            for node in frontier:
                for up in parents.get(node, ()):
                    if up in seen:
                        continue
                    seen.add(up)
                    following.append(up)
                    for name in own.get(up, {}):
                        found.setdefault(name, set()).add(up)
            if not following:
                break
            frontier = following
        result[start] = {name: frozenset(ups) for name, ups in found.items()}
    return result


def propagated(origins_of: Origins, own: Mapping[str, Mapping[str, str]]) -> dict[str, Tag]:
    """The PROPAGATED tags an asset should carry, by name: each with its origins, and the
    value of the first origin (by id) that gives one."""
    tags = {}
    for name, ups in origins_of.items():
        ordered = sorted(ups)
        value = next((own[u][name] for u in ordered if own.get(u, {}).get(name)), "")
        tags[name] = Tag(name, TagSource.PROPAGATED, value, tuple(ordered))
    return tags
