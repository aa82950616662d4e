"""Tenants: the registry (which tenants there are, SHARED or DEDICATED, and ready), made by
platform admins, each with its first admin's API key; a DEDICATED tenant's cell is made within
the call (core.cells) or nothing of the tenant is kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from core.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    LilyError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from core.requestctx import Principal
from core.settings import AuthSettings
from policy import tokens
from policy.authn import Authenticator
from policy.decisions import Decisions
from policy.denials import Denials
from policy.model import CredentialRecord, TenantRecord
from policy.ports import PolicyStore
from policy.rules import RoleLink, Rule

log = logging.getLogger(__name__)


class TenantCells(Protocol):
    """Where DEDICATED tenants' stores are made and opened (core.cells.Cells)."""

    async def open(self, tenant_id: str) -> object: ...


class Tenants:
    def __init__(
        self,
        store: PolicyStore,
        settings: AuthSettings,
        authn: Authenticator,
        decisions: Decisions,
        denials: Denials,
    ) -> None:
        self._store = store
        self.settings = settings
        self._authn = authn  # its cache of the registry, kept current by the change feed
        self._decisions = decisions
        self._denials = denials
        self.cells: TenantCells | None = None  # set by the server; none: no DEDICATED tenants

    def get(self, principal: Principal, tenant_id: str) -> TenantRecord:
        if tenant_id != principal.tenant_id and not self._decisions.is_platform_admin(principal):
            self._denials.record(
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
        found = self._authn.tenants.get(tenant_id)
        if found is None:
            raise NotFound(f"tenant {tenant_id!r} not found", metadata={"tenant_id": tenant_id})
        return found

    def all(self) -> list[TenantRecord]:
        return sorted(self._authn.tenants.values(), key=lambda t: t.tenant_id)

    def isolation_of(self, tenant_id: str) -> str | None:
        """SHARED or DEDICATED, as the tenant registry says (None: no such tenant)."""
        found = self._authn.tenants.get(tenant_id)
        return None if found is None else found.isolation

    async def create(
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
        self._authn.tenants[tenant_id] = tenant
        await self._decisions.reload()
        return tenant, cred, key.secret

    async def _provision(self, tenant_id: str, abandoned: Callable[[], bool]) -> None:
        assert self.cells is not None  # (checked by create)
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
        if self.settings.system_tenant in self._authn.tenants:
            return None
        try:
            _, _, secret = await self.create(
                "lily-bootstrap", self.settings.system_tenant, "default", "SHARED"
            )
        except AlreadyExists:  # another instance got there first
            await self._authn.reload_tenant(self.settings.system_tenant)
            return None
        return secret

    async def changed(self, tenant_id: str) -> None:
        """Reloads a tenant; one made DEDICATED and READY elsewhere gets its cell opened here
        too (so this instance runs its workers and serves it at once)."""
        await self._authn.reload_tenant(tenant_id)
        tenant = self._authn.tenants.get(tenant_id)
        if self.cells and tenant and tenant.has_cell:
            try:
                await self.cells.open(tenant_id)
            except Exception:  # the feed's boundary: its first call here will try again
                log.exception("could not open the cell of tenant %s", tenant_id)
