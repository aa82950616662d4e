"""The transformation hooks without servers: the built-in PII classifier and qualified-name
normaliser, and the pipeline's handling of what a plug-in returns, refuses, breaks or takes
too long over."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from core.domain.model import AssetDraft, AssetType, TagAssignment
from core.lifecycle import StartupError
from core.settings import TransformSettings
from core.transforms import Reject
from core.transforms.names import QualifiedNameNormaliser
from core.transforms.pii import PiiClassifier
from core.transforms.pipeline import Hooks, Pipeline, Stage

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _draft(qn: str, kind: AssetType = AssetType.COLUMN, **fields: object) -> AssetDraft:
    return AssetDraft(qn, kind, NOW, name=qn.rsplit("/", 1)[-1], **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "data_type", "kind"),
    [
        ("customer_email", "varchar(255)", "email"),
        ("customerEmail", "", "email"),
        ("EMAIL_ADDRESS", "STRING", "email"),
        ("phone_number", "bigint", "phone"),
        ("mobile", "text", "phone"),
        ("ssn", "", "national_id"),
        ("passport_no", "varchar", "national_id"),
        ("iban", "string", "iban"),
        ("bank_account_number", "varchar", "iban"),
        ("card_number", "varchar", "card_number"),
        ("date_of_birth", "date", "date_of_birth"),
        ("last_name", "text", "person_name"),
        ("shipping_address", "text", "address"),
        ("ip_address", "inet", "ip_address"),
        # a flag, a count, a kind or a hash of the thing is not the thing
        ("has_email", "boolean", None),
        ("email_count", "int", None),
        ("email_verified", "", None),
        ("phone_type", "varchar", None),
        ("email_hash", "varchar", None),
        # the type must fit, when it is known
        ("email", "boolean", None),
        ("dob", "int", None),
        # and whole words only
        ("description", "text", None),
        ("order_id", "int", None),
        ("pantry", "text", None),
    ],
)
def test_the_pii_classifier_reads_names_and_types(name, data_type, kind):
    found = PiiClassifier().classify(name, data_type)
    assert (found[0] if found else None) == kind


async def test_the_pii_classifier_sets_a_rule_tag_with_its_reason_on_fields_only():
    pii = PiiClassifier()
    column = _draft("pg://h/db/s/t/email", attributes={"data_type": "text"})
    tagged = await pii.transform("t", column)
    assert tagged.rule_tags == (TagAssignment("PII", "email: name email, type text"),)
    assert tagged.wire == b""  # encoded again for the queue
    assert await pii.transform("t", tagged) == tagged  # (the same again: no second tag)
    table = _draft("pg://h/db/s/email", AssetType.TABLE)
    assert await pii.transform("t", table) is table
    assert await PiiClassifier(kinds=["phone"]).transform("t", column) is column
    with pytest.raises(ValueError, match="unknown kinds"):
        PiiClassifier(kinds=["shoe_size"])


def test_the_normaliser_spells_one_asset_one_way():
    n = QualifiedNameNormaliser()
    assert n.normalise("POSTGRESQL://Host:5432//db/public/Orders/") == (
        "postgres://host/db/public/Orders"
    )
    assert n.normalise("postgres://host:6543/db") == "postgres://host:6543/db"  # not default
    assert n.normalise("not a url") == "not a url"
    assert QualifiedNameNormaliser(case="upper").normalise("snowflake://acct/db/s/t") == (
        "snowflake://acct/DB/S/T"
    )
    with pytest.raises(ValueError, match="case"):
        QualifiedNameNormaliser(case="title")


class _Plugin:
    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour

    async def transform(self, tenant_id: str, draft: AssetDraft) -> AssetDraft:
        return await self.behaviour(draft)


async def _run(behaviour, *names: str, skip: bool = False):
    pipeline = Pipeline([Stage("demo", _Plugin(behaviour), 0.05, skip)])
    drafts = [(i, _draft(f"pg://h/db/s/t/{n}")) for i, n in enumerate(names)]
    return await pipeline.run("t", drafts)


async def test_a_plugin_refuses_breaks_or_stalls_only_its_own_asset():
    async def behaviour(draft: AssetDraft) -> AssetDraft:
        if draft.name == "no":
            raise Reject("not wanted")
        if draft.name == "boom":
            raise KeyError("x")
        if draft.name == "slow":
            await asyncio.sleep(1)
        if draft.name == "bad":
            return replace(draft, qualified_name="")
        if draft.name == "odd":
            return "not a draft"  # type: ignore[return-value]
        if draft.name.startswith("waits"):  # waits a moment, within its budget
            await asyncio.sleep(0.001)
            if draft.name == "waits-fails":
                raise Reject("after a look")
            return replace(draft, description="waited")
        return replace(draft, description="seen")

    names = ("ok", "no", "boom", "slow", "bad", "odd", "ok2", "waits", "waits-fails")
    kept, refused = await _run(behaviour, *names)
    assert [(i, d.description) for i, d in kept] == [(0, "seen"), (6, "seen"), (7, "waited")]
    why = {i: reason for i, _, reason in refused}
    assert "refused by demo: not wanted" in why[1]
    assert "demo failed: KeyError" in why[2]
    assert "demo took longer than its 50 ms" in why[3]
    assert "qualified_name: is required" in why[4]
    assert "not an AssetDraft but str" in why[5]
    assert "refused by demo: after a look" in why[8]

    kept, refused = await _run(behaviour, "ok", "no", "boom", "slow", skip=True)
    assert [i for i, _ in kept] == [0, 2, 3]  # skipped: kept as they were
    assert [i for i, _, _ in refused] == [1]  # its own refusal refuses still
    assert kept[1][1].description == ""


def test_an_unknown_plugin_stops_the_start_naming_what_is_installed():
    with pytest.raises(StartupError, match=r"no transformer named 'nope'.*pii"):
        Hooks({"*": [TransformSettings(name="nope")]}, {})
    with pytest.raises(StartupError, match="could not be made"):
        Hooks({"*": [TransformSettings(name="pii", options={"kinds": ["x"]})]}, {})
    hooks = Hooks({"*": [TransformSettings(name="pii")], "t1": []}, {})
    assert hooks.pipeline("anyone") is not None
    assert hooks.pipeline("t1") is None  # its own empty list: none for it


async def test_an_action_that_fails_or_stalls_says_why_and_nothing_else_breaks():
    from lily.v1 import events_pb2 as events_pb

    class Flaky:
        def __init__(self, how: str) -> None:
            self.how = how
            self.seen: list[str] = []

        async def handle(self, event: events_pb.ChangeEvent) -> None:
            if self.how == "fail":
                raise OSError("disk full")
            if self.how == "stall":
                await asyncio.sleep(1)
            self.seen.append(event.event_id)

    event = events_pb.ChangeEvent(event_id="e1", tenant_id="t")
    hooks = Hooks({}, {})
    ok, fail, stall = Flaky("ok"), Flaky("fail"), Flaky("stall")
    assert await hooks.act(Stage("ok", ok, 0.05, False), event) == ""
    assert ok.seen == ["e1"]
    assert await hooks.act(Stage("fail", fail, 0.05, False), event) == (
        "fail failed: OSError: disk full"
    )
    assert await hooks.act(Stage("stall", stall, 0.05, False), event) == (
        "stall took longer than its 50 ms"
    )
