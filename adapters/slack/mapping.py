"""A notification as a Slack message: its fallback text, and its Block Kit blocks (built with
the SDK's block models, within Slack's limits: a header's 150 characters, a section's 3,000)."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from adapters.spec import Notification

_ICONS = {
    "critical": ":red_circle:",
    "high": ":large_orange_circle:",
    "medium": ":large_yellow_circle:",
    "low": ":white_circle:",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(n: Notification) -> tuple[str, list[dict[str, Any]]]:
    """(text, blocks): the text is what notifications and screen readers show."""
    text = _cut(n.text or n.title, 3000)
    blocks: list[Any] = [
        HeaderBlock(text=_cut(n.title, 150)),
        SectionBlock(text=MarkdownTextObject(text=text)),
    ]
    if n.count > 1 and n.assets:
        listed = "\n".join(f"• `{_cut(a, 200)}`" for a in n.assets)
        more = f"\n…and {n.count - len(n.assets)} more" if n.count > len(n.assets) else ""
        blocks.append(SectionBlock(text=MarkdownTextObject(text=_cut(listed + more, 3000))))
    facts = [f"*{n.event_type}*"]
    if n.severity:
        facts.append(f"{_ICONS.get(n.severity, '')} {n.severity}")
    if n.qualified_name and n.count <= 1:
        facts.append(f"`{_cut(n.qualified_name, 500)}`")
    if n.test:
        facts.append("a test from Lily")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(facts))]))
    if n.url.startswith(("https://", "http://")):
        blocks.append(ActionsBlock(elements=[ButtonElement(text="Open", url=n.url[:3000])]))
    return text, [b.to_dict() for b in blocks]
