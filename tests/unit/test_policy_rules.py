"""The Decider decides as Casbin's own enforcer does with policy/model.conf; policy files are
validated whole; every RPC of every service has a permission."""

from __future__ import annotations

import casbin
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lily.v1 import lineage_pb2, metadata_pb2, policy_pb2

from core.domain.errors import InvalidArgument
from policy.permissions import AUTHENTICATED, OPEN, Permission, permission
from policy.rules import (
    GROUP,
    Decider,
    RoleLink,
    Rule,
    builtin_rules,
    model_text,
    parse,
    render,
)

SUBJECTS = ["ann", "bob", "svc", "viewer", "editor", "admin", "r1", "r2"]
DOMAINS = ["acme", "globex", "*"]
OBJECTS = [
    "metadata",
    "lineage",
    "asset:*",
    "asset:TABLE:sf://a/*",
    "asset:TABLE:sf://a/b",
    "tag:PII",
]
ACTIONS = ["read", "write", "*"]

rules_st = st.lists(
    st.builds(
        Rule,
        st.sampled_from(SUBJECTS),
        st.sampled_from(DOMAINS),
        st.sampled_from(OBJECTS),
        st.sampled_from(ACTIONS),
        st.sampled_from(["allow", "allow", "deny"]),
    ),
    max_size=25,
)
links_st = st.lists(
    st.builds(
        RoleLink,
        st.sampled_from(SUBJECTS),
        st.sampled_from(SUBJECTS),
        st.sampled_from(DOMAINS[:2]),
    ).filter(lambda g: g.subject != g.role),
    max_size=12,
)
requests_st = st.lists(
    st.tuples(
        st.sampled_from(SUBJECTS),
        st.sampled_from(DOMAINS[:2]),
        st.sampled_from([*OBJECTS, "asset:TABLE:sf://a/b/c", "asset:VIEW:x", "policy"]),
        st.sampled_from(ACTIONS[:2]),
    ),
    min_size=1,
    max_size=20,
)


def _casbin(rules: list[Rule], links: list[RoleLink]) -> casbin.Enforcer:
    model = casbin.model.Model()
    model.load_model_from_text(model_text())
    e = casbin.Enforcer(model)
    for r in rules:
        e.add_policy(r.subject, r.domain, r.object, r.action, r.effect)
    for g in links:
        e.add_grouping_policy(g.subject, g.role, g.domain)
    return e


@settings(max_examples=150, deadline=None)
@given(rules=rules_st, links=links_st, requests=requests_st)
def test_the_decider_agrees_with_casbins_enforcer(rules, links, requests):
    enforcer = _casbin(rules, links)
    decider = Decider(rules, links)
    for req in requests:
        mine = decider.decide(*req)
        assert mine.allowed == enforcer.enforce(*req), (req, mine)
        if mine.rule is not None:  # the rule it names does match the request
            assert mine.rule in rules


GROUPS = ["Data Engineers", "Everyone"]


@settings(max_examples=100, deadline=None)
@given(
    rules=rules_st,
    links=links_st,
    mapped=st.lists(
        st.tuples(st.sampled_from(GROUPS), st.sampled_from(SUBJECTS), st.sampled_from(DOMAINS[:2])),
        max_size=6,
    ),
    groups=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True),
    requests=requests_st,
)
def test_an_identity_providers_groups_decide_as_casbin_with_the_person_in_them(
    rules, links, mapped, groups, requests
):
    """A principal's groups act as `g, <subject>, group:<name>, <domain>` lines would."""
    mapping = [RoleLink(f"{GROUP}{g}", role, dom) for g, role, dom in mapped]
    decider = Decider(rules, [*links, *mapping])
    for sub, dom, obj, act in requests:
        member = [RoleLink(sub, f"{GROUP}{g}", dom) for g in groups]
        enforcer = _casbin(rules, [*links, *mapping, *member])
        mine = decider.decide(sub, dom, obj, act, groups=groups)
        assert mine.allowed == enforcer.enforce(sub, dom, obj, act), (sub, dom, obj, act, mine)


def test_the_builtin_roles_do_what_their_names_say():
    d = Decider(
        builtin_rules(), [RoleLink("v", "viewer", "acme"), RoleLink("s", "scraper", "acme")]
    )
    assert d.decide("v", "acme", "metadata", "read").allowed
    assert not d.decide("v", "acme", "metadata", "write").allowed
    assert not d.decide("v", "globex", "metadata", "read").allowed  # roles are per tenant
    assert d.decide("s", "acme", "metadata", "write").allowed
    assert not d.decide("s", "acme", "asset:TABLE:sf://x", "write").allowed  # until given prefixes
    assert not d.decide("s", "acme", "tag:PII", "read").allowed
    decided = d.decide("v", "acme", "lineage", "read")
    assert decided.via == "viewer" and decided.rule == Rule("viewer", "*", "lineage", "read")


def test_a_deny_wins_over_any_allow():
    d = Decider(
        [*builtin_rules(), Rule("editor", "acme", "asset:TABLE:sf://secret/*", "write", "deny")],
        [RoleLink("e", "editor", "acme")],
    )
    assert d.decide("e", "acme", "asset:TABLE:sf://open/t", "write").allowed
    denied = d.decide("e", "acme", "asset:TABLE:sf://secret/t", "write")
    assert not denied.allowed and denied.rule is not None and denied.rule.effect == "deny"


def test_policy_files_round_trip_and_are_validated_whole():
    text = "# c\np, a, acme, metadata, read\ng, bob, a, acme\np, a, acme, x, write, deny\n"
    rules, links = parse(text)
    assert render(rules, links) == (
        "p, a, acme, metadata, read, allow\np, a, acme, x, write, deny\ng, bob, a, acme\n"
    )
    with pytest.raises(InvalidArgument) as err:
        parse("p, a, acme, metadata, read\np, a, acme, x, fly\nq, what\ng, a, a, acme\np, ,x,y,z\n")
    fields = {v.field for v in err.value.violations}
    assert {"policy:2.action", "policy:3", "policy:4.role", "policy:5.subject"} <= fields


def test_every_rpc_of_every_service_declares_who_may_call_it():
    methods = {
        f"/{s.full_name}/{m.name}"
        for module in (metadata_pb2, lineage_pb2, policy_pb2)
        for s in module.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    assert {m for m in methods if permission(m) is None} == set()
    assert permission("/lily.v1.MetadataService/GetMetadata") == Permission("metadata", "read")
    assert permission("/lily.v1.PolicyService/IssueToken") is OPEN
    assert permission("/lily.v1.PolicyService/ValidateToken") is AUTHENTICATED
    assert permission("/grpc.health.v1.Health/Check") is OPEN
    assert permission("/lily.v1.MetadataService/NoSuchMethod") is None
    assert permission("/lily.v1.Common/Nothing") is None


KEYS = ["asset:TABLE:sf://a/b", "asset:TABLE:sf://a/c", "asset:VIEW:x", "asset:TABLE:sf://z"]


@given(rules=rules_st, links=links_st, who=st.sampled_from(SUBJECTS))
def test_allowed_on_every_asset_means_allowed_on_each(rules, links, who):
    """allows_all, the ingest's short cut (no asset asked of one by one), never allows what
    decide would refuse; and for an editor or admin of the built-in roles it holds."""
    decider = Decider(rules, links)
    for action in ("write", "read"):
        if decider.allows_all(who, "acme", "asset:", action):
            for key in KEYS:
                assert decider.decide(who, "acme", key, action).allowed, (who, key, action)


def test_editors_and_admins_write_every_asset_scrapers_only_theirs():
    d = Decider(
        [*builtin_rules(), Rule("s", "acme", "asset:TABLE:sf://x/*", "write")],
        [RoleLink("e", "editor", "acme"), RoleLink("s", "scraper", "acme")],
    )
    assert d.allows_all("e", "acme", "asset:", "write")
    assert not d.allows_all("s", "acme", "asset:", "write")  # ask of each asset
    denied = Decider(
        [*builtin_rules(), Rule("e", "acme", "asset:TABLE:sf://secret/*", "write", "deny")],
        [RoleLink("e", "editor", "acme")],
    )
    assert not denied.allows_all("e", "acme", "asset:", "write")  # one prefix is denied
    assert not denied.decide("e", "acme", "asset:TABLE:sf://secret/t", "write").allowed
