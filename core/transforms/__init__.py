"""Transformation hooks: plug-ins that Lily finds through Python entry points, so that
`pip install` of a package adds them, and that each tenant enables by configuration
(`transforms` and `actions` in the settings; core/transforms/pipeline.py runs them).

- Pre-ingest transformers (entry point group `lily.transformers`) see every asset of an
  ingest before it is stored or queued, after it was validated: they may enrich it,
  normalise it, or refuse it with a reason (raise Reject). What they return is validated
  again, and the caller's right to write it is checked on what they return.
- Post-consume actions (group `lily.actions`) run on the tenant's change events, after the
  change is stored (at least once each: an action must be idempotent).

An entry point names a factory called with the plug-in's `options` from the settings as
keyword arguments; what it returns has `transform` (or `handle`), a coroutine function:

    [project.entry-points."lily.transformers"]
    owners = "my_package:OwnerFromPath"        # class OwnerFromPath: async def transform(...)

Each call has a time budget (`budget_ms`). A transformer that fails, or takes longer,
refuses only its own asset, with a reason naming it, or is skipped for that asset if it is
configured `on_failure: skip`; the rest of the batch goes on. A transformer that never
awaits cannot be stopped by its budget (asyncio cannot interrupt it): keep them quick, and
put blocking work in a thread (asyncio.to_thread).

Two are built in: `pii` (core/transforms/pii.py) and `qualified_name`
(core/transforms/names.py)."""

from __future__ import annotations

from typing import Protocol

from lily.v1 import events_pb2 as events_pb

from core.domain.model import AssetDraft, AssetType, TagAssignment

__all__ = ["Action", "AssetDraft", "AssetType", "Reject", "TagAssignment", "Transformer"]


class Reject(Exception):
    """Raised by a transformer: the asset is refused, for the reason given."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Transformer(Protocol):
    async def transform(self, tenant_id: str, draft: AssetDraft) -> AssetDraft:
        """The asset as it should be stored (`draft` itself if nothing changes; a changed
        copy with dataclasses.replace otherwise); raise Reject to refuse it."""
        ...


class Action(Protocol):
    async def handle(self, event: events_pb.ChangeEvent) -> None:
        """Acts on one change event of a tenant that enabled it; raising fails this event
        for this action only."""
        ...
