"""The directory's rules (policy/directory.py) and how Okta's words become its updates
(adapters/okta/mapping.py), without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from lily.v1 import policy_pb2 as P

from adapters.okta import mapping
from core.domain.errors import InvalidArgument
from policy.directory import MembershipUpdate, StatusUpdate, Sweep, Update, apply, check
from policy.model import PersonRecord

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _person(uid: str, at: datetime, *groups: str, status: str = "ACTIVE") -> PersonRecord:
    return PersonRecord("t", uid, f"{uid}@acme.com", "", status, groups, "login", at)


def test_updates_apply_in_order_and_an_older_one_is_skipped_for_that_person():
    known = {"u1": _person("u1", T0, "eng")}
    done = apply(
        "t",
        known,
        [
            Update(T0 + timedelta(seconds=1), MembershipUpdate("u1", "", "ops", True)),
            Update(T0 - timedelta(seconds=5), StatusUpdate("u1", "", "DEPROVISIONED")),  # stale
            Update(T0 + timedelta(seconds=2), MembershipUpdate("u1", "", "eng", False)),
            Update(T0, MembershipUpdate("u2", "u2@acme.com", "eng", True)),  # a stranger
        ],
        "hook",
    )
    people = {p.user_id: p for p in done.people}
    assert done.stale == 1
    assert (people["u1"].groups, people["u1"].status) == (("ops",), "ACTIVE")
    assert people["u1"].observed_at == T0 + timedelta(seconds=2)
    assert people["u1"].source == "hook" and people["u1"].login == "u1@acme.com"
    assert (people["u2"].groups, people["u2"].login) == (("eng",), "u2@acme.com")


def test_an_update_that_changes_nothing_writes_nothing():
    known = {"u1": _person("u1", T0, "eng")}
    same = _person("u1", T0, "eng")
    assert apply("t", known, [Update(T0, same)], "login").people == ()


def test_a_sweep_deactivates_whom_the_reading_did_not_find_unless_part_of_it_is_missing():
    start = T0 + timedelta(minutes=1)
    known = {
        "seen": _person("seen", start + timedelta(seconds=3)),
        "gone": _person("gone", T0),
        "late": _person("late", start + timedelta(seconds=9)),  # a hook after the start
    }
    whole = apply("t", known, [Update(start, Sweep(start, 2))], "reconcile")
    assert [(p.user_id, p.status) for p in whole.people] == [("gone", "DEPROVISIONED")]
    # the reading found three, Lily heard of two since: a part never arrived
    partial = apply("t", known, [Update(start, Sweep(start, 3))], "reconcile")
    assert (partial.people, partial.stale) == ((), 1)


def test_updates_are_checked_before_anything_is_written():
    with pytest.raises(InvalidArgument) as err:
        check(
            [
                Update(T0, StatusUpdate("", "", "ACTIVE")),
                Update(T0, StatusUpdate("u1", "", "")),
                Update(T0, MembershipUpdate("u1", "", "", True)),
            ],
            "gossip",
        )
    assert [v.field for v in err.value.violations] == [
        "source",
        "updates[0].user_id",
        "updates[1].status",
        "updates[2].membership.group",
    ]


def _event(kind: str, published: str, *targets: dict) -> dict:
    return {"eventType": kind, "published": published, "target": list(targets)}


USER = {"type": "User", "id": "00u1", "alternateId": "ann@acme.com"}
GROUP = {"type": "UserGroup", "id": "00g1", "displayName": "Data Engineers"}


def test_okta_events_become_directory_updates_oldest_first_and_others_are_ignored():
    now = datetime.now(UTC)
    updates, ignored = mapping.hook_updates(
        {
            "data": {
                "events": [
                    _event("group.user_membership.remove", "2026-12-01T10:00:02.000Z", USER, GROUP),
                    _event("user.lifecycle.suspend", "2026-12-01T10:00:01.000Z", USER),
                    _event("user.session.start", "2026-12-01T10:00:00.000Z", USER),
                    _event("group.user_membership.add", "2026-12-01T10:00:03.000Z", USER),
                ]
            }
        },
        now,
    )
    assert [u.WhichOneof("change") for u in updates] == ["status", "membership"]
    assert updates[0].status == P.StatusChange(
        user_id="00u1", login="ann@acme.com", status=P.PERSON_STATUS_SUSPENDED
    )
    assert (updates[1].membership.group, updates[1].membership.added) == ("Data Engineers", False)
    assert updates[0].observed_at.ToDatetime(UTC) == datetime(2026, 12, 1, 10, 0, 1, tzinfo=UTC)
    # a type Lily does not map, and a membership event without its group
    assert ignored == ["user.session.start", "group.user_membership.add"]


def test_a_reading_of_the_org_is_chunked_people_and_then_its_sweep():
    users = [
        {"id": f"00u{n}", "status": s, "profile": {"login": f"u{n}@acme.com"}}
        for n, s in enumerate(["ACTIVE", "SUSPENDED", "DEPROVISIONED", "LOCKED_OUT", "STAGED"])
    ]
    started = mapping.timestamp(None, T0)
    requests = mapping.reconciled(users, {"eng": ["00u0", "00u3"], "ops": ["00u0"]}, started, 2)
    assert [len(r.updates) for r in requests] == [2, 2, 1, 1]
    people = [u.person for r in requests[:-1] for u in r.updates]
    assert [p.status for p in people] == [
        P.PERSON_STATUS_ACTIVE,
        P.PERSON_STATUS_SUSPENDED,
        P.PERSON_STATUS_DEPROVISIONED,
        P.PERSON_STATUS_ACTIVE,  # locked out is still theirs
        P.PERSON_STATUS_ACTIVE,
    ]
    assert list(people[0].groups) == ["eng", "ops"] and list(people[3].groups) == ["eng"]
    sweep = requests[-1].updates[0].sweep
    assert (sweep.started_at, sweep.people) == (started, 5)
    assert {r.source for r in requests} == {"reconcile"}
