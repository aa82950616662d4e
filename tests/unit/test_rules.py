"""Domain rules, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.domain import rules
from core.domain.errors import AssetDeleted, AssetNotFound, VersionMismatch
from core.domain.model import (
    AssetDraft,
    AssetType,
    Outcome,
    Tag,
    TagAssignment,
    TagSource,
    WriteContext,
)
from core.domain.rules import Plan

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CTX = WriteContext(tenant_id="acme", actor="ann", action="test", now=NOW)


def draft(**kw):
    kw.setdefault("qualified_name", "pg://h/db/s/t")
    kw.setdefault("asset_type", AssetType.TABLE)
    kw.setdefault("source_event_time", NOW)
    return AssetDraft(**kw)


def test_asset_id_depends_on_tenant_and_name_only():
    assert rules.asset_id_for("a", "x") == rules.asset_id_for("a", "x")
    assert rules.asset_id_for("a", "x") != rules.asset_id_for("b", "x")
    assert rules.asset_id_for("a", "x") != rules.asset_id_for("a", "y")


def test_ingest_create_unchanged_update_stale():
    p = Plan()
    created = rules.ingest(None, draft(description="a"), CTX, p)
    assert created.outcome == Outcome.CREATED and created.asset.version == 1 and len(p.changes) == 1
    same = rules.ingest(created.asset, draft(description="a"), CTX, p)
    assert same.outcome == Outcome.UNCHANGED and len(p.saves) == 1
    later = draft(description="b", source_event_time=NOW + timedelta(seconds=1))
    updated = rules.ingest(created.asset, later, CTX, p)
    assert (updated.outcome, updated.asset.version, updated.changed_fields) == (
        Outcome.UPDATED,
        2,
        ("description",),
    )
    stale = rules.ingest(updated.asset, draft(description="c"), CTX, p)
    assert stale.outcome == Outcome.STALE and stale.asset.description == "b"


def test_source_tags_are_replaced_on_ingest_and_other_sources_kept():
    p = Plan()
    a = rules.ingest(None, draft(tags=(TagAssignment("PII", "email"),)), CTX, p).asset
    a, added, _ = rules.update_tags(
        a.asset_id, a, [TagAssignment("PII", "none")], [], TagSource.USER, None, CTX, p
    )
    assert added == ["PII"]
    b = rules.ingest(a, draft(tags=(TagAssignment("GDPR"),)), CTX, p).asset
    assert {(t.name, t.source) for t in b.tags} == {
        ("PII", TagSource.USER),
        ("GDPR", TagSource.SOURCE),
    }


def test_effective_tags_follow_precedence_and_keep_the_rest():
    tags = [
        Tag("PII", TagSource.PROPAGATED, "p", ("u",)),
        Tag("PII", TagSource.USER, "u"),
        Tag("PII", TagSource.SOURCE, "s"),
        Tag("X", TagSource.RULE, "r"),
    ]
    eff = {e.name: e for e in rules.effective_tags(tags)}
    assert (eff["PII"].value, eff["PII"].source) == ("s", TagSource.SOURCE)
    assert [t.source for t in eff["PII"].overridden] == [TagSource.USER, TagSource.PROPAGATED]
    assert eff["X"].source == TagSource.RULE
    user_vs_rule = rules.effective_tags(
        [Tag("Y", TagSource.RULE, "r"), Tag("Y", TagSource.USER, "u")]
    )
    assert user_vs_rule[0].source == TagSource.USER


def test_update_refusals():
    p = Plan()
    a = rules.ingest(None, draft(), CTX, p).asset
    with pytest.raises(AssetNotFound):
        rules.update("x", None, {"name": "n"}, None, NOW, CTX, p)
    with pytest.raises(VersionMismatch) as err:
        rules.update(a.asset_id, a, {"name": "n"}, 5, NOW, CTX, p)
    assert err.value.current_version == 1
    d, already = rules.delete(a.asset_id, a, None, CTX, p)
    assert d.is_deleted and not already
    assert rules.delete(a.asset_id, d, None, CTX, p) == (d, True)
    with pytest.raises(AssetDeleted):
        rules.update(a.asset_id, d, {"name": "n"}, None, NOW, CTX, p)


def test_propagated_tags_merge_their_upstreams():
    p = Plan()
    a = rules.ingest(None, draft(), CTX, p).asset
    a, _, _ = rules.update_tags(
        a.asset_id, a, [TagAssignment("PII", "", ("u1",))], [], TagSource.PROPAGATED, None, CTX, p
    )
    a, added, _ = rules.update_tags(
        a.asset_id, a, [TagAssignment("PII", "", ("u2",))], [], TagSource.PROPAGATED, None, CTX, p
    )
    assert added == ["PII"]
    assert [t.upstream_asset_ids for t in a.tags] == [("u1", "u2")]
    v = a.version
    a, added, _ = rules.update_tags(
        a.asset_id, a, [TagAssignment("PII", "", ("u1",))], [], TagSource.PROPAGATED, None, CTX, p
    )
    assert (added, a.version) == ([], v)  # idempotent


def test_a_transformers_rule_tags_are_added_or_updated_never_removed_by_ingest():
    p = Plan()
    pii = TagAssignment("PII", "email: name email")
    a = rules.ingest(None, draft(rule_tags=(pii,)), CTX, p).asset
    assert [(t.name, t.source, t.value) for t in a.tags] == [("PII", TagSource.RULE, pii.value)]
    assert rules.ingest(a, draft(rule_tags=(pii,)), CTX, p).outcome == Outcome.UNCHANGED
    # without it (the classifier off, or the name no longer matching): kept
    assert rules.ingest(a, draft(), CTX, p).outcome == Outcome.UNCHANGED
    # with another reason: updated in place, one RULE tag of the name
    later = NOW + timedelta(seconds=1)
    moved = TagAssignment("PII", "phone: name phone")
    b = rules.ingest(a, draft(rule_tags=(moved,), source_event_time=later), CTX, p)
    assert b.outcome == Outcome.UPDATED and "tags" in b.changed_fields
    assert [(t.name, t.source, t.value) for t in b.asset.tags] == [
        ("PII", TagSource.RULE, moved.value)
    ]
    # SOURCE tags are replaced as ever, the RULE tag stays
    c = rules.ingest(b.asset, draft(tags=(TagAssignment("gold"),), source_event_time=later), CTX, p)
    assert {(t.name, t.source) for t in c.asset.tags} == {
        ("PII", TagSource.RULE),
        ("gold", TagSource.SOURCE),
    }
