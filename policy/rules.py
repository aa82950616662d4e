"""Casbin policies as Lily reads them (plain Python, no I/O).

The model is policy/model.conf: RBAC with tenants as domains, `keyMatch` on objects, and
allow-unless-denied. Casbin's own enforcer evaluates each matcher expression per policy
(about 180 decisions/s with a thousand policies here); `Decider` makes the same decisions from
an index (policies by domain and subject, roles by domain) and is checked against Casbin's
enforcer in tests/unit/test_policy_rules.py. It reads only this model: an import carries
policy lines, never a model of its own.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

from core.domain.errors import FieldViolation, InvalidArgument
from core.domain.model import AssetType

ALL = "*"  # the domain of the built-in policies; also "any action"
GROUP = "group:"  # the subject of an identity provider's group: `g, group:<name>, <role>, <t>`
ACTIONS = frozenset({"read", "write", "admin", ALL})
Effect = Literal["allow", "deny"]

_NAME = re.compile(r"^[^\x00-\x20\x7f,#\"]([^\x00-\x1f\x7f,\"]{0,510}[^\x00-\x20\x7f,\"])?$")
_MAX_LINES = 20_000


@dataclass(frozen=True, slots=True)
class Rule:
    """A `p` line: subject (role or principal), domain (tenant or "*"), object, action, effect."""

    subject: str
    domain: str
    object: str
    action: str
    effect: Effect = "allow"

    def line(self) -> str:
        return f"p, {self.subject}, {self.domain}, {self.object}, {self.action}, {self.effect}"


@dataclass(frozen=True, slots=True)
class RoleLink:
    """A `g` line: `subject` has `role` in `domain`."""

    subject: str
    role: str
    domain: str

    def line(self) -> str:
        return f"g, {self.subject}, {self.role}, {self.domain}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    rule: Rule | None  # the deny that matched, or the allow that granted; None: nothing allows
    via: str = ""  # the role (or the subject itself) the rule applied through

    @property
    def reason(self) -> str:
        if self.rule is None:
            return "no policy allows it"
        how = "" if not self.via else f" (as {self.via})"
        return f"{'allowed' if self.allowed else 'denied'} by '{self.rule.line()}'{how}"


def asset_object(asset_type: AssetType, qualified_name: str) -> str:
    """The object a write of an asset is checked against."""
    return f"asset:{asset_type.name}:{qualified_name}"


def key_match(key: str, pattern: str) -> bool:
    """Casbin's keyMatch: equal, or `pattern` ends in '*' and `key` starts with what
    precedes the first '*'."""
    star = pattern.find("*")
    if star < 0:
        return key == pattern
    return key[:star] == pattern[:star]


def _check_name(what: str, value: str, path: str, problems: list[FieldViolation]) -> None:
    if not _NAME.match(value):
        problems.append(
            FieldViolation(
                f"{path}.{what}",
                "must be 1-512 characters: no commas, quotes, control characters or surrounding "
                "spaces",
            )
        )


def check_rule(rule: Rule, path: str, problems: list[FieldViolation]) -> None:
    for what in ("subject", "domain", "object"):
        _check_name(what, getattr(rule, what), path, problems)
    if rule.action not in ACTIONS:
        problems.append(FieldViolation(f"{path}.action", f"must be one of {sorted(ACTIONS)}"))
    if rule.effect not in ("allow", "deny"):
        problems.append(FieldViolation(f"{path}.effect", "must be allow or deny"))


def check_link(link: RoleLink, path: str, problems: list[FieldViolation]) -> None:
    for what in ("subject", "role", "domain"):
        _check_name(what, getattr(link, what), path, problems)
    if link.subject == link.role:
        problems.append(FieldViolation(f"{path}.role", "a subject cannot be its own role"))


def parse(text: str, *, source: str = "policy") -> tuple[list[Rule], list[RoleLink]]:
    """A Casbin policy file's `p` and `g` lines. Every problem is reported (with its line
    number) at once, as InvalidArgument; nothing is returned unless every line is valid."""
    rules: list[Rule] = []
    links: list[RoleLink] = []
    problems: list[FieldViolation] = []
    lines = text.splitlines()
    if len(lines) > _MAX_LINES:
        raise InvalidArgument([FieldViolation(source, f"more than {_MAX_LINES} lines")])
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path = f"{source}:{number}"
        fields = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]
        kind, values = fields[0], fields[1:]
        if kind == "p" and len(values) in (4, 5):
            effect = values[4] if len(values) == 5 else "allow"
            rule = Rule(values[0], values[1], values[2], values[3], effect)  # type: ignore[arg-type]
            check_rule(rule, path, problems)
            rules.append(rule)
        elif kind == "g" and len(values) == 3:
            link = RoleLink(values[0], values[1], values[2])
            check_link(link, path, problems)
            links.append(link)
        else:
            problems.append(
                FieldViolation(
                    path, "expected 'p, sub, dom, obj, act[, allow|deny]' or 'g, sub, role, dom'"
                )
            )
    if problems:
        raise InvalidArgument(problems)
    return rules, links


@lru_cache(maxsize=1)
def model_text() -> str:
    """The Casbin model (policy/model.conf) every decision follows."""
    return resources.files("policy").joinpath("model.conf").read_text()


def render(rules: Iterable[Rule], links: Iterable[RoleLink]) -> str:
    return "".join(f"{r.line()}\n" for r in rules) + "".join(f"{g.line()}\n" for g in links)


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    rules, links = parse(
        resources.files("policy").joinpath("builtin.csv").read_text(), source="builtin.csv"
    )
    assert not links and all(r.domain == ALL for r in rules)
    return tuple(rules)


class Decider:
    """Decisions over one snapshot of policies and roles (immutable; a change builds a new
    one). Same answers as Casbin's enforcer with policy/model.conf, from an index: the rules
    that can apply to a request are those of the subject or one of its roles, in the request's
    domain or "*"."""

    def __init__(self, rules: Iterable[Rule], links: Iterable[RoleLink]) -> None:
        self.rules: tuple[Rule, ...] = tuple(dict.fromkeys(rules))
        self.links: tuple[RoleLink, ...] = tuple(dict.fromkeys(links))
        by_key: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        for rule in self.rules:
            by_key[(rule.domain, rule.subject)].append(rule)
        self._rules: Mapping[tuple[str, str], Sequence[Rule]] = dict(by_key)
        roles: dict[tuple[str, str], list[str]] = defaultdict(list)
        for link in self.links:
            roles[(link.domain, link.subject)].append(link.role)
        self._direct_roles: Mapping[tuple[str, str], Sequence[str]] = dict(roles)
        self._roles_cache: dict[tuple[str, str], tuple[str, ...]] = {}

    def roles(self, subject: str, domain: str) -> tuple[str, ...]:
        """Every role `subject` holds in `domain`, directly or through other roles."""
        key = (domain, subject)
        cached = self._roles_cache.get(key)
        if cached is not None:
            return cached
        found: dict[str, None] = {}
        todo = list(self._direct_roles.get(key, ()))
        while todo:
            role = todo.pop()
            if role in found or role == subject:
                continue
            found[role] = None
            todo.extend(self._direct_roles.get((domain, role), ()))
        result = tuple(found)
        if len(self._roles_cache) > 100_000:
            self._roles_cache.clear()
        self._roles_cache[key] = result
        return result

    def holders(
        self,
        subject: str,
        domain: str,
        extra_roles: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> tuple[str, ...]:
        """Whom the rules are looked up for: the subject, its roles, the roles its credential
        asserts, and its identity provider's groups (`group:<name>`) with their roles."""
        found = (subject, *self.roles(subject, domain), *extra_roles)
        for group in groups:
            found += (GROUP + group, *self.roles(GROUP + group, domain))
        return found

    def decide(
        self,
        subject: str,
        domain: str,
        obj: str,
        action: str,
        extra_roles: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> Decision:
        """Whether `subject` may `action` on `obj` in `domain`. `extra_roles` are roles the
        credential itself asserts, and `groups` the identity provider's groups it is in: both
        held in `domain` like assigned roles."""
        granted: Decision | None = None
        for who in self.holders(subject, domain, extra_roles, groups):
            for dom in (domain, ALL):
                for rule in self._rules.get((dom, who), ()):
                    if (rule.action == action or rule.action == ALL) and key_match(
                        obj, rule.object
                    ):
                        if rule.effect == "deny":
                            return Decision(False, rule, "" if who == subject else who)
                        if granted is None:
                            granted = Decision(True, rule, "" if who == subject else who)
        return granted or Decision(False, None)

    def allows_all(
        self,
        subject: str,
        domain: str,
        prefix: str,
        action: str,
        extra_roles: Sequence[str] = (),
        groups: Sequence[str] = (),
    ) -> bool:
        """Whether decide() allows `action` on every object that starts with `prefix`: a rule
        allows all of them (its pattern's part before '*' begins `prefix`) and no deny can
        match any of them. False means only that it depends on the object."""
        covered = False
        for who in self.holders(subject, domain, extra_roles, groups):
            for dom in (domain, ALL):
                for rule in self._rules.get((dom, who), ()):
                    if rule.action != action and rule.action != ALL:
                        continue
                    star = rule.object.find("*")
                    head = rule.object if star < 0 else rule.object[:star]
                    covers = star >= 0 and prefix.startswith(head)
                    if rule.effect == "deny":
                        if covers or head.startswith(prefix):
                            return False  # some object under the prefix is denied
                    elif covers:
                        covered = True
        return covered

    def subjects(self, domain: str) -> list[str]:
        """Every subject holding a role in `domain` (not roles themselves)."""
        roles = {g.role for g in self.links if g.domain == domain}
        return sorted({g.subject for g in self.links if g.domain == domain} - roles)
