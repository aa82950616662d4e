"""PostgresNotificationStore: the NotificationStore port (policy/ports.py) on Postgres
(migration 0009): subscriptions, delivery records and destination health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.postgres import run_on
from policy.model import DeliveryRecord, HealthRecord, SubscriptionRecord
from policy.ports import DeliveryQuery

_WHAT = "notification store"
_SUBSCRIPTION = (
    "s.subscription_id, s.tenant_id, s.integration_id, s.display_name, s.filter, s.template,"
    " s.paused, s.max_attempts, s.created_by, s.created_at, s.updated_at, i.type,"
    " s.paused_at, s.resumed_at"
)
_FROM_SUBSCRIPTIONS = (
    " FROM notification_subscriptions s JOIN integrations i USING (integration_id)"
)
_DELIVERY = (
    "delivery_id, tenant_id, subscription_id, integration_id, event_type, asset_id, status,"
    " generation, attempts, created_at, updated_at, body"
)


def _filter(s: SubscriptionRecord) -> str:
    return orjson.dumps(
        {
            "event_types": s.event_types,
            "tags": s.tags,
            "asset_types": s.asset_types,
            "qualified_name_prefix": s.prefix,
            "min_severity": s.min_severity,
        }
    ).decode()


def _subscription(row: asyncpg.Record) -> SubscriptionRecord:
    f: dict[str, Any] = orjson.loads(row["filter"])
    return SubscriptionRecord(
        subscription_id=row["subscription_id"],
        tenant_id=row["tenant_id"],
        integration_id=row["integration_id"],
        display_name=row["display_name"],
        event_types=tuple(f.get("event_types", ())),
        tags=tuple(f.get("tags", ())),
        asset_types=tuple(int(t) for t in f.get("asset_types", ())),
        prefix=f.get("qualified_name_prefix", ""),
        min_severity=int(f.get("min_severity", 0)),
        template=row["template"],
        paused=row["paused"],
        max_attempts=row["max_attempts"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        destination_type=row["type"],
        paused_at=row["paused_at"],
        resumed_at=row["resumed_at"],
    )


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _body(r: DeliveryRecord) -> str:
    return orjson.dumps(
        {
            "destination_type": r.destination_type,
            "event_ids": r.event_ids,
            "event_count": r.event_count,
            "qualified_name": r.qualified_name,
            "severity": r.severity,
            "title": r.title,
            "last_attempt_at": _when(r.last_attempt_at),
            "next_attempt_at": _when(r.next_attempt_at),
            "delivered_at": _when(r.delivered_at),
            "destination_status": r.destination_status,
            "destination_message": r.destination_message,
            "external_ref": r.external_ref,
            "test": r.test,
        }
    ).decode()


def _delivery(row: asyncpg.Record, notification: bytes = b"") -> DeliveryRecord:
    b: dict[str, Any] = orjson.loads(row["body"])
    return DeliveryRecord(
        delivery_id=row["delivery_id"],
        tenant_id=row["tenant_id"],
        subscription_id=row["subscription_id"],
        integration_id=row["integration_id"],
        destination_type=b.get("destination_type", ""),
        event_type=row["event_type"],
        event_ids=tuple(b.get("event_ids", ())),
        event_count=int(b.get("event_count", 0)),
        asset_id=row["asset_id"],
        qualified_name=b.get("qualified_name", ""),
        severity=int(b.get("severity", 0)),
        title=b.get("title", ""),
        status=row["status"],
        attempts=row["attempts"],
        generation=row["generation"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_attempt_at=_at(b.get("last_attempt_at")),
        next_attempt_at=_at(b.get("next_attempt_at")),
        delivered_at=_at(b.get("delivered_at")),
        destination_status=int(b.get("destination_status", 0)),
        destination_message=b.get("destination_message", ""),
        external_ref=b.get("external_ref", ""),
        test=bool(b.get("test", False)),
        notification=notification,
    )


def _newest(records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
    """One record per delivery: its newest, with the notification an older one carried."""
    by_id: dict[str, DeliveryRecord] = {}
    for r in records:
        kept = by_id.get(r.delivery_id)
        if kept is None:
            by_id[r.delivery_id] = r
            continue
        newer, older = (r, kept) if _order(r) >= _order(kept) else (kept, r)
        if not newer.notification and older.notification:
            newer = replace(newer, notification=older.notification)
        by_id[r.delivery_id] = newer
    return list(by_id.values())


def _order(r: DeliveryRecord) -> tuple[int, datetime, int]:
    return (r.generation, r.updated_at, r.attempts)


def _health(row: asyncpg.Record) -> HealthRecord:
    return HealthRecord(
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        healthy=row["healthy"],
        consecutive_failures=row["consecutive_failures"],
        last_error=row["last_error"],
        updated_at=row["updated_at"],
        unhealthy_since=row["unhealthy_since"],
        last_success_at=row["last_success_at"],
    )


class PostgresNotificationStore:
    """See policy.ports.NotificationStore."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- subscriptions

    async def create_subscription(self, s: SubscriptionRecord) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO notification_subscriptions (subscription_id, tenant_id,"
                " integration_id, display_name, filter, template, paused, max_attempts,"
                " created_by, created_at, updated_at, paused_at, resumed_at)"
                " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13)",
                s.subscription_id,
                s.tenant_id,
                s.integration_id,
                s.display_name,
                _filter(s),
                s.template,
                s.paused,
                s.max_attempts,
                s.created_by,
                s.created_at,
                s.updated_at,
                s.paused_at,
                s.resumed_at,
            )

        await run_on(self._pool, _WHAT, work)

    async def subscription(self, tenant_id: str, subscription_id: str) -> SubscriptionRecord | None:
        async def work(conn: asyncpg.Connection) -> SubscriptionRecord | None:
            row = await conn.fetchrow(
                f"SELECT {_SUBSCRIPTION}{_FROM_SUBSCRIPTIONS}"
                " WHERE s.tenant_id = $1 AND s.subscription_id = $2",
                tenant_id,
                subscription_id,
            )
            return _subscription(row) if row else None

        return await run_on(self._pool, _WHAT, work)

    async def subscriptions(
        self, tenant_id: str, integration_id: str, after: str, limit: int
    ) -> list[SubscriptionRecord]:
        async def work(conn: asyncpg.Connection) -> list[SubscriptionRecord]:
            rows = await conn.fetch(
                f"SELECT {_SUBSCRIPTION}{_FROM_SUBSCRIPTIONS}"
                " WHERE ($1 = '' OR s.tenant_id = $1) AND ($2 = '' OR s.integration_id = $2)"
                " AND s.subscription_id > $3 ORDER BY s.subscription_id LIMIT $4",
                tenant_id,
                integration_id,
                after,
                limit,
            )
            return [_subscription(r) for r in rows]

        return await run_on(self._pool, _WHAT, work)

    async def update_subscription(self, s: SubscriptionRecord, read_at: datetime) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "UPDATE notification_subscriptions SET integration_id = $3, display_name = $4,"
                " filter = $5::jsonb, template = $6, paused = $7, max_attempts = $8,"
                " updated_at = $9, paused_at = $11, resumed_at = $12"
                " WHERE tenant_id = $1 AND subscription_id = $2 AND updated_at = $10",
                s.tenant_id,
                s.subscription_id,
                s.integration_id,
                s.display_name,
                _filter(s),
                s.template,
                s.paused,
                s.max_attempts,
                s.updated_at,
                read_at,
                s.paused_at,
                s.resumed_at,
            )
            return bool(done.endswith(" 1"))

        return await run_on(self._pool, _WHAT, work)

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "DELETE FROM notification_subscriptions"
                " WHERE tenant_id = $1 AND subscription_id = $2",
                tenant_id,
                subscription_id,
            )
            return bool(done.endswith(" 1"))

        return await run_on(self._pool, _WHAT, work)

    # -- deliveries

    async def record_deliveries(self, records: Sequence[DeliveryRecord]) -> int:
        records = _newest(records)  # (one statement cannot touch a row twice)

        async def work(conn: asyncpg.Connection) -> int:
            rows = await conn.fetch(
                f"INSERT INTO notification_deliveries ({_DELIVERY}, notification)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::text[], $6::text[], $7::text[], $8::int[], $9::int[],"
                " $10::timestamptz[], $11::timestamptz[], $12::jsonb[], $13::bytea[])"
                " ON CONFLICT (delivery_id) DO UPDATE SET"
                " status = EXCLUDED.status, generation = EXCLUDED.generation,"
                " attempts = CASE WHEN EXCLUDED.generation = notification_deliveries.generation"
                " THEN greatest(EXCLUDED.attempts, notification_deliveries.attempts)"
                " ELSE EXCLUDED.attempts END,"
                " updated_at = EXCLUDED.updated_at, body = EXCLUDED.body,"
                " notification = CASE WHEN length(EXCLUDED.notification) > 0"
                " THEN EXCLUDED.notification ELSE notification_deliveries.notification END"
                " WHERE notification_deliveries.tenant_id = EXCLUDED.tenant_id"
                " AND (notification_deliveries.generation, notification_deliveries.updated_at)"
                " <= (EXCLUDED.generation, EXCLUDED.updated_at)"
                " RETURNING delivery_id",
                [r.delivery_id for r in records],
                [r.tenant_id for r in records],
                [r.subscription_id for r in records],
                [r.integration_id for r in records],
                [r.event_type for r in records],
                [r.asset_id for r in records],
                [r.status for r in records],
                [r.generation for r in records],
                [r.attempts for r in records],
                [r.created_at for r in records],
                [r.updated_at for r in records],
                [_body(r) for r in records],
                [r.notification for r in records],
            )
            return len(rows)

        return await run_on(self._pool, _WHAT, work)

    async def delivery(self, tenant_id: str, delivery_id: str) -> DeliveryRecord | None:
        async def work(conn: asyncpg.Connection) -> DeliveryRecord | None:
            row = await conn.fetchrow(
                f"SELECT {_DELIVERY}, notification FROM notification_deliveries"
                " WHERE tenant_id = $1 AND delivery_id = $2",
                tenant_id,
                delivery_id,
            )
            return _delivery(row, bytes(row["notification"])) if row else None

        return await run_on(self._pool, _WHAT, work)

    async def deliveries(
        self, tenant_id: str, query: DeliveryQuery, limit: int
    ) -> list[DeliveryRecord]:
        q = query
        after_at, after_id = q.after if q.after is not None else (None, "")

        async def work(conn: asyncpg.Connection) -> list[DeliveryRecord]:
            rows = await conn.fetch(
                f"SELECT {_DELIVERY} FROM notification_deliveries WHERE tenant_id = $1"
                " AND ($2 = '' OR subscription_id = $2) AND ($3 = '' OR integration_id = $3)"
                " AND ($4 = '' OR status = $4) AND ($5 = '' OR asset_id = $5)"
                " AND ($6 = '' OR event_type = $6)"
                " AND ($7::timestamptz IS NULL OR created_at >= $7)"
                " AND ($8::timestamptz IS NULL OR created_at < $8)"
                " AND ($9::timestamptz IS NULL OR (created_at, delivery_id) < ($9, $10))"
                " ORDER BY created_at DESC, delivery_id DESC LIMIT $11",
                tenant_id,
                q.subscription_id,
                q.integration_id,
                q.status,
                q.asset_id,
                q.event_type,
                q.created_after,
                q.created_before,
                after_at,
                after_id,
                limit,
            )
            return [_delivery(r) for r in rows]

        return await run_on(self._pool, _WHAT, work)

    async def dead_letters(
        self,
        tenant_id: str,
        subscription_id: str,
        created_after: datetime | None,
        created_before: datetime | None,
        limit: int,
    ) -> list[DeliveryRecord]:
        async def work(conn: asyncpg.Connection) -> list[DeliveryRecord]:
            rows = await conn.fetch(
                f"SELECT {_DELIVERY}, notification FROM notification_deliveries"
                " WHERE tenant_id = $1 AND status = 'dead'"
                " AND ($2 = '' OR subscription_id = $2)"
                " AND ($3::timestamptz IS NULL OR created_at >= $3)"
                " AND ($4::timestamptz IS NULL OR created_at < $4)"
                " ORDER BY created_at, delivery_id LIMIT $5",
                tenant_id,
                subscription_id,
                created_after,
                created_before,
                limit,
            )
            return [_delivery(r, bytes(r["notification"])) for r in rows]

        return await run_on(self._pool, _WHAT, work)

    async def requeue(self, r: DeliveryRecord) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            done = await conn.execute(
                "UPDATE notification_deliveries SET status = $3, generation = $4,"
                " attempts = $5, updated_at = $6, body = $7::jsonb"
                " WHERE tenant_id = $1 AND delivery_id = $2 AND generation = $4 - 1",
                r.tenant_id,
                r.delivery_id,
                r.status,
                r.generation,
                r.attempts,
                r.updated_at,
                _body(r),
            )
            return bool(done.endswith(" 1"))

        return await run_on(self._pool, _WHAT, work)

    # -- destinations

    async def record_health(self, records: Sequence[HealthRecord]) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO notification_destinations (integration_id, tenant_id, healthy,"
                " consecutive_failures, unhealthy_since, last_error, last_success_at,"
                " updated_at)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::int[],"
                " $5::timestamptz[], $6::text[], $7::timestamptz[], $8::timestamptz[])"
                " AS u (integration_id, tenant_id, healthy, consecutive_failures,"
                " unhealthy_since, last_error, last_success_at, updated_at)"
                # (a destination deleted meanwhile, or named with another tenant, is not kept)
                " WHERE EXISTS (SELECT 1 FROM integrations i"
                " WHERE i.integration_id = u.integration_id AND i.tenant_id = u.tenant_id)"
                " ON CONFLICT (integration_id) DO UPDATE SET healthy = EXCLUDED.healthy,"
                " consecutive_failures = EXCLUDED.consecutive_failures,"
                " unhealthy_since = EXCLUDED.unhealthy_since,"
                " last_error = EXCLUDED.last_error,"
                " last_success_at = coalesce(EXCLUDED.last_success_at,"
                " notification_destinations.last_success_at),"
                " updated_at = EXCLUDED.updated_at"
                " WHERE notification_destinations.updated_at <= EXCLUDED.updated_at",
                [h.integration_id for h in records],
                [h.tenant_id for h in records],
                [h.healthy for h in records],
                [h.consecutive_failures for h in records],
                [h.unhealthy_since for h in records],
                [h.last_error for h in records],
                [h.last_success_at for h in records],
                [h.updated_at for h in records],
            )

        await run_on(self._pool, _WHAT, work)

    async def health(self, tenant_id: str) -> list[HealthRecord]:
        async def work(conn: asyncpg.Connection) -> list[HealthRecord]:
            rows = await conn.fetch(
                "SELECT * FROM notification_destinations WHERE tenant_id = $1"
                " ORDER BY integration_id",
                tenant_id,
            )
            return [_health(r) for r in rows]

        return await run_on(self._pool, _WHAT, work)
