"""Freshdesk as a destination: a ticket per data-quality incident (API v2), priorities mapped,
updates as private notes, resolution as the ticket resolved; as idempotent as JIRA's (Lily
looks for its ticket, by its tag, before making one)."""

from adapters.freshdesk.config import FreshdeskSettings
from adapters.freshdesk.sink import FreshdeskSink
from adapters.spec import AdapterType

ADAPTER = AdapterType(
    name="freshdesk",
    role="integration_notify",
    settings=FreshdeskSettings,
    sink=FreshdeskSink(),
)
