"""QualityService: a tenant's data-quality rules and its assets' usage.

Usage is taken in as change events (lily.<tenant>.usage.recorded, one per asset and window,
durably on JetStream before RecordUsage returns); the data-quality worker stores it and
evaluates the rules (core/workers/quality.py). An event's id is derived from what it says, so
a collector that sends the same window twice is stored once by JetStream's de-duplication,
and replaces the stored window when it sends different counts."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from lily.v1 import events_pb2 as events_pb

from core.domain.errors import FailedPrecondition, NotFound
from core.domain.model import WriteContext
from core.domain.quality import Rule, RuleType, UsageWindow
from core.ports import ChangeBus, OutboxRecord, QualityStore
from core.quality.engine import RULES_TTL, Counts, QualityEngine
from core.quality.mapping import usage_to_pb
from core.wire.common import ts_pb

MAX_RULES = 1000  # per tenant
USAGE_DAYS = 30  # ListUsage's default look back


class RuleNotFound(NotFound):
    reason = "RULE_NOT_FOUND"

    def __init__(self, rule_id: str) -> None:
        super().__init__(f"rule {rule_id!r} not found", metadata={"rule_id": rule_id})


def _usage_event(ctx: WriteContext, w: UsageWindow) -> OutboxRecord:
    digest = hashlib.sha256(
        f"{ctx.tenant_id}\0{w.asset_id}\0{w.start.isoformat()}\0{w.end.isoformat()}\0"
        f"{w.query_count}\0{w.distinct_users}\0{w.run_id}".encode()
    ).hexdigest()[:32]
    event = events_pb.ChangeEvent(
        event_id=digest,
        tenant_id=ctx.tenant_id,
        entity=events_pb.ENTITY_KIND_USAGE,
        change=events_pb.CHANGE_KIND_RECORDED,
        asset_id=w.asset_id,
        actor=ctx.actor,
        occurred_at=ts_pb(ctx.now),
        request_id=ctx.request_id,
        usage=usage_to_pb(w),
    )
    subject = f"lily.{ctx.tenant_id}.usage.recorded"
    return OutboxRecord(digest, digest, subject, event.SerializeToString(), ctx.trace_headers)


class QualityService:
    def __init__(self, store: QualityStore, engine: QualityEngine) -> None:
        self._store = store
        self._engine = engine

    # -- usage

    async def record_usage(
        self, ctx: WriteContext, bus: ChangeBus, windows: Sequence[UsageWindow]
    ) -> int:
        await bus.publish([_usage_event(ctx, w) for w in windows])
        return len(windows)

    async def usage(
        self, tenant_id: str, asset_id: str, since: datetime | None, now: datetime
    ) -> list[UsageWindow]:
        return await self._store.usage(
            tenant_id, asset_id, since or now - timedelta(days=USAGE_DAYS)
        )

    # -- rules

    async def create_rule(self, ctx: WriteContext, kind: RuleType, values: dict[str, Any]) -> Rule:
        if len(await self._store.list_rules(ctx.tenant_id)) >= MAX_RULES:
            raise FailedPrecondition(f"a tenant has at most {MAX_RULES} rules")
        rule = Rule(
            tenant_id=ctx.tenant_id,
            rule_id=uuid.uuid4().hex,
            type=kind,
            created_at=ctx.now,
            updated_at=ctx.now,
            **values,
        )
        await self._store.create_rule(rule)
        self._engine.forget(ctx.tenant_id)
        return rule

    async def get_rule(self, tenant_id: str, rule_id: str) -> Rule:
        rule = await self._store.get_rule(tenant_id, rule_id)
        if rule is None:
            raise RuleNotFound(rule_id)
        return rule

    async def list_rules(self, tenant_id: str, kind: RuleType | None) -> list[Rule]:
        rules = await self._store.list_rules(tenant_id)
        return [r for r in rules if kind is None or r.type == kind]

    async def update_rule(self, ctx: WriteContext, rule_id: str, values: dict[str, Any]) -> Rule:
        rule = await self.get_rule(ctx.tenant_id, rule_id)
        changed = replace(rule, updated_at=ctx.now, **values)
        if changed.asset_id and changed.qualified_name_prefix:
            raise FailedPrecondition(
                "a rule covers one asset_id or a qualified_name_prefix, not both: clear one"
            )
        if not await self._store.update_rule(changed):
            raise RuleNotFound(rule_id)
        self._engine.forget(ctx.tenant_id)
        return changed

    async def delete_rule(self, ctx: WriteContext, rule_id: str) -> int:
        """Turns the rule off (and waits until every instance has seen it off), resolves its
        open issues, then removes it; how many it resolved."""
        rule = replace(await self.get_rule(ctx.tenant_id, rule_id), disabled=True)
        await self._store.update_rule(rule)
        self._engine.forget(ctx.tenant_id)
        await asyncio.sleep(RULES_TTL)
        resolved = await self._engine.retire(rule)
        await self._store.delete_rule(ctx.tenant_id, rule_id)
        self._engine.forget(ctx.tenant_id)
        return resolved

    async def evaluate(self, tenant_id: str, rule_id: str) -> Counts:
        rule = await self.get_rule(tenant_id, rule_id)
        if rule.disabled:
            raise FailedPrecondition(f"rule {rule_id!r} is disabled")
        return await self._engine.sweep(rule)
