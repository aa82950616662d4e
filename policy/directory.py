"""Each tenant's directory of people, as its identity provider (Okta) says they are: whether
they may act at all, and the groups their roles follow (policy/decisions.py maps groups to
roles with the tenant's `g, group:<name>, <role>, <tenant>` lines).

The provider tells Lily through the Okta adapter (its event hooks at once, its reconciliation
on a schedule) and at each sign-in (policy/sessions.py). Every update says when the provider
said it; one older than what Lily has of a person is skipped for that person, so a late
reconciliation cannot undo a newer hook. A person suspended or deactivated loses every
session, token and API key at once: the store revokes them in the same transaction, and
every instance's copy of the directory (kept current by the change feed) refuses any other
credential that names them (an Okta token presented directly) from the next call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from core.domain.errors import FieldViolation, InvalidArgument
from core.requestctx import Principal
from core.settings import AuthSettings
from core.wire.validation import check_query
from policy.model import PeopleChange, PersonRecord
from policy.ports import IdentityStore

log = logging.getLogger(__name__)

STATUSES = ("ACTIVE", "SUSPENDED", "DEPROVISIONED")
SOURCES = ("login", "hook", "reconcile")
MAX_UPDATES = 1000
MAX_GROUPS = 1000
_MAX_NAME = 512


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    user_id: str
    login: str
    status: str


@dataclass(frozen=True, slots=True)
class MembershipUpdate:
    user_id: str
    login: str
    group: str
    added: bool


@dataclass(frozen=True, slots=True)
class Sweep:
    """A whole reading of the directory that began at `started_at` and found `people` ended:
    whoever was not heard of since is gone from the provider (unless fewer than `people`
    were: then a part of the reading is missing, and the sweep is skipped)."""

    started_at: datetime
    people: int


Change = PersonRecord | StatusUpdate | MembershipUpdate | Sweep


@dataclass(frozen=True, slots=True)
class Update:
    observed_at: datetime
    change: Change


@dataclass(frozen=True, slots=True)
class Outcome:
    changed: int
    stale: int
    sessions_revoked: int
    credentials_revoked: int


def _text(value: str, path: str, problems: list[FieldViolation], required: bool = True) -> None:
    if (required and not value) or len(value) > _MAX_NAME or any(ord(c) < 32 for c in value):
        problems.append(
            FieldViolation(path, f"must be 1-{_MAX_NAME} characters, no control characters")
        )


def check(updates: Sequence[Update], source: str) -> None:
    problems: list[FieldViolation] = []
    if source not in SOURCES:
        problems.append(FieldViolation("source", f"must be one of {', '.join(SOURCES)}"))
    if not updates or len(updates) > MAX_UPDATES:
        problems.append(FieldViolation("updates", f"give 1-{MAX_UPDATES} updates"))
    for i, u in enumerate(updates):
        path, c = f"updates[{i}]", u.change
        if isinstance(c, Sweep):
            continue
        _text(c.user_id, f"{path}.user_id", problems)
        _text(c.login, f"{path}.login", problems, required=False)
        if isinstance(c, PersonRecord | StatusUpdate) and c.status not in STATUSES:
            problems.append(FieldViolation(f"{path}.status", "must be given"))
        if isinstance(c, MembershipUpdate):
            _text(c.group, f"{path}.membership.group", problems)
        if isinstance(c, PersonRecord):
            _text(c.email, f"{path}.person.email", problems, required=False)
            if len(c.groups) > MAX_GROUPS:
                problems.append(FieldViolation(f"{path}.person.groups", f"at most {MAX_GROUPS}"))
            for j, g in enumerate(c.groups):
                _text(g, f"{path}.person.groups[{j}]", problems)
    if problems:
        raise InvalidArgument(problems)


def apply(
    tenant_id: str, known: dict[str, PersonRecord], updates: Sequence[Update], source: str
) -> PeopleChange:
    """The people `updates` leave (of those `known`, by user id), in order; pure."""
    now: dict[str, PersonRecord] = dict(known)
    touched: dict[str, None] = {}
    stale = 0

    def fresh(user_id: str, login: str, at: datetime) -> PersonRecord:
        return PersonRecord(tenant_id, user_id, login, "", "ACTIVE", (), source, at)

    for u in updates:
        c, at = u.change, u.observed_at
        if isinstance(c, Sweep):
            if sum(p.observed_at >= c.started_at for p in now.values()) < c.people:
                stale += 1
                continue
            for p in list(now.values()):
                if p.observed_at < c.started_at and p.status != "DEPROVISIONED":
                    now[p.user_id] = replace(
                        p, status="DEPROVISIONED", source=source, observed_at=c.started_at
                    )
                    touched[p.user_id] = None
            continue
        before = now.get(c.user_id)
        if before is not None and at < before.observed_at:
            stale += 1
            continue
        person = before or fresh(c.user_id, c.login, at)
        if isinstance(c, PersonRecord):
            person = replace(c, tenant_id=tenant_id, source=source, observed_at=at)
        elif isinstance(c, StatusUpdate):
            person = replace(person, status=c.status)
        elif c.added:
            person = replace(person, groups=tuple(dict.fromkeys((*person.groups, c.group))))
        else:
            person = replace(person, groups=tuple(g for g in person.groups if g != c.group))
        if not isinstance(c, PersonRecord):
            person = replace(person, login=c.login or person.login, source=source, observed_at=at)
        now[c.user_id] = person
        touched[c.user_id] = None
    return PeopleChange(
        tuple(now[u] for u in touched if now[u] != known.get(u)),
        stale,
    )


class People:
    """One instance's copy of every tenant's directory, and the changes made to it."""

    def __init__(self, store: IdentityStore, settings: AuthSettings) -> None:
        self._store = store
        self._settings = settings
        self._people: dict[tuple[str, str], PersonRecord] = {}  # (tenant, user id)
        self._names: dict[tuple[str, str], PersonRecord] = {}  # (tenant, lower-case name)

    async def load(self) -> None:
        people = await self._store.people()
        self._people, self._names = {}, {}
        self._index(people)

    def _index(self, people: Iterable[PersonRecord]) -> None:
        for p in people:
            old = self._people.get((p.tenant_id, p.user_id))
            if old is not None:
                for name in old.names:
                    self._names.pop((p.tenant_id, name), None)
            self._people[(p.tenant_id, p.user_id)] = p
            for name in p.names:
                self._names[(p.tenant_id, name)] = p

    def find(self, tenant_id: str, subject: str) -> PersonRecord | None:
        """The person a credential's subject names (by id, login or e-mail), if known."""
        return self._names.get((tenant_id, subject.lower()))

    def with_groups(self, principal: Principal, person: PersonRecord) -> Principal:
        """A provider's principal with the groups the directory knows of the person (fresher
        than any token's)."""
        if person.groups == principal.groups:
            return principal
        return replace(principal, groups=person.groups)

    async def changed(self, key: str) -> None:
        """The change feed says a person changed (on any instance): read them again."""
        tenant_id, _, user_id = key.partition("/")
        found = await self._store.person(tenant_id, user_id)
        if found is not None:
            self._index([found])

    async def update(self, tenant_id: str, updates: Sequence[Update], source: str) -> Outcome:
        check(updates, source)
        named = [u.change.user_id for u in updates if not isinstance(u.change, Sweep)]
        ids = named if len(named) == len(updates) else None  # a sweep: the whole tenant
        done, sessions, credentials = await self._store.change_people(
            tenant_id,
            ids,
            lambda known: apply(tenant_id, known, updates, source),
            self.revoke_until(),
        )
        self._index(done.people)  # this instance at once; the others through the feed
        return Outcome(len(done.people), done.stale, sessions, credentials)

    def revoke_until(self) -> datetime:
        """Until when a session revoked now must stay refused (its newest access token)."""
        ttl = self._settings.token_ttl + self._settings.leeway
        return datetime.now(UTC) + timedelta(seconds=ttl)

    async def page(self, tenant_id: str, status: str, after: str, limit: int) -> list[PersonRecord]:
        check_query(page_token=(after, 256))
        return await self._store.list_people(tenant_id, status, after, limit)
