"""The policy service: authenticates and authorizes every call (through the interceptor in
core/wire/status.py), answers per-object questions for the other services, and manages policies,
roles, tenants and credentials.

Decisions come from an in-memory Decider over the built-in policies and the tenants' own,
rebuilt whenever the Postgres change feed says rules changed (on this instance or another),
so a change takes effect everywhere within moments and without restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from core.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LilyError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from core.domain.model import Asset
from core.requestctx import Principal, current_request_id
from core.settings import AuthSettings
from core.wire.validation import check_text
from policy import tokens
from policy.authn import Authenticator
from policy.rules import (
    ALL,
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
from policy.store import CredentialRecord, DenialRecord, PostgresPolicyStore, TenantRecord

log = logging.getLogger(__name__)

_MAX_PENDING_DENIALS = 10_000
Scoped = TypeVar("Scoped", Rule, RoleLink)


class TenantCells(Protocol):
    """Where DEDICATED tenants' stores are made and opened (core.cells.Cells)."""

    async def open(self, tenant_id: str) -> object: ...


class PolicyService:
    def __init__(self, store: PostgresPolicyStore, settings: AuthSettings) -> None:
        self._store = store
        self.settings = settings
        self.cells: TenantCells | None = None  # set by the server; none: no DEDICATED tenants
        self.authn = Authenticator(store, settings)
        self.decider = Decider(builtin_rules(), ())
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[None]] = set()  # one-off reloads the feed asked for
        self._rules_changed = asyncio.Event()
        self._denials: list[DenialRecord] = []
        self._denials_pending = asyncio.Event()
        self._dropped = 0

    # -- life cycle

    async def start(self) -> None:
        await self.authn.start()
        await self.reload_rules()
        self._tasks = [
            asyncio.create_task(
                self._store.listen(self._on_change, self._on_reconnect), name="policy-feed"
            ),
            asyncio.create_task(self._reload_loop(), name="policy-reload"),
            asyncio.create_task(self._denial_writer(), name="policy-denials"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._reloads]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self._flush_denials()

    async def reload_rules(self) -> None:
        rules, links = await self._store.load_rules()
        self.decider = Decider((*builtin_rules(), *rules), links)

    def _on_change(self, payload: str) -> None:
        kind, _, key = payload.partition(":")
        if kind == "rules":
            self._rules_changed.set()
        elif kind == "tenant":
            self._reload(self._tenant_changed(key))
        elif kind == "keys":
            self._reload(self.authn.reload_keys())
        else:
            self.authn.changed(kind, key)

    def _on_reconnect(self) -> None:
        self._rules_changed.set()
        self._reload(self.authn.reload())

    def _reload(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._reloads.add(task)
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[None]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # (the next change, or the feed's reconnect, reloads again)
            log.error("policy reload failed: %r", task.exception())

    async def _tenant_changed(self, tenant_id: str) -> None:
        """Reloads a tenant; one made DEDICATED and READY elsewhere gets its cell opened here
        too (so this instance runs its workers and serves it at once)."""
        await self.authn.reload_tenant(tenant_id)
        tenant = self.authn.tenants.get(tenant_id)
        if self.cells and tenant and tenant.has_cell:
            try:
                await self.cells.open(tenant_id)
            except Exception:  # the feed's boundary: its first call here will try again
                log.exception("could not open the cell of tenant %s", tenant_id)

    async def _reload_loop(self) -> None:
        while True:
            await self._rules_changed.wait()
            await asyncio.sleep(0.02)  # one reload for a burst of changes
            self._rules_changed.clear()
            try:
                await self.reload_rules()
            except Exception:  # the worker boundary: keep the last good rules, try again
                log.exception("policy reload failed; retrying")
                await asyncio.sleep(1)
                self._rules_changed.set()

    # -- denials (the audit trail of refusals)

    def record_denial(
        self,
        tenant_id: str,
        subject: str,
        method: str,
        obj: str,
        action: str,
        code: str,
        reason: str,
        origin: str,
    ) -> None:
        log.info("denied %s %s on %s to %s: %s", method, action, obj, subject or "-", reason)
        if len(self._denials) >= _MAX_PENDING_DENIALS:
            self._dropped += 1
            return
        self._denials.append(
            DenialRecord(
                tenant_id,
                datetime.now(UTC),
                subject,
                method,
                obj,
                action,
                code,
                reason,
                current_request_id(),
                origin,
            )
        )
        self._denials_pending.set()

    async def _flush_denials(self) -> None:
        batch, self._denials = self._denials, []
        if batch:
            await self._store.add_denials(batch)
        if self._dropped:
            log.warning(
                "%d denials were not recorded (more than %d pending)",
                self._dropped,
                _MAX_PENDING_DENIALS,
            )
            self._dropped = 0

    async def _denial_writer(self) -> None:
        while True:
            await self._denials_pending.wait()
            self._denials_pending.clear()
            try:
                await self._flush_denials()
            except Exception:  # the worker boundary: the batch is logged, the next one tried
                log.exception("denials could not be recorded")
            await asyncio.sleep(0.2)

    # -- per call

    def decide(self, principal: Principal, obj: str, action: str) -> Decision:
        return self.decider.decide(
            principal.subject, principal.tenant_id, obj, action, principal.roles
        )

    def may(
        self, principal: Principal, obj: str, action: str, method: str, origin: str = ""
    ) -> bool:
        """Whether the principal may; a refusal is recorded."""
        decision = self.decide(principal, obj, action)
        if not decision.allowed:
            self.record_denial(
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
            principal.subject, principal.tenant_id, "policy", "write", principal.roles
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
        await self.reload_rules()  # this instance at once; the others through the feed
        return added, removed

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
        await self.reload_rules()
        return len(set(rules)), len(set(links))

    def export_policies(self, principal: Principal) -> tuple[str, str]:
        own = [r for r in self.decider.rules if r.domain == principal.tenant_id]
        return render(own, self.list_roles(principal, "")), model_text()

    # -- tenants

    def tenant(self, principal: Principal, tenant_id: str) -> TenantRecord:
        if tenant_id != principal.tenant_id and not self.is_platform_admin(principal):
            self.record_denial(
                principal.tenant_id,
                principal.subject,
                "GetTenant",
                f"tenant:{tenant_id}",
                "read",
                "PERMISSION_DENIED",
                "not a platform admin",
                "",
            )
            raise PermissionDenied("only platform admins may see other tenants")
        found = self.authn.tenants.get(tenant_id)
        if found is None:
            raise NotFound(f"tenant {tenant_id!r} not found", metadata={"tenant_id": tenant_id})
        return found

    def tenants(self) -> list[TenantRecord]:
        return sorted(self.authn.tenants.values(), key=lambda t: t.tenant_id)

    def isolation_of(self, tenant_id: str) -> str | None:
        """SHARED or DEDICATED, as the tenant registry says (None: no such tenant)."""
        found = self.authn.tenants.get(tenant_id)
        return None if found is None else found.isolation

    async def create_tenant(
        self, creator: str, tenant_id: str, display_name: str, isolation: str
    ) -> tuple[TenantRecord, CredentialRecord, str]:
        """A tenant and its first admin API key (the secret, shown once). A DEDICATED
        tenant's cell is made first (core.cells); if that fails, nothing of the tenant is kept
        and the call is UNAVAILABLE (a retry reuses whatever was made)."""
        dedicated = isolation == "DEDICATED"
        if dedicated and self.cells is None:
            raise FailedPrecondition(
                "this process cannot provision DEDICATED tenants",
                metadata={"isolation": isolation},
            )
        now = datetime.now(UTC)
        state = "PROVISIONING" if dedicated else "READY"
        tenant = TenantRecord(tenant_id, display_name, isolation, state, "", now)
        key = tokens.new_api_key()
        cred = CredentialRecord(
            key.credential_id,
            tenant_id,
            "API_KEY",
            f"admin@{tenant_id}",
            key.digest,
            ("admin",),
            "first admin",
            creator,
            now,
            None,
        )
        links = [RoleLink(cred.subject, "admin", tenant_id)]
        rules = (
            [Rule("admin", tenant_id, "tenants", "admin")]
            if tenant_id == self.settings.system_tenant
            else []
        )
        if not await self._store.create_tenant(tenant, cred, links, rules):
            raise AlreadyExists(f"tenant {tenant_id!r} exists", metadata={"tenant_id": tenant_id})
        if dedicated:
            # Shielded: a caller who gives up does not leave the tenant half made; once made,
            # it is forgotten again (nobody saw its admin key), and may be created anew.
            gone = False
            task = asyncio.create_task(self._provision(tenant_id, lambda: gone))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                gone = True
                raise
            tenant = replace(tenant, state="READY")
        self.authn.tenants[tenant_id] = tenant
        await self.reload_rules()
        return tenant, cred, key.secret

    async def _provision(self, tenant_id: str, abandoned: Callable[[], bool]) -> None:
        assert self.cells is not None  # (checked by create_tenant)
        try:
            await self.cells.open(tenant_id)
            if abandoned():
                log.warning("tenant %s was made for a caller who left; forgotten", tenant_id)
                await self._store.forget_tenant(tenant_id)
                return
        except Exception as exc:
            log.exception("provisioning tenant %s failed", tenant_id)
            await self._store.forget_tenant(tenant_id)
            why = str(exc) if isinstance(exc, LilyError) else type(exc).__name__
            raise Unavailable(
                f"tenant {tenant_id!r} could not be provisioned ({why}); it was not created, "
                "and may be created again",
                retry_after_s=5.0,
            ) from exc
        await self._store.tenant_ready(tenant_id)

    async def bootstrap(self) -> str | None:
        """Creates the system tenant and its admin API key if there is none yet: the key
        (to show once), or None."""
        if self.settings.system_tenant in self.authn.tenants:
            return None
        try:
            _, _, secret = await self.create_tenant(
                "lily-bootstrap", self.settings.system_tenant, "default", "SHARED"
            )
        except AlreadyExists:  # another instance got there first
            await self.authn.reload_tenant(self.settings.system_tenant)
            return None
        return secret

    # -- credentials and tokens

    async def create_credential(
        self, principal: Principal, kind: str, subject: str, roles: Sequence[str], description: str
    ) -> tuple[CredentialRecord, str]:
        problems: list[FieldViolation] = []
        if kind not in ("API_KEY", "CLIENT"):
            problems.append(FieldViolation("credential.kind", "must be API_KEY or CLIENT"))
        new = (
            tokens.new_api_key()
            if kind == "API_KEY"
            else tokens.new_client_secret("c" + tokens.new_api_key().credential_id)
        )
        subject = subject or f"{kind.lower()}:{new.credential_id}"
        links = [RoleLink(subject, role, principal.tenant_id) for role in roles]
        for i, g in enumerate(links):
            check_link(g, f"credential.roles[{i}]", problems)
        check_text("credential.description", description, 4000, problems)
        if problems:
            raise InvalidArgument(problems)
        cred = CredentialRecord(
            new.credential_id,
            principal.tenant_id,
            kind,
            subject,
            new.digest,
            tuple(roles),
            description,
            principal.subject,
            datetime.now(UTC),
            None,
        )
        await self._store.add_credential(cred, links)
        if links:
            await self.reload_rules()
        return cred, new.secret

    async def credentials(
        self, principal: Principal, include_revoked: bool
    ) -> list[CredentialRecord]:
        return await self._store.credentials(principal.tenant_id, include_revoked)

    async def revoke(self, principal: Principal, token: str, credential_id: str) -> None:
        """Revokes a token or API key (RFC 7009: an unknown one is no error), or a credential
        by id. Another's needs credentials write."""
        if token and not token.startswith(tokens.API_KEY_PREFIX):
            try:
                target = await self.authn.authenticate({"authorization": f"Bearer {token}"})
            except (Unauthenticated, PermissionDenied):  # invalid, expired, or its tenant is
                return  # gone: nothing to revoke (RFC 7009 2.2: that is no error)
            if target.tenant_id != principal.tenant_id:
                return
            if target.subject != principal.subject:
                self.require(principal, "credentials", "write", "RevokeToken")
            if target.token_id and target.issuer == self.settings.issuer:
                await self.authn.revoke_jwt(target)
            return
        if token:
            try:
                credential_id = tokens.split_api_key(token)[0]
            except tokens.CredentialError:
                return
        if not credential_id:
            raise InvalidArgument([FieldViolation("token", "give a token or a credential_id")])
        cred = await self.authn.credential(credential_id)
        if cred is None or cred.tenant_id != principal.tenant_id:
            if token:
                return
            raise NotFound(f"credential {credential_id!r} not found")
        if principal.credential_id != credential_id:
            self.require(principal, "credentials", "write", "RevokeToken")
        await self._store.revoke_credential(credential_id, datetime.now(UTC))
        self.authn.changed("cred", credential_id)

    async def issue_token(
        self, grant_type: str, client_id: str, client_secret: str
    ) -> tuple[str, int]:
        problems = []
        if grant_type != "client_credentials":
            problems.append(FieldViolation("grant_type", "must be client_credentials"))
        if not client_id or len(client_id) > 64:
            problems.append(FieldViolation("client_id", "required"))
        if not client_secret or len(client_secret) > 200:
            problems.append(FieldViolation("client_secret", "required"))
        if problems:
            raise InvalidArgument(problems)
        return await self.authn.issue(client_id, client_secret)

    def jwks(self) -> list[dict[str, str]]:
        return self.authn.issuer.jwks()

    async def rotate_signing_key(self) -> list[tuple[str, datetime, datetime | None]]:
        """A new key to sign with; see PostgresPolicyStore.rotate_signing_key."""
        keys = await self._store.rotate_signing_key(
            tokens.new_signing_key(), self.settings.token_ttl + self.settings.leeway
        )
        await self.authn.reload_keys()
        return keys

    async def denials(
        self, principal: Principal, before: datetime | None, limit: int
    ) -> list[DenialRecord]:
        tenants = [principal.tenant_id]
        if self.is_platform_admin(principal):
            tenants.append("")  # refusals before anyone was known
        return await self._store.denials(tenants, before, limit)


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


def asset_access(service: PolicyService, tenant_id: str, asset: Asset) -> AssetAccess:
    """Who may read and write an asset, and why (every subject with a role in the tenant)."""
    d = service.decider
    restricted = sorted(set(service.settings.restricted_tags) & {t.name for t in asset.tags})
    obj = asset_object(asset.asset_type, asset.qualified_name)
    out = []
    for subject in d.subjects(tenant_id):
        read = d.decide(subject, tenant_id, "metadata", "read")
        write = d.decide(subject, tenant_id, obj, "write")
        reasons = [f"read: {read.reason}", f"write: {write.reason}"]
        hidden = [
            t for t in restricted if not d.decide(subject, tenant_id, f"tag:{t}", "read").allowed
        ]
        reasons += [f"tag {t}: needs read on tag:{t}" for t in hidden]
        refuse = bool(hidden) and service.settings.restricted_read == "refuse"
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


def roles_of(service: PolicyService, principal: Principal) -> list[str]:
    return sorted(
        {*service.decider.roles(principal.subject, principal.tenant_id), *principal.roles}
    )
