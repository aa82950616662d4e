"""Live changes of one tenant, filtered (what WatchChanges streams)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeAlias

from lily.v1 import events_pb2 as events_pb

from core.events.codec import events_of
from core.ports import ChangeBus

Event: TypeAlias = events_pb.ChangeEvent


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which changes a watcher wants: each set, if not empty, must hold the event's value
    (entity kind, change kind, asset type; for tags, any tag the event names)."""

    entities: frozenset[int] = frozenset()
    changes: frozenset[int] = frozenset()
    asset_types: frozenset[int] = frozenset()
    tags: frozenset[str] = frozenset()

    def matches(self, e: Event) -> bool:
        tags = set(e.tags) | set(e.tags_added) | set(e.tags_removed)
        return (
            (not self.entities or e.entity in self.entities)
            and (not self.changes or e.change in self.changes)
            and (not self.asset_types or e.asset_type in self.asset_types)
            and (not self.tags or bool(self.tags & tags))
        )


async def changes(bus: ChangeBus, tenant_id: str, flt: WatchFilter) -> AsyncIterator[Event]:
    """The tenant's change events from now on that match `flt`, as they are published."""
    async for _subject, payload, headers in bus.subscribe(f"lily.{tenant_id}.*.*"):
        for event in events_of(payload, headers):
            if event.tenant_id == tenant_id and flt.matches(event):
                yield event
