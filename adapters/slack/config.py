"""The settings of one Slack destination."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SlackSettings(BaseModel):
    """Where and how fast notifications go. Secrets (set on the integration, never here):
    `webhook_url` (an incoming webhook's URL: it names its channel), or `bot_token` (a bot's
    xoxb- token, with `channel`): chat.postMessage."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(
        "",
        max_length=80,
        description="The channel a bot token posts to (its id, e.g. C0123456789, or #name).",
    )
    max_per_second: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Messages a second at most: Slack takes about one a second per webhook or "
        "channel, and answers 429 beyond.",
    )
    api_url: str = Field(
        "https://slack.com/api/",
        pattern=r"^https?://\S+/$",
        description="Slack's Web API (for chat.postMessage).",
    )
