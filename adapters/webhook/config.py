"""The settings of one webhook destination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WebhookSettings(BaseModel):
    """Where notifications are posted. Its secret, `webhook_secret`, is Lily's to make (and
    rotate with RotateIntegrationSecret); the receiver verifies with it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        ..., pattern=r"^https?://\S+$", max_length=2048, description="Where each one is POSTed."
    )
    max_per_second: float | None = Field(
        None, gt=0, le=10000, description="Messages a second at most (none: no limit)."
    )
