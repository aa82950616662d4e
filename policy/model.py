"""The policy side's records: tenants, credentials and refusals (plain values; the rules
themselves are in policy/rules.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
