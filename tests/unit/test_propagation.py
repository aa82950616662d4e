"""Propagation's plain functions: where each tag on each downstream asset comes from, and
writing exactly that (the worker around them comes next; core/lineage/propagation.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from core.domain import rules
from core.domain.model import AssetDraft, AssetType, Tag, TagAssignment, TagSource, WriteContext
from core.domain.propagation import (
    DEFAULT_PROPAGATING,
    UNHEALTHY,
    origins,
    own_propagating,
    propagated,
    unhealthy_upstream,
)
from core.domain.rules import Plan

NOW = datetime(2026, 11, 21, tzinfo=UTC)
CTX = WriteContext(tenant_id="t", actor="propagation", action="propagate", now=NOW)


def parents_of(edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {}
    for up, down in edges:
        parents.setdefault(down, []).append(up)
    return parents


def test_a_tag_reaches_everything_downstream_to_the_depth_bound_and_cycles_end():
    chain = [(f"n{i}", f"n{i + 1}") for i in range(12)] + [("n12", "n3")]  # and a cycle
    own = {"n0": {"PII": "email"}}
    found = origins([f"n{i}" for i in range(13)], parents_of(chain), own, max_depth=10)
    assert found["n0"] == {}  # its own tag is not propagated to itself
    assert all(found[f"n{i}"] == {"PII": frozenset({"n0"})} for i in range(1, 11))
    # n11 and n12 are 11 and 12 steps down, past the bound (the cycle back to n3 adds nothing)
    assert found["n11"] == found["n12"] == {}


def test_a_child_keeps_a_tag_while_any_upstream_still_supplies_it():
    edges = [("p1", "child"), ("p2", "child"), ("child", "grandchild")]
    both = {"p1": {"PII": ""}, "p2": {"PII": "name"}}
    found = origins(["child", "grandchild"], parents_of(edges), both, 10)
    assert found["grandchild"] == {"PII": frozenset({"p1", "p2"})}
    one = origins(["child"], parents_of(edges), {"p2": {"PII": "name"}}, 10)
    assert one["child"] == {"PII": frozenset({"p2"})}
    without_edge = origins(["child"], parents_of(edges[1:]), {"p1": {"PII": ""}}, 10)
    assert without_edge["child"] == {}  # only the deleted edge supplied it
    assert propagated(found["child"], both)["PII"] == Tag(
        "PII", TagSource.PROPAGATED, "name", ("p1", "p2")
    )


def test_only_an_assets_own_propagating_tags_propagate():
    tags = [
        Tag("PII", TagSource.USER, "phone"),
        Tag("PII", TagSource.SOURCE, "email"),  # the source's value wins, as in the view
        Tag("GDPR", TagSource.PROPAGATED, "", ("far",)),  # inherited: not an origin here
        Tag("gold", TagSource.USER),
    ]
    assert own_propagating(tags, DEFAULT_PROPAGATING) == {"PII": "email"}


def test_writing_propagated_tags_is_exact_idempotent_and_spares_other_sources():
    plan = Plan()
    draft = AssetDraft(
        "pg://db/s/t",
        AssetType.TABLE,
        NOW,
        tags=(TagAssignment("PII", "own"),),  # its own SOURCE tag
    )
    asset = rules.ingest(None, draft, CTX, plan).asset
    pii = Tag("PII", TagSource.PROPAGATED, "", ("u1", "u2"))
    gdpr = Tag("GDPR", TagSource.PROPAGATED, "", ("u3",))
    tagged = rules.set_derived(asset, {"PII": pii, "GDPR": gdpr}, (), CTX, plan)
    assert tagged.version == asset.version + 1
    assert {(t.name, t.source) for t in tagged.tags} == {
        ("PII", TagSource.SOURCE),
        ("PII", TagSource.PROPAGATED),
        ("GDPR", TagSource.PROPAGATED),
    }
    assert plan.changes[-1].tags_added == ("GDPR", "PII")

    again = rules.set_derived(tagged, {"PII": pii, "GDPR": gdpr}, (), CTX, plan)
    assert again is tagged  # nothing changes twice: no version churn, no event

    fewer = Tag("PII", TagSource.PROPAGATED, "", ("u2",))
    after = rules.set_derived(tagged, {"PII": fewer}, (), CTX, plan)
    assert [t.upstream_asset_ids for t in after.tags if t.source == TagSource.PROPAGATED] == [
        ("u2",)
    ]
    assert plan.changes[-1].tags_removed == ("GDPR",)
    cleared = rules.set_derived(after, {}, (), CTX, plan)
    assert [(t.name, t.source) for t in cleared.tags] == [("PII", TagSource.SOURCE)]


def test_a_tag_marked_propagate_propagates_and_an_open_issue_marks_everything_below():
    tags = [Tag("finance", TagSource.USER, "", propagate=True), Tag("gold", TagSource.USER)]
    assert own_propagating(tags, DEFAULT_PROPAGATING) == {"finance": ""}
    assert own_propagating((), DEFAULT_PROPAGATING, unhealthy=True) == {UNHEALTHY: ""}
    edges = [("a", "b"), ("b", "c"), ("x", "c")]
    own = {"a": own_propagating(tags, DEFAULT_PROPAGATING, unhealthy=True), "x": {UNHEALTHY: ""}}
    found = origins(["b", "c"], parents_of(edges), own, 10)
    assert unhealthy_upstream(found["c"]) == ("a", "x")
    assert unhealthy_upstream(found["b"]) == ("a",)
    assert set(propagated(found["c"], own)) == {"finance"}  # (health is not a tag)


def test_upstream_health_is_written_with_an_event_only_when_it_changes():
    plan = Plan()
    asset = rules.ingest(None, AssetDraft("pg://db/s/v", AssetType.VIEW, NOW), CTX, plan).asset
    sick = rules.set_derived(asset, {}, ("u1",), CTX, plan)
    assert sick.unhealthy_upstream == ("u1",) and sick.version == asset.version + 1
    assert plan.changes[-1].changed_fields == ("unhealthy_upstream_asset_ids",)
    assert rules.set_derived(sick, {}, ("u1",), CTX, plan) is sick
    assert rules.set_derived(sick, {}, (), CTX, plan).unhealthy_upstream == ()
