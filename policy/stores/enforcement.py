"""PostgresEnforcementStore: the EnforcementStore port (policy/ports.py) on Postgres (migration
0008): each target's last receipt per asset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from core.postgres import run_on
from policy.model import ReceiptRecord

_COLUMNS = (
    "integration_id, asset_id, tenant_id, qualified_name, outcome, asset_version, applied_at, body"
)


def _body(r: ReceiptRecord) -> str:
    return orjson.dumps(
        {
            "target_object": r.target_object,
            "desired": r.desired,
            "applied": r.applied,
            "restricted_tags": r.restricted_tags,
            "denied_roles": r.denied_roles,
            "statements": r.statements,
            "taken": r.taken,
            "detail": r.detail,
        }
    ).decode()


def _receipt(row: asyncpg.Record) -> ReceiptRecord:
    body: dict[str, Any] = orjson.loads(row["body"])
    return ReceiptRecord(
        integration_id=row["integration_id"],
        tenant_id=row["tenant_id"],
        asset_id=row["asset_id"],
        qualified_name=row["qualified_name"],
        target_object=body.get("target_object", ""),
        desired=body.get("desired", ""),
        applied=body.get("applied", ""),
        outcome=row["outcome"],
        asset_version=row["asset_version"],
        restricted_tags=tuple(body.get("restricted_tags", ())),
        denied_roles=tuple(body.get("denied_roles", ())),
        applied_at=row["applied_at"],
        statements=tuple(body.get("statements", ())),
        taken=tuple(body.get("taken", ())),
        detail=body.get("detail", ""),
    )


class PostgresEnforcementStore:
    """See policy.ports.EnforcementStore."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, receipts: Sequence[ReceiptRecord]) -> list[ReceiptRecord]:
        newest: dict[tuple[str, str], ReceiptRecord] = {}  # (one statement writes a row once)
        for r in receipts:
            seen = newest.get((r.integration_id, r.asset_id))
            if seen is None or seen.applied_at <= r.applied_at:
                newest[(r.integration_id, r.asset_id)] = r
        receipts = list(newest.values())

        async def work(conn: asyncpg.Connection) -> list[ReceiptRecord]:
            rows = await conn.fetch(
                f"INSERT INTO enforcement_receipts ({_COLUMNS})"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::text[], $6::bigint[], $7::timestamptz[], $8::jsonb[])"
                " ON CONFLICT (integration_id, asset_id) DO UPDATE SET"
                " qualified_name = EXCLUDED.qualified_name, outcome = EXCLUDED.outcome,"
                " asset_version = EXCLUDED.asset_version, applied_at = EXCLUDED.applied_at,"
                " body = EXCLUDED.body"
                " WHERE enforcement_receipts.applied_at <= EXCLUDED.applied_at"
                f" RETURNING {_COLUMNS}",
                [r.integration_id for r in receipts],
                [r.asset_id for r in receipts],
                [r.tenant_id for r in receipts],
                [r.qualified_name for r in receipts],
                [r.outcome for r in receipts],
                [r.asset_version for r in receipts],
                [r.applied_at for r in receipts],
                [_body(r) for r in receipts],
            )
            return [_receipt(r) for r in rows]

        return await run_on(self._pool, "enforcement store", work)

    async def receipt(self, integration_id: str, asset_id: str) -> ReceiptRecord | None:
        async def work(conn: asyncpg.Connection) -> ReceiptRecord | None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM enforcement_receipts"
                " WHERE integration_id = $1 AND asset_id = $2",
                integration_id,
                asset_id,
            )
            return _receipt(row) if row else None

        return await run_on(self._pool, "enforcement store", work)

    async def receipts(
        self, integration_id: str, outcome: str, prefix: str, after: str, limit: int
    ) -> list[ReceiptRecord]:
        async def work(conn: asyncpg.Connection) -> list[ReceiptRecord]:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM enforcement_receipts WHERE integration_id = $1"
                " AND ($2 = '' OR outcome = $2) AND starts_with(qualified_name, $3)"
                " AND qualified_name > $4 ORDER BY qualified_name LIMIT $5",
                integration_id,
                outcome,
                prefix,
                after,
                limit,
            )
            return [_receipt(r) for r in rows]

        return await run_on(self._pool, "enforcement store", work)
