"""The settings of one Freshdesk destination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRIORITIES = {"low": 1, "medium": 2, "high": 3, "critical": 4}


class FreshdeskSettings(BaseModel):
    """Where tickets are made. Its secret (set on the integration, never here): `api_key`, a
    Freshdesk agent's API key (basic auth with it as the user)."""

    model_config = ConfigDict(extra="forbid")

    domain_url: str = Field(
        ..., pattern=r"^https?://[^/\s]+/?$", description="e.g. https://acme.freshdesk.com"
    )
    requester_email: str = Field(
        ...,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        max_length=254,
        description="Whom the tickets are from (Freshdesk needs a requester).",
    )
    group_id: int | None = Field(None, description="The group tickets are assigned to.")
    priorities: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES),
        description="Lily severity -> Freshdesk priority (1 low, 2 medium, 3 high, 4 urgent).",
    )
    tags: list[str] = Field(default_factory=lambda: ["lily"], max_length=20)
    max_per_second: float = Field(
        2.0, gt=0, le=100, description="Calls a second at most (Freshdesk answers 429 beyond)."
    )

    @property
    def base(self) -> str:
        return self.domain_url.rstrip("/")
