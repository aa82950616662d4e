"""The settings of one OpenLineage integration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenLineageSettings(BaseModel):
    """How OpenLineage's datasets and jobs are named in Lily. The secret `webhook_secret` is
    the API key its producers send (the openlineage-python HTTP transport's api_key)."""

    model_config = ConfigDict(extra="forbid")

    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="A dataset namespace -> the qualified-name prefix its datasets take in "
        "Lily, where OpenLineage's own naming (namespace/name) is not wanted.",
    )
