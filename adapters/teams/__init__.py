"""Microsoft Teams as a destination of notifications: a Workflows webhook ("When a Teams
webhook request is received"; the Office 365 connectors it replaces are retired) carrying
an Adaptive Card."""

from adapters.spec import AdapterType
from adapters.teams.config import TeamsSettings
from adapters.teams.sink import TeamsSink

ADAPTER = AdapterType(
    name="teams",
    role="integration_notify",
    settings=TeamsSettings,
    sink=TeamsSink(),
)
