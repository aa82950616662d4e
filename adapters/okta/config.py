"""The settings of one Okta integration."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_LOCAL = ("127.0.0.1", "localhost", "::1")


class OktaSettings(BaseModel):
    """Which Okta org tells Lily of a tenant's people, and how. Secrets (set on the
    integration, never here): `webhook_secret` (Lily makes it: the event hook's
    authentication secret, with `Authorization` as its authentication field) and `api_token`
    (an Okta API token, `SSWS`, of an admin who may read users and groups: for
    reconciliation)."""

    model_config = ConfigDict(extra="forbid")

    org_url: str = Field(
        ...,
        description="The Okta org, e.g. https://acme.okta.com (https; http only on this host, "
        "for tests).",
    )
    reconcile_every_seconds: float = Field(
        3600.0,
        ge=10,
        le=7 * 86400,
        description="How often the org's users and group memberships are read whole (with an "
        "API token), catching event hooks that never arrived.",
    )
    groups: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Only these groups' memberships are read by reconciliation (empty: all).",
    )
    page_size: int = Field(200, ge=1, le=200, description="Users or groups a page (Okta: 200).")

    @field_validator("org_url")
    @classmethod
    def _org(cls, value: str) -> str:
        parts = urlsplit(value)
        local = parts.hostname in _LOCAL
        if (
            parts.scheme not in ("https", "http")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise ValueError("must be the org's base URL, e.g. https://acme.okta.com")
        if parts.scheme == "http" and not local:
            raise ValueError("must be https")
        return value.rstrip("/")
