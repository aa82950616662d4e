"""A notification as a Teams message: an Adaptive Card (version 1.4, what Teams renders) in a
message's attachments, as a Workflows webhook takes it."""

from __future__ import annotations

from typing import Any

from adapters.spec import Notification

CARD = "application/vnd.microsoft.card.adaptive"
_COLORS = {"critical": "Attention", "high": "Attention", "medium": "Warning", "low": "Default"}


def card(n: Notification) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": n.title[:500],
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": _COLORS.get(n.severity, "Default"),
        },
        {"type": "TextBlock", "text": (n.text or n.title)[:4000], "wrap": True},
    ]
    facts = [{"title": "Event", "value": n.event_type}]
    if n.severity:
        facts.append({"title": "Severity", "value": n.severity})
    if n.qualified_name and n.count <= 1:
        facts.append({"title": "Asset", "value": n.qualified_name[:500]})
    if n.count > 1:
        facts.append({"title": "Assets", "value": str(n.count)})
    body.append({"type": "FactSet", "facts": facts})
    if n.count > 1 and n.assets:
        more = n.count - len(n.assets)
        listed = "\n".join(f"- {a[:200]}" for a in n.assets)
        body.append(
            {
                "type": "TextBlock",
                "text": listed + (f"\n\n…and {more} more" if more else ""),
                "wrap": True,
            }
        )
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if n.url.startswith(("https://", "http://")):
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": n.url[:2000]}]
    return content


def message(n: Notification) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": CARD, "contentUrl": None, "content": card(n)}],
    }
