"""Lily's notifications as JIRA Cloud's REST API v3 takes them (pure): the ticket's fields,
its description and comments in Atlassian Document Format, the label Lily finds its own
tickets by, and the JQL that finds one; and JIRA's webhooks as what Lily should do."""

from __future__ import annotations

from typing import Any, Literal

from adapters.jira.config import JiraSettings
from adapters.spec import Notification
from adapters.ticketing import facts, key_of, marker

LABEL = "lily-"


def label(key: str) -> str:
    return LABEL + key


def jql(settings: JiraSettings, key: str) -> str:
    return f'project = "{settings.project_key}" AND labels = "{label(key)}"'


def _text(text: str, **link: str) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": text}
    if link.get("href"):
        node["marks"] = [{"type": "link", "attrs": {"href": link["href"]}}]
    return node


def _paragraph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(nodes)}


def _bullets(items: list[str]) -> dict[str, Any]:
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [_paragraph(_text(i))]} for i in items],
    }


def document(n: Notification, *, marked: bool = True) -> dict[str, Any]:
    """The notification in Atlassian Document Format (a doc of paragraphs and a list)."""
    content: list[dict[str, Any]] = [_paragraph(_text((n.text or n.title)[:30000]))]
    content.append(_bullets(facts(n)))
    if n.count > 1 and n.assets:
        content.append(_bullets(list(n.assets)))
    if n.url.startswith(("https://", "http://")):
        content.append(_paragraph(_text("Open in the reporting tool", href=n.url)))
    if marked:  # how a retried comment is known to be there already
        content.append(_paragraph(_text(marker(n))))
    return {"type": "doc", "version": 1, "content": content}


def fields(n: Notification, settings: JiraSettings) -> dict[str, Any]:
    """A new ticket's fields."""
    found: dict[str, Any] = {
        "project": {"key": settings.project_key},
        "summary": " ".join(n.title.split())[:255] or n.event_type,
        "issuetype": {"name": settings.issue_type},
        "labels": [*settings.labels, label(key_of(n))],
        "description": document(n),
    }
    if n.severity and settings.priorities.get(n.severity):
        found["priority"] = {"name": settings.priorities[n.severity]}
    return found


# -- JIRA's webhooks


def move_of(payload: dict[str, Any]) -> tuple[str, Literal["done", "reopened"]] | None:
    """(the Lily key its labels name, done | reopened) if a jira:issue_updated webhook moved
    a ticket of Lily's into the done category or out of it; None for anything else."""
    if payload.get("webhookEvent") != "jira:issue_updated":
        return None
    issue = payload.get("issue") or {}
    f = issue.get("fields") or {}
    keys = [
        lb[len(LABEL) :]
        for lb in f.get("labels") or []
        if isinstance(lb, str) and lb.startswith(LABEL)
    ]
    items = (payload.get("changelog") or {}).get("items") or []
    if not keys or not any(isinstance(i, dict) and i.get("field") == "status" for i in items):
        return None
    category = ((f.get("status") or {}).get("statusCategory") or {}).get("key")
    return keys[0], "done" if category == "done" else "reopened"
