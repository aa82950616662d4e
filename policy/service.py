"""The policy service: authenticates and authorizes every call (through the interceptor in
core/wire/status.py and policy/permissions.py), answers per-object questions for the other
services (policy/access.py), and manages policies, roles, tenants and credentials.

It is composed of one part per concern, each over the PolicyStore port (policy/ports.py):
- authn (policy/authn.py): a call's credential -> a Principal;
- decisions (policy/decisions.py): who may do what, and each tenant's policies and roles;
- tenants (policy/tenants.py): the tenant registry, and provisioning;
- credentials (policy/credentials.py): API keys, OAuth2 clients, tokens, signing keys;
- denials (policy/denials.py): the audit trail of refusals;
- integrations (policy/integrations.py): connections to outside systems, their secrets sealed;
- enforcement (policy/enforcement.py): what enforcement targets did with restricted tags;
- notifications (policy/notifications.py): subscriptions, and the record of each delivery;
- people (policy/directory.py): each tenant's directory, as its identity provider says;
- sessions (policy/sessions.py): people signed in with the tenant's identity provider.
This module starts and stops them, and hands each what the store's change feed says changed
(on this instance or another), so a change takes effect everywhere within moments."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import Any

from core.requestctx import Principal
from core.settings import AuthSettings
from policy.authn import Authenticator
from policy.credentials import Credentials
from policy.decisions import Decisions
from policy.denials import Denials
from policy.directory import People
from policy.enforcement import Enforcement
from policy.integrations import Integrations, load_types
from policy.model import DenialRecord
from policy.notifications import Notifications
from policy.ports import (
    EnforcementStore,
    EventPublisher,
    IdentityStore,
    IntegrationStore,
    IntegrationType,
    KeptDeliveries,
    NotificationStore,
    Outbound,
    PolicyStore,
)
from policy.secretbox import SecretBox
from policy.sessions import Sessions
from policy.tenants import Tenants

log = logging.getLogger(__name__)


class PolicyService:
    def __init__(
        self,
        store: PolicyStore,
        settings: AuthSettings,
        integrations: IntegrationStore,
        identity: IdentityStore,
        *,
        secret_key: str = "",
        integration_types: Mapping[str, IntegrationType] | None = None,
        kept: KeptDeliveries | None = None,
        receipts: EnforcementStore | None = None,
        events: EventPublisher | None = None,
        notifications: NotificationStore | None = None,
        outbound: Outbound | None = None,
    ) -> None:
        self._store = store
        self.settings = settings
        box = SecretBox(secret_key) if secret_key else None
        self.people = People(identity, settings)
        self.authn = Authenticator(store, settings, self.people)
        self.denials = Denials(store)
        self.decisions = Decisions(store, settings, self.denials)
        self.tenants = Tenants(store, settings, self.authn, self.decisions, self.denials)
        self.credentials = Credentials(store, settings, self.authn, self.decisions)
        self.integrations = Integrations(
            integrations,
            box,
            load_types() if integration_types is None else integration_types,
            system_tenant=settings.system_tenant,
            on_links=self.decisions.reload,
            kept=kept,
        )
        self.enforcement = (
            Enforcement(receipts, self.integrations, events) if receipts is not None else None
        )
        self.notifications = (
            Notifications(
                notifications,
                self.integrations,
                outbound,
                events,
                system_tenant=settings.system_tenant,
            )
            if notifications is not None
            else None
        )
        self.sessions = Sessions(identity, settings, self.authn, self.people, box)
        self._tasks: list[asyncio.Task[None]] = []
        self._reloads: set[asyncio.Task[None]] = set()  # one-off reloads the feed asked for

    async def start(self) -> None:
        await self.authn.start()
        await self.people.load()
        await self.decisions.reload()
        self._tasks = [
            asyncio.create_task(
                self._store.listen(self._on_change, self._on_reconnect), name="policy-feed"
            ),
            asyncio.create_task(self.decisions.run(), name="policy-reload"),
            asyncio.create_task(self.denials.run(), name="policy-denials"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._reloads]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self.denials.flush()

    async def list_denials(
        self, principal: Principal, before: datetime | None, limit: int
    ) -> list[DenialRecord]:
        """The refusals in the caller's tenant, newest first (for platform admins, also those
        of calls whose tenant was never known)."""
        tenants = [principal.tenant_id]
        if self.decisions.is_platform_admin(principal):
            tenants.append("")
        return await self.denials.newest(tenants, before, limit)

    # -- the change feed

    def _on_change(self, payload: str) -> None:
        kind, _, key = payload.partition(":")
        if kind == "rules":
            self.decisions.changed()
        elif kind == "tenant":
            self._reload(self.tenants.changed(key))
        elif kind == "keys":
            self._reload(self.authn.reload_keys())
        elif kind == "person":
            self._reload(self.people.changed(key))
        else:
            self.authn.changed(kind, key)

    def _on_reconnect(self) -> None:
        self.decisions.changed()
        self._reload(self.authn.reload())
        self._reload(self.people.load())

    def _reload(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._reloads.add(task)
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[None]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # (the next change, or the feed's reconnect, reloads again)
            log.error("policy reload failed: %r", task.exception())
