"""The ports the policy service depends on: PolicyStore and IntegrationStore (one
implementation per backend: policy/stores/), chosen at the composition root (core/server.py);
and IntegrationType, what each adapter says of its integrations."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from policy.model import (
    CredentialRecord,
    DeliveryRecord,
    DenialRecord,
    HealthRecord,
    IntegrationRecord,
    KeptRecord,
    PeopleChange,
    PersonRecord,
    ReceiptRecord,
    SessionRecord,
    SubscriptionRecord,
    TenantRecord,
)
from policy.rules import RoleLink, Rule


class PolicyStore(Protocol):
    """Tenants, Casbin rules, credentials, signing keys, revoked tokens and denials, shared by
    every server instance, and the change feed that tells each instance what changed.

    Guarantees every implementation gives:
    - Each method that writes more than one row writes all or nothing.
    - A write that other instances must know of announces itself on the change feed
      (`listen`) as `<kind>:<key>` only once it has committed: `rules:<tenant>`,
      `tenant:<tenant>`, `cred:<credential id>`, `jti:<token id>`, `keys:<kid>`.
    - Raises core.domain.errors.Unavailable when the backend cannot be reached (reads made
      at start and by the feed's reloads may raise the backend's own errors).
    """

    # -- rules

    async def load_rules(self) -> tuple[list[Rule], list[RoleLink]]:
        """Every tenant's policies and role assignments (not the built-in ones)."""
        ...

    async def change_rules(
        self,
        tenant_id: str,
        *,
        add: Iterable[Rule] = (),
        add_links: Iterable[RoleLink] = (),
        remove: Iterable[Rule] = (),
        remove_links: Iterable[RoleLink] = (),
        replace: bool = False,
    ) -> tuple[int, int]:
        """Adds and removes rules of one tenant at once (with `replace`, all of the tenant's
        go first); returns (added, removed). Adding one that is there is no change."""
        ...

    # -- tenants

    async def tenants(self) -> list[TenantRecord]: ...

    async def tenant(self, tenant_id: str) -> TenantRecord | None: ...

    async def create_tenant(
        self,
        tenant: TenantRecord,
        admin: CredentialRecord | None,
        links: Sequence[RoleLink] = (),
        rules: Sequence[Rule] = (),
    ) -> bool:
        """Registers a tenant with its first credential and rules at once; False if the id is
        taken."""
        ...

    async def tenant_ready(self, tenant_id: str) -> None:
        """A PROVISIONING tenant is READY (its cell is made): its credentials work now."""
        ...

    async def forget_tenant(self, tenant_id: str) -> None:
        """Removes a tenant that never became READY, with its credentials and rules."""
        ...

    # -- credentials and tokens

    async def add_credential(self, cred: CredentialRecord, links: Sequence[RoleLink]) -> None:
        """Stores a credential with the roles its subject is given."""
        ...

    async def credential(self, credential_id: str) -> CredentialRecord | None: ...

    async def credentials(
        self, tenant_id: str, include_revoked: bool
    ) -> list[CredentialRecord]: ...

    async def revoke_credential(self, credential_id: str, at: datetime) -> bool:
        """False if it was unknown or revoked already."""
        ...

    async def revoke_token(self, jti: str, tenant_id: str, expires_at: datetime) -> None:
        """Refuses a token (by its id) until it would have expired anyway."""
        ...

    async def revoked_tokens(self) -> set[str]:
        """The ids of revoked tokens that have not expired yet."""
        ...

    async def signing_keys(self, new: tuple[str, str]) -> dict[str, str]:
        """The issuer's live keys by kid (oldest first: the newest signs); `new` (kid, PEM)
        is stored first if there is none."""
        ...

    async def rotate_signing_key(
        self, new: tuple[str, str], grace_s: float
    ) -> list[tuple[str, datetime, datetime | None]]:
        """Makes `new` the key to sign with; the others retire `grace_s` seconds from now.
        Returns every live key (kid, created, retires), oldest first."""
        ...

    # -- denials

    async def add_denials(self, denials: Sequence[DenialRecord]) -> None: ...

    async def denials(
        self, tenant_ids: Sequence[str], before: datetime | None, limit: int
    ) -> list[DenialRecord]:
        """The newest refusals in these tenants, before `before` if given."""
        ...

    # -- the change feed

    async def listen(
        self, on_change: Callable[[str], None], on_reconnect: Callable[[], None]
    ) -> None:
        """Calls `on_change(payload)` for every change announced, for ever; after a lost
        connection, `on_reconnect()` once it is back (changes may have been missed)."""
        ...


class IdentityStore(Protocol):
    """Each tenant's directory of people and the sessions they signed in with, on the store
    and change feed of the PolicyStore (a write announces `person:<tenant>/<user id>`, and
    the sessions and credentials it revokes `jti:<session id>` and `cred:<credential id>`)."""

    async def people(self) -> list[PersonRecord]:
        """Every tenant's people (loaded at start)."""
        ...

    async def person(self, tenant_id: str, user_id: str) -> PersonRecord | None: ...

    async def list_people(
        self, tenant_id: str, status: str, after: str, limit: int
    ) -> list[PersonRecord]:
        """A tenant's people by user id after `after` (with `status` if given)."""
        ...

    async def change_people(
        self,
        tenant_id: str,
        user_ids: Sequence[str] | None,
        change: Callable[[dict[str, PersonRecord]], PeopleChange],
        revoke_until: datetime,
    ) -> tuple[PeopleChange, int, int]:
        """Reads the people named (None: all of the tenant's), locked, hands them by user id
        to `change` and writes what it returns, at once. A person it leaves blocked who was
        not loses every live session (refused until `revoke_until`, when their access tokens
        have expired) and every credential whose subject is one of their names. Returns the
        change, and how many sessions and credentials it revoked."""
        ...

    async def add_session(self, session: SessionRecord) -> None: ...

    async def session(self, session_id: str) -> SessionRecord | None: ...

    async def refresh_session(self, session_id: str, spent_digest: str, new: SessionRecord) -> bool:
        """Replaces the session's refresh token (and what else `new` says) if `spent_digest`
        is still its refresh token's and it is not revoked; False otherwise."""
        ...

    async def revoke_session(self, session_id: str, why: str, until: datetime) -> bool:
        """Ends a session: its access tokens are refused until `until`. False if it was
        unknown or ended already."""
        ...


class IntegrationStore(Protocol):
    """Integrations, each with its own credential. Guarantees: a create stores the
    integration, its credential and the credential's roles all at once; a delete removes the
    integration and revokes its credential at once (announcing `cred:<credential id>` on the
    policy change feed); an update happens only if nobody changed it since it was read."""

    async def create_integration(
        self,
        integration: IntegrationRecord,
        credential: CredentialRecord,
        links: Sequence[RoleLink],
    ) -> None: ...

    async def integration(self, integration_id: str) -> IntegrationRecord | None: ...

    async def integrations(self, tenant_id: str, type: str) -> list[IntegrationRecord]:
        """A tenant's integrations (of `type`, unless empty), oldest first."""
        ...

    async def platform_integrations(
        self, type: str, after: str, limit: int
    ) -> list[IntegrationRecord]:
        """Integrations of every tenant (of `type`, unless empty) with ids after `after`, in
        id order, at most `limit`."""
        ...

    async def update_integration(self, new: IntegrationRecord, read_at: datetime) -> bool:
        """Replaces the integration with `new` if its updated_at is still `read_at`; False
        if it was changed (or deleted) meanwhile."""
        ...

    async def delete_integration(self, integration_id: str, at: datetime) -> bool:
        """Deletes it and revokes its credential; False if it was unknown."""
        ...


class IntegrationType(Protocol):
    """What an adapter says of the integrations it serves (found through the `lily.adapters`
    entry points, so the registry knows each type without importing adapters/)."""

    @property
    def name(self) -> str:
        """The type, as integrations name it: "monte_carlo"."""
        ...

    @property
    def role(self) -> str:
        """The built-in role its integrations' credentials get (policy/builtin.csv)."""
        ...

    @property
    def webhook(self) -> str:
        """The path segment of its webhook route (/webhook/<webhook>/<integration id>);
        empty: it takes no webhooks."""
        ...

    @property
    def destination(self) -> bool:
        """Whether subscriptions may send notifications to its integrations."""
        ...

    @property
    def signs(self) -> bool:
        """Whether Lily signs what it sends its integrations with their webhook secret (so
        Lily makes one, and rotates it, as for a type that takes webhooks)."""
        ...

    def check_settings(self, settings: dict[str, Any]) -> list[tuple[str, str]]:
        """Its settings' problems, each as (field path, what is wrong); none: valid."""
        ...


class KeptDeliveries(Protocol):
    """The deliveries the adapter runtime kept rather than mapped (adapters/runtime/inbox.py),
    by tenant and integration; `kind` is unmapped, pending or dead ("": any)."""

    async def find(
        self, tenant_id: str, integration_id: str, kind: str, after: int, limit: int
    ) -> list[KeptRecord]:
        """Oldest first, after sequence `after`."""
        ...

    async def replay(
        self, tenant_id: str, integration_id: str, kind: str, sequences: Sequence[int]
    ) -> int:
        """Puts them back in the runtime's inbox (all of `kind` if no sequences) and out of
        the kept list; how many."""
        ...


class EnforcementStore(Protocol):
    """Each enforcement target's last receipt per asset."""

    async def record(self, receipts: Sequence[ReceiptRecord]) -> list[ReceiptRecord]:
        """Keeps each receipt unless the one kept for its target and asset is newer
        (applied_at); the ones kept."""
        ...

    async def receipt(self, integration_id: str, asset_id: str) -> ReceiptRecord | None: ...

    async def receipts(
        self, integration_id: str, outcome: str, prefix: str, after: str, limit: int
    ) -> list[ReceiptRecord]:
        """By qualified name, after `after`, of `outcome` ("" : any), under `prefix`."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    """Which deliveries ListDeliveries wants (each field set must match)."""

    subscription_id: str = ""
    integration_id: str = ""
    status: str = ""
    asset_id: str = ""
    event_type: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    # the last page's last delivery (newest first: the page after it is older)
    after: tuple[datetime, str] | None = None


class NotificationStore(Protocol):
    """Subscriptions, delivery records and destination health (policy/notifications.py)."""

    async def create_subscription(self, s: SubscriptionRecord) -> None: ...

    async def subscription(self, tenant_id: str, subscription_id: str) -> SubscriptionRecord | None:
        """With its destination's type."""
        ...

    async def subscriptions(
        self, tenant_id: str, integration_id: str, after: str, limit: int
    ) -> list[SubscriptionRecord]:
        """A tenant's, or every tenant's if tenant_id is "" (the adapter runtime's), by id."""
        ...

    async def update_subscription(self, s: SubscriptionRecord, read_at: datetime) -> bool:
        """Stores it unless it changed since it was read (its updated_at then)."""
        ...

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> bool: ...

    async def record_deliveries(self, records: Sequence[DeliveryRecord]) -> int:
        """Keeps each unless the one kept is of a later generation, or of the same and
        newer (updated_at); a record without its notification keeps the one stored. How many
        were kept."""
        ...

    async def delivery(self, tenant_id: str, delivery_id: str) -> DeliveryRecord | None: ...

    async def deliveries(
        self, tenant_id: str, query: DeliveryQuery, limit: int
    ) -> list[DeliveryRecord]:
        """Newest first (without their notifications)."""
        ...

    async def dead_letters(
        self,
        tenant_id: str,
        subscription_id: str,
        created_after: datetime | None,
        created_before: datetime | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        """Oldest first, with their notifications."""
        ...

    async def requeue(self, r: DeliveryRecord) -> bool:
        """Stores `r` (its next generation, queued) if the one kept is still of the
        generation before it."""
        ...

    async def record_health(self, records: Sequence[HealthRecord]) -> None:
        """Keeps each unless the one kept is newer."""
        ...

    async def health(self, tenant_id: str) -> list[HealthRecord]: ...


class Outbound(Protocol):
    """The adapter runtime's outbound stream (adapters/runtime/outbox.py): what it sends."""

    async def send(self, deliveries: Sequence[DeliveryRecord]) -> None:
        """Queues each delivery's notification for its destination (a delivery's generation
        once). Raises core.domain.errors.Unavailable if the stream did not take them."""
        ...


class EventPublisher(Protocol):
    """Publishes change events of the policy service's own (lily.<tenant>.<entity>.<change>)."""

    async def publish(self, events: Sequence[tuple[str, str, bytes]]) -> None:
        """Each (subject, event id, ChangeEvent bytes), de-duplicated by event id. Raises
        core.domain.errors.Unavailable if the bus did not take them."""
        ...
