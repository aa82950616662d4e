"""Okta's words for what happened to people, as Lily's directory updates (pure functions).

Event hooks (developer.okta.com, Event Hooks; the System Log's event types) deliver
`{"eventType": "com.okta.event_hook", "eventId", "data": {"events": [...]}}`; each event has
`eventType`, `published` and `target`s (`{"type": "User" | "UserGroup", "id",
"alternateId", "displayName"}`). Reconciliation reads users (`id`, `status`,
`profile.login`, `profile.email`) and groups (`profile.name`) with their members.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import policy_pb2 as policy_pb

# An Okta user's status -> Lily's standing for them. STAGED and PROVISIONED users have not
# signed in yet; RECOVERY, LOCKED_OUT and PASSWORD_EXPIRED ones are still theirs.
STATUSES = {
    "SUSPENDED": policy_pb.PERSON_STATUS_SUSPENDED,
    "DEPROVISIONED": policy_pb.PERSON_STATUS_DEPROVISIONED,
}
LIFECYCLE = {
    "user.lifecycle.deactivate": policy_pb.PERSON_STATUS_DEPROVISIONED,
    "user.lifecycle.delete.initiated": policy_pb.PERSON_STATUS_DEPROVISIONED,
    "user.lifecycle.suspend": policy_pb.PERSON_STATUS_SUSPENDED,
    "user.lifecycle.unsuspend": policy_pb.PERSON_STATUS_ACTIVE,
    "user.lifecycle.activate": policy_pb.PERSON_STATUS_ACTIVE,
    "user.lifecycle.reactivate": policy_pb.PERSON_STATUS_ACTIVE,
}
MEMBERSHIP = {"group.user_membership.add": True, "group.user_membership.remove": False}
EVENT_TYPES = (*LIFECYCLE, *MEMBERSHIP)


def timestamp(value: Any, default: datetime) -> Timestamp:
    when = default
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def _target(event: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for t in event.get("target") or ():
        if isinstance(t, Mapping) and t.get("type") == kind and isinstance(t.get("id"), str):
            return t
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def event_update(event: Mapping[str, Any], now: datetime) -> policy_pb.DirectoryUpdate | None:
    """The directory update an event hook's event says, or None (a type Lily does not map,
    or one missing its user or group)."""
    kind = event.get("eventType")
    user = _target(event, "User")
    if not isinstance(kind, str) or user is None:
        return None
    at = timestamp(event.get("published"), now)
    if kind in LIFECYCLE:
        return policy_pb.DirectoryUpdate(
            observed_at=at,
            status=policy_pb.StatusChange(
                user_id=user["id"], login=_text(user.get("alternateId")), status=LIFECYCLE[kind]
            ),
        )
    group = _target(event, "UserGroup")
    if kind in MEMBERSHIP and group is not None and _text(group.get("displayName")):
        return policy_pb.DirectoryUpdate(
            observed_at=at,
            membership=policy_pb.MembershipChange(
                user_id=user["id"],
                login=_text(user.get("alternateId")),
                group=group["displayName"],
                added=MEMBERSHIP[kind],
            ),
        )
    return None


def hook_updates(
    payload: Mapping[str, Any], now: datetime
) -> tuple[list[policy_pb.DirectoryUpdate], list[str]]:
    """An event hook delivery's updates (oldest first), and the event types it ignored."""
    events = (payload.get("data") or {}).get("events") or []
    updates: list[tuple[datetime, int, policy_pb.DirectoryUpdate]] = []
    ignored: list[str] = []
    for i, event in enumerate(e for e in events if isinstance(e, Mapping)):
        update = event_update(event, now)
        if update is None:
            ignored.append(_text(event.get("eventType")) or "?")
        else:
            updates.append((update.observed_at.ToDatetime(), i, update))
    return [u for _, _, u in sorted(updates, key=lambda x: x[:2])], ignored


def person(user: Mapping[str, Any], groups: Iterable[str]) -> policy_pb.Person:
    """A user as reconciliation read them, with the groups they are in."""
    profile = user.get("profile") or {}
    status = STATUSES.get(_text(user.get("status")), policy_pb.PERSON_STATUS_ACTIVE)
    return policy_pb.Person(
        user_id=user["id"],
        login=_text(profile.get("login")),
        email=_text(profile.get("email")),
        status=status,
        groups=sorted(set(groups)),
    )


def reconciled(
    users: Sequence[Mapping[str, Any]],
    members: Mapping[str, Sequence[str]],
    started_at: Timestamp,
    chunk: int,
) -> list[policy_pb.UpdateDirectoryRequest]:
    """A whole reading of the org (users, and group name -> member ids) as requests of at most
    `chunk` people, and last, the sweep of whoever it did not find."""
    groups_of: dict[str, list[str]] = {}
    for group, ids in members.items():
        for uid in ids:
            groups_of.setdefault(uid, []).append(group)
    people = [person(u, groups_of.get(u["id"], ())) for u in users if isinstance(u.get("id"), str)]
    out = [
        policy_pb.UpdateDirectoryRequest(
            updates=[
                policy_pb.DirectoryUpdate(observed_at=started_at, person=p)
                for p in people[i : i + chunk]
            ],
            source="reconcile",
        )
        for i in range(0, len(people), chunk)
    ]
    out.append(
        policy_pb.UpdateDirectoryRequest(
            updates=[
                policy_pb.DirectoryUpdate(
                    observed_at=started_at,
                    sweep=policy_pb.SweepDirectory(started_at=started_at, people=len(people)),
                )
            ],
            source="reconcile",
        )
    )
    return out
