"""Propagation downstream, as plain functions (core/lineage/propagation.md has the plan).

An asset's PROPAGATED tags are recomputed from the truth, never patched: tag T reaches D from
every asset U upstream of D (within the depth bound, over live edges) that carries T as its
own tag (SOURCE, USER or RULE) when T propagates. Those U are T's origins on D, recorded as
the tag's upstream_asset_ids. Removing a tag, an edge or an asset then needs no bookkeeping of
paths: recompute, and what no origin supplies any more is gone.

Upstream health is the same function: an asset with an open data-quality issue supplies the
pseudo-tag UNHEALTHY (a name no real tag can have), and an asset's unhealthy upstream is that
tag's origins."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from core.domain.model import Tag, TagSource

DEFAULT_PROPAGATING = frozenset({"PII", "GDPR"})
DEFAULT_MAX_DEPTH = 10

# The pseudo-tag of an asset with an open issue (tag names start with a letter or digit).
UNHEALTHY = "!unhealthy"

# tag name -> the upstream assets that supply it
Origins = dict[str, frozenset[str]]


def own_propagating(
    tags: Iterable[Tag], propagating: frozenset[str], unhealthy: bool = False
) -> dict[str, str]:
    """What an asset supplies downstream, name -> value: the propagating tags it carries
    itself (configured ones, and any marked propagate; never PROPAGATED ones), and
    UNHEALTHY if it has an open issue."""
    found: dict[str, str] = {}
    for t in sorted(tags, key=lambda t: t.source.precedence):
        if t.source != TagSource.PROPAGATED and (t.name in propagating or t.propagate):
            found.setdefault(t.name, t.value)
    if unhealthy:
        found[UNHEALTHY] = ""
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


def unhealthy_upstream(origins_of: Origins) -> tuple[str, ...]:
    """The assets upstream with an open issue, in id order."""
    return tuple(sorted(origins_of.get(UNHEALTHY, ())))


def propagated(origins_of: Origins, own: Mapping[str, Mapping[str, str]]) -> dict[str, Tag]:
    """The PROPAGATED tags an asset should carry, by name: each with its origins, and the
    value of the first origin (by id) that gives one."""
    tags = {}
    for name, ups in origins_of.items():
        if name == UNHEALTHY:
            continue
        ordered = sorted(ups)
        value = next((own[u][name] for u in ordered if own.get(u, {}).get(name)), "")
        tags[name] = Tag(name, TagSource.PROPAGATED, value, tuple(ordered))
    return tags
