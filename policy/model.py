"""The policy side's records: tenants, credentials, refusals and integrations (plain values;
the rules themselves are in policy/rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TenantRecord:
    tenant_id: str
    display_name: str
    isolation: str  # SHARED | DEDICATED
    state: str  # PROVISIONING | READY | FAILED
    error: str
    created_at: datetime

    @property
    def has_cell(self) -> bool:
        """Whether it is served by a cell of its own (core.cells): DEDICATED, and made."""
        return self.isolation == "DEDICATED" and self.state == "READY"


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    credential_id: str
    tenant_id: str
    kind: str  # API_KEY | CLIENT
    subject: str
    secret_digest: str
    roles: tuple[str, ...]
    description: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class DenialRecord:
    tenant_id: str
    at: datetime
    subject: str
    method: str
    object: str
    action: str
    code: str
    reason: str
    request_id: str
    origin: str


@dataclass(frozen=True, slots=True)
class IntegrationRecord:
    """An integration as stored: its secrets sealed (policy/secretbox.py), never in the clear."""

    integration_id: str
    tenant_id: str
    type: str
    display_name: str
    settings: dict[str, Any]
    sealed: bytes
    secret_names: tuple[str, ...]
    enabled: bool
    credential_id: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None = None
    previous_secret_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeptRecord:
    """A delivery the adapter runtime kept rather than mapped."""

    sequence: int
    delivery_id: str
    kind: str  # unmapped | pending | dead
    reason: str
    received_at: datetime
    kept_at: datetime
    body: bytes


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """What an enforcement target did with one asset's restricted tags (its last receipt)."""

    integration_id: str
    tenant_id: str
    asset_id: str
    qualified_name: str
    target_object: str
    desired: str  # open | closed
    applied: str  # open | closed ("" : unknown, e.g. the target could not be reached)
    outcome: str  # applied | failed | drifted
    asset_version: int
    restricted_tags: tuple[str, ...]
    denied_roles: tuple[str, ...]
    applied_at: datetime
    statements: tuple[str, ...]
    taken: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """Which of a tenant's events go to which destination (policy/notifications.py)."""

    subscription_id: str
    tenant_id: str
    integration_id: str
    display_name: str
    event_types: tuple[str, ...]
    tags: tuple[str, ...]
    asset_types: tuple[int, ...]  # lily.v1.AssetType
    prefix: str
    min_severity: int  # lily.v1.IssueSeverity
    template: str
    paused: bool
    max_attempts: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    destination_type: str = ""  # its integration's type (read with it)
    paused_at: datetime | None = None  # the last pause began
    resumed_at: datetime | None = None  # ... and ended (None: it has not)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One notification to one destination, and what became of it."""

    delivery_id: str
    tenant_id: str
    subscription_id: str  # "" : a test
    integration_id: str
    destination_type: str
    event_type: str
    event_ids: tuple[str, ...]
    event_count: int
    asset_id: str
    qualified_name: str
    severity: int  # lily.v1.IssueSeverity
    title: str
    status: str  # queued | delivered | failed | dead
    attempts: int
    generation: int
    created_at: datetime
    updated_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    destination_status: int = 0
    destination_message: str = ""
    external_ref: str = ""
    test: bool = False
    notification: bytes = b""


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """A destination as its deliveries found it."""

    integration_id: str
    tenant_id: str
    healthy: bool
    consecutive_failures: int
    last_error: str
    updated_at: datetime
    unhealthy_since: datetime | None = None
    last_success_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """A person of a tenant's directory, as its identity provider said last
    (policy/directory.py)."""

    tenant_id: str
    user_id: str  # the provider's id (Okta: 00u...)
    login: str
    email: str
    status: str  # ACTIVE | SUSPENDED | DEPROVISIONED
    groups: tuple[str, ...]
    source: str  # login | hook | reconcile
    observed_at: datetime  # when the provider said so

    @property
    def blocked(self) -> bool:
        return self.status != "ACTIVE"

    @property
    def names(self) -> tuple[str, ...]:
        """What a credential may name them by (lower case): id, login, e-mail."""
        return tuple(dict.fromkeys(n.lower() for n in (self.user_id, self.login, self.email) if n))


@dataclass(frozen=True, slots=True)
class PeopleChange:
    """What a change of a tenant's directory writes: the people as they are now, and how many
    of the updates it was made of were older than what was known (skipped)."""

    people: tuple[PersonRecord, ...] = ()
    stale: int = 0


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A person's signed-in session (policy/sessions.py)."""

    session_id: str
    tenant_id: str
    subject: str
    user_id: str
    issuer: str  # the OIDC issuer they signed in with
    refresh_digest: str
    upstream: bytes  # the provider's refresh token, sealed; b"" if none
    created_at: datetime
    refreshed_at: datetime
    expires_at: datetime
    tokens_until: datetime  # the newest access token it bought expires then
    revoked_at: datetime | None = None
    revoked_why: str = ""
