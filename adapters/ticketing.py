"""One ticket per Lily issue in a ticketing system (JIRA, Freshdesk), however often its
events are sent: the flow both share, over each system's calls (Tickets).

Before a ticket is made, Lily looks for its own: the one it remembers making for the key
(adapters.spec.Memory), else the one the system finds by the key's label or tag. So a retry
after a lost answer, or a restart mid-incident, finds the ticket rather than making a second
(but for the moment a system's search index takes to see a new ticket, while Lily has not yet
remembered it). Later events are notes, each marked with its delivery id and looked for
before posting, so a retried note is posted once; the issue resolved closes the ticket, and
reopened opens it again."""

from __future__ import annotations

from typing import Protocol

from adapters.spec import Memory, Notification, Sent

Ticket = tuple[str, bool]  # (the system's id of it, whether it is done)


class Tickets(Protocol):
    async def get(self, ref: str) -> Ticket | None: ...

    async def search(self, key: str) -> Ticket | None:
        """The ticket made for a key (by its label or tag)."""
        ...

    async def create(self, n: Notification, key: str) -> str: ...

    async def notes(self, ref: str) -> str:
        """The text of its recent notes (a marker is looked for in it)."""
        ...

    async def note(self, ref: str, n: Notification) -> None: ...

    async def move(self, ref: str, done: bool) -> None: ...


def key_of(n: Notification) -> str:
    """What one ticket stands for: a Lily issue (every event of it), else the notification."""
    return n.issue_id or n.delivery_id


def marker(n: Notification) -> str:
    return f"[lily:{n.delivery_id}]"


def facts(n: Notification) -> list[str]:
    """What a ticket says of its notification, a line each (its description lists them)."""
    found = [f"Event: {n.event_type}"]
    if n.qualified_name:
        found.append(f"Asset: {n.qualified_name}")
    if n.severity:
        found.append(f"Severity: {n.severity}")
    if n.issue_source:
        found.append(f"Reported by: {n.issue_source} ({n.issue_external_id})")
    if n.count > 1:
        found.append(f"Assets: {n.count}")
    return found


async def deliver(system: Tickets, n: Notification, memory: Memory) -> Sent:
    key = key_of(n)
    if n.issue_id:  # what a webhook about the ticket needs to find the issue
        await memory.put(f"issue:{n.issue_id}", [n.asset_id, n.issue_source, n.issue_external_id])
    ticket = await _find(system, key, memory)
    if ticket is None:
        if n.event_type == "issue.resolved":
            return Sent(200, "no ticket to resolve")
        made = await system.create(n, key)
        await memory.put(f"ticket:{key}", [made])
        return Sent(201, "created", made)
    ref, done = ticket
    # (an issue opens once: found, its ticket was made by an attempt whose answer was lost)
    if n.event_type != "issue.opened" and marker(n) not in await system.notes(ref):
        await system.note(ref, n)
    if n.issue_status == "resolved" and not done:
        await system.move(ref, True)
        return Sent(200, "resolved", ref)
    if n.issue_status == "open" and done:
        await system.move(ref, False)
        return Sent(200, "reopened", ref)
    return Sent(200, "noted", ref)


async def _find(system: Tickets, key: str, memory: Memory) -> Ticket | None:
    for known in await memory.get(f"ticket:{key}"):
        if (ticket := await system.get(known)) is not None:
            return ticket
    found = await system.search(key)
    if found is not None:
        await memory.put(f"ticket:{key}", [found[0]])
    return found
