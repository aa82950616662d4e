"""The settings of one JIRA Cloud destination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRIORITIES = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low"}


class JiraSettings(BaseModel):
    """Where tickets are made and how. Secrets (set on the integration, never here): `email`
    and `api_token` (basic auth of an Atlassian account that may create issues in the
    project); `webhook_secret` (Lily makes it: give it to the JIRA webhook that tells Lily of
    tickets moved to done or reopened)."""

    model_config = ConfigDict(extra="forbid")

    site_url: str = Field(
        ...,
        pattern=r"^https?://[^/\s]+/?$",
        description="The JIRA Cloud site, e.g. https://acme.atlassian.net.",
    )
    project_key: str = Field(..., pattern=r"^[A-Z][A-Z0-9_]{1,9}$")
    issue_type: str = Field("Bug", min_length=1, max_length=60)
    priorities: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES),
        description="Lily severity (low, medium, high, critical) -> JIRA priority name.",
    )
    labels: list[str] = Field(
        default_factory=lambda: ["lily"],
        max_length=20,
        description="Labels every ticket gets (besides lily-<key>, how Lily finds its own).",
    )
    max_per_second: float = Field(
        5.0, gt=0, le=100, description="Calls a second at most (JIRA answers 429 beyond its own)."
    )

    @property
    def base(self) -> str:
        return self.site_url.rstrip("/")
