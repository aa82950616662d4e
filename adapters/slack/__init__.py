"""Slack as a destination of notifications: an incoming webhook, or chat.postMessage with a
bot token, carrying a Block Kit message; through Slack's official SDK (slack-sdk)."""

from adapters.slack.config import SlackSettings
from adapters.slack.sink import SlackSink
from adapters.spec import AdapterType

ADAPTER = AdapterType(
    name="slack",
    role="integration_notify",
    settings=SlackSettings,
    sink=SlackSink(),
)
