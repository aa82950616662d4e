"""Who may do what: decisions from an in-memory Decider over the built-in policies and the
tenants' own, rebuilt whenever the rules change (here at once; on other instances when the
change feed says so, within moments and without restart), and the management of each
tenant's policies and roles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from core.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from core.domain.model import Asset
from core.requestctx import Principal
from core.settings import AuthSettings
from policy.denials import Denials
from policy.ports import PolicyStore
from policy.rules import (
    ALL,
    GROUP,
    Decider,
    Decision,
    RoleLink,
    Rule,
    asset_object,
    builtin_rules,
    check_link,
    check_rule,
    model_text,
    parse,
    render,
)

log = logging.getLogger(__name__)

Scoped = TypeVar("Scoped", Rule, RoleLink)


@dataclass(frozen=True, slots=True)
class SubjectAccess:
    subject: str
    roles: list[str]
    can_read: bool
    can_write: bool
    read_redacted: bool
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class AssetAccess:
    restricted: list[str]
    subjects: list[SubjectAccess]


class Decisions:
    def __init__(self, store: PolicyStore, settings: AuthSettings, denials: Denials) -> None:
        self._store = store
        self.settings = settings
        self._denials = denials
        self.decider = Decider(builtin_rules(), ())
        self._changed = asyncio.Event()
        self._loading = asyncio.Lock()

    async def reload(self) -> None:
        """The rules as stored, now. One load at a time, so a slow load that began before a
        change (the feed's) cannot land after, and put back the rules of before, a load that
        began after it (a change's own, e.g. a new tenant's admin)."""
        async with self._loading:
            rules, links = await self._store.load_rules()
            self.decider = Decider((*builtin_rules(), *rules), links)

    def changed(self) -> None:
        """The rules changed somewhere: run() reloads them (once for a burst of changes)."""
        self._changed.set()

    async def run(self) -> None:
        """Reloads the rules whenever they change, for ever."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(0.02)  # one reload for a burst of changes
            self._changed.clear()
            try:
                await self.reload()
            except Exception:  # the worker boundary: keep the last good rules, try again
                log.exception("policy reload failed; retrying")
                await asyncio.sleep(1)
                self._changed.set()

    # -- per call

    def decide(self, principal: Principal, obj: str, action: str) -> Decision:
        return self.decider.decide(
            principal.subject, principal.tenant_id, obj, action, principal.roles, principal.groups
        )

    def may_all(self, principal: Principal, prefix: str, action: str) -> bool:
        """Whether the principal may `action` on every object under `prefix` (False: it
        depends on the object; ask `may` of each)."""
        return self.decider.allows_all(
            principal.subject,
            principal.tenant_id,
            prefix,
            action,
            principal.roles,
            principal.groups,
        )

    def may(
        self, principal: Principal, obj: str, action: str, method: str, origin: str = ""
    ) -> bool:
        """Whether the principal may; a refusal is recorded."""
        decision = self.decide(principal, obj, action)
        if not decision.allowed:
            self._denials.record(
                principal.tenant_id,
                principal.subject,
                method,
                obj,
                action,
                "PERMISSION_DENIED",
                decision.reason,
                origin,
            )
        return decision.allowed

    def require(self, principal: Principal, obj: str, action: str, method: str) -> None:
        if not self.may(principal, obj, action, method):
            raise PermissionDenied(f"{principal.subject} may not {action} {obj}")

    def is_platform_admin(self, principal: Principal) -> bool:
        return (
            principal.tenant_id == self.settings.system_tenant
            and self.decide(principal, "tenants", "admin").allowed
        )

    def _domain(self, principal: Principal, domain: str, path: str) -> str:
        if not domain:
            return principal.tenant_id
        if domain == ALL:
            raise PermissionDenied(f"{path}: the built-in policies (domain '*') are read-only")
        if domain != principal.tenant_id:
            raise PermissionDenied(f"{path}: domain {domain!r} is not your tenant")
        return domain

    # -- policies and roles

    def check_access(self, principal: Principal, subject: str, obj: str, action: str) -> Decision:
        if subject and subject != principal.subject:
            self.require(principal, "policy", "read", "CheckAccess")
            return self.decider.decide(subject, principal.tenant_id, obj, action)
        return self.decide(principal, obj, action)

    def list_policies(self, principal: Principal, subject: str) -> list[Rule]:
        return [
            r
            for r in self.decider.rules
            if r.domain in (principal.tenant_id, ALL) and (not subject or r.subject == subject)
        ]

    def list_roles(self, principal: Principal, subject: str) -> list[RoleLink]:
        return [
            g
            for g in self.decider.links
            if g.domain == principal.tenant_id and (not subject or g.subject == subject)
        ]

    def _own(
        self,
        principal: Principal,
        items: Sequence[Scoped],
        path: str,
        check: Callable[[Scoped, str, list[FieldViolation]], None],
    ) -> list[Scoped]:
        """Policy or role lines in the caller's tenant (an empty domain is theirs), checked."""
        problems: list[FieldViolation] = []
        out = []
        for i, item in enumerate(items):
            item = replace(item, domain=self._domain(principal, item.domain, f"{path}[{i}].domain"))
            check(item, f"{path}[{i}]", problems)
            out.append(item)
        if problems:
            raise InvalidArgument(problems)
        return out

    def _keep_control(
        self, principal: Principal, rules: Sequence[Rule], links: Sequence[RoleLink]
    ) -> None:
        """Refuses a change after which the caller could no longer change policies (no admin
        locks a tenant out of its own policies by mistake)."""
        after = Decider(rules, links)
        if not after.decide(
            principal.subject,
            principal.tenant_id,
            "policy",
            "write",
            principal.roles,
            principal.groups,
        ).allowed:
            raise FailedPrecondition(
                "this change would take policy write away from you; give it to you another way "
                "first (e.g. keep 'g, <you>, admin, <tenant>')",
            )

    async def change(
        self,
        principal: Principal,
        *,
        add: Sequence[Rule] = (),
        remove: Sequence[Rule] = (),
        add_links: Sequence[RoleLink] = (),
        remove_links: Sequence[RoleLink] = (),
    ) -> tuple[int, int]:
        add = self._own(principal, add, "policies", check_rule)
        remove = self._own(principal, remove, "policies", check_rule)
        add_links = self._own(principal, add_links, "roles", check_link)
        remove_links = self._own(principal, remove_links, "roles", check_link)
        if remove or remove_links:
            gone, gone_links = set(remove), set(remove_links)
            self._keep_control(
                principal,
                [r for r in (*self.decider.rules, *add) if r not in gone],
                [g for g in (*self.decider.links, *add_links) if g not in gone_links],
            )
        added, removed = await self._store.change_rules(
            principal.tenant_id,
            add=add,
            remove=remove,
            add_links=add_links,
            remove_links=remove_links,
        )
        await self.reload()  # this instance at once; the others through the feed
        return added, removed

    # -- an identity provider's groups

    def group_roles(self, principal: Principal) -> dict[str, list[str]]:
        """Each group mapped to roles in the caller's tenant, and its roles."""
        found: dict[str, list[str]] = {}
        for g in self.list_roles(principal, ""):
            if g.subject.startswith(GROUP):
                found.setdefault(g.subject.removeprefix(GROUP), []).append(g.role)
        return dict(sorted(found.items()))

    async def set_group_roles(
        self, principal: Principal, group: str, roles: Sequence[str]
    ) -> list[str]:
        """Maps `group` to `roles` in the caller's tenant (replacing what it had)."""
        tenant = principal.tenant_id
        known = {r.subject for r in self.decider.rules if r.domain in (tenant, ALL)}
        known |= {g.role for g in self.decider.links if g.domain == tenant}
        wanted = [RoleLink(GROUP + group, role, tenant) for role in dict.fromkeys(roles)]
        problems: list[FieldViolation] = []
        named: list[FieldViolation] = []
        check_link(RoleLink(GROUP + group, "role", tenant), "mapping", named)
        if not group or named:
            problems.append(
                FieldViolation(
                    "mapping.group",
                    "must be 1-500 characters: no commas, quotes, control characters or "
                    "surrounding spaces",
                )
            )
        for i, link in enumerate(wanted):
            if link.role not in known:
                problems.append(
                    FieldViolation(
                        f"mapping.roles[{i}]",
                        f"no role {link.role!r} in this tenant (a built-in role, or a subject "
                        "of the tenant's policies)",
                    )
                )
        if problems:
            raise InvalidArgument(problems)
        held = self.list_roles(principal, GROUP + group)
        await self.change(
            principal,
            add_links=[g for g in wanted if g not in held],
            remove_links=[g for g in held if g not in wanted],
        )
        return [g.role for g in wanted]

    async def import_policies(self, principal: Principal, text: str) -> tuple[int, int]:
        rules, links = parse(text, source="policy_text")
        rules = self._own(principal, rules, "policy_text", check_rule)
        links = self._own(principal, links, "policy_text", check_link)
        tenant = principal.tenant_id
        self._keep_control(
            principal,
            [*(r for r in self.decider.rules if r.domain != tenant), *rules],
            [*(g for g in self.decider.links if g.domain != tenant), *links],
        )
        await self._store.change_rules(
            principal.tenant_id, add=rules, add_links=links, replace=True
        )
        await self.reload()
        return len(set(rules)), len(set(links))

    def export_policies(self, principal: Principal) -> tuple[str, str]:
        own = [r for r in self.decider.rules if r.domain == principal.tenant_id]
        return render(own, self.list_roles(principal, "")), model_text()

    # -- what a principal or an asset is allowed

    def asset_access(self, tenant_id: str, asset: Asset) -> AssetAccess:
        """Who may read and write an asset, and why (every subject with a role in the tenant)."""
        d = self.decider
        restricted = sorted(set(self.settings.restricted_tags) & {t.name for t in asset.tags})
        obj = asset_object(asset.asset_type, asset.qualified_name)
        out = []
        for subject in d.subjects(tenant_id):
            read = d.decide(subject, tenant_id, "metadata", "read")
            write = d.decide(subject, tenant_id, obj, "write")
            reasons = [f"read: {read.reason}", f"write: {write.reason}"]
            hidden = [
                t
                for t in restricted
                if not d.decide(subject, tenant_id, f"tag:{t}", "read").allowed
            ]
            reasons += [f"tag {t}: needs read on tag:{t}" for t in hidden]
            refuse = bool(hidden) and self.settings.restricted_read == "refuse"
            out.append(
                SubjectAccess(
                    subject,
                    list(d.roles(subject, tenant_id)),
                    read.allowed and not refuse,
                    write.allowed,
                    read.allowed and bool(hidden) and not refuse,
                    reasons,
                )
            )
        return AssetAccess(restricted, out)

    def roles_of(self, principal: Principal) -> list[str]:
        """Every role the principal holds in its tenant: assigned, asserted by its credential,
        or through its groups."""
        held = self.decider.holders(
            principal.subject, principal.tenant_id, principal.roles, principal.groups
        )
        return sorted({r for r in held[1:] if not r.startswith(GROUP)})
