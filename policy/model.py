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
