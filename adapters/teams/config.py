"""The settings of one Teams destination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TeamsSettings(BaseModel):
    """How fast notifications go. Its secret (set on the integration, never here):
    `workflow_url`, the URL the workflow's webhook trigger gives (it carries a signature)."""

    model_config = ConfigDict(extra="forbid")

    max_per_second: float = Field(
        2.0, gt=0, le=100, description="Messages a second at most (Teams throttles a flood)."
    )
