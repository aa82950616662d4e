"""Lily's notifications as Freshdesk's API v2 takes them (pure): a ticket's fields, its HTML
description and notes, and the tag Lily finds its own tickets by."""

from __future__ import annotations

import hashlib
from html import escape
from typing import Any

from adapters.freshdesk.config import FreshdeskSettings
from adapters.spec import Notification
from adapters.ticketing import facts, marker

OPEN, RESOLVED = 2, 4  # Freshdesk's statuses (2 open, 3 pending, 4 resolved, 5 closed)
DONE = frozenset({4, 5})


def tag(key: str) -> str:
    """The tag of the ticket made for a key (short: Freshdesk keeps tags to 32 characters)."""
    return "lily-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def query(key: str) -> str:
    """Freshdesk's filter query for it (the whole query in double quotes)."""
    return f"\"tag:'{tag(key)}'\""


def html(n: Notification) -> str:
    items = [f"<li>{escape(fact)}</li>" for fact in facts(n)]
    parts = [f"<p>{escape(n.text or n.title)}</p>", f"<ul>{''.join(items)}</ul>"]
    if n.count > 1 and n.assets:
        parts.append("<ul>" + "".join(f"<li>{escape(a)}</li>" for a in n.assets) + "</ul>")
    if n.url.startswith(("https://", "http://")):
        parts.append(f'<p><a href="{escape(n.url)}">Open in the reporting tool</a></p>')
    parts.append(f"<p>{escape(marker(n))}</p>")
    return "".join(parts)


def ticket(n: Notification, key: str, settings: FreshdeskSettings) -> dict[str, Any]:
    found: dict[str, Any] = {
        "subject": " ".join(n.title.split())[:255] or n.event_type,
        "description": html(n),
        "email": settings.requester_email,
        "status": OPEN,
        "priority": settings.priorities.get(n.severity, 1),
        "tags": [*settings.tags, tag(key)],
    }
    if settings.group_id is not None:
        found["group_id"] = settings.group_id
    return found
