"""PostgresIntegrationStore: the IntegrationStore port (policy/ports.py) on Postgres
(migration 0007), beside the credentials it creates and revokes in the same transactions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from policy.model import CredentialRecord, IntegrationRecord
from policy.rules import RoleLink
from policy.stores.postgres import (
    CHANNEL,
    INSERT_RULES,
    columns,
    insert_credential,
    link_row,
    run_on,
)

T = TypeVar("T")

_COLUMNS = (
    "integration_id, tenant_id, type, display_name, settings, sealed, secret_names, enabled,"
    " credential_id, created_by, created_at, updated_at, secret_rotated_at,"
    " previous_secret_until"
)


def _integration(row: asyncpg.Record) -> IntegrationRecord:
    return IntegrationRecord(
        row["integration_id"],
        row["tenant_id"],
        row["type"],
        row["display_name"],
        dict(row["settings"]),
        bytes(row["sealed"]),
        tuple(row["secret_names"]),
        row["enabled"],
        row["credential_id"],
        row["created_by"],
        row["created_at"],
        row["updated_at"],
        row["secret_rotated_at"],
        row["previous_secret_until"],
    )


def _values(i: IntegrationRecord) -> tuple[Any, ...]:
    return (
        i.integration_id,
        i.tenant_id,
        i.type,
        i.display_name,
        i.settings,
        i.sealed,
        list(i.secret_names),
        i.enabled,
        i.credential_id,
        i.created_by,
        i.created_at,
        i.updated_at,
        i.secret_rotated_at,
        i.previous_secret_until,
    )


class PostgresIntegrationStore:
    """See policy.ports.IntegrationStore."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        return await run_on(self._pool, "integration store", work)

    async def create_integration(
        self,
        integration: IntegrationRecord,
        credential: CredentialRecord,
        links: Sequence[RoleLink],
    ) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await insert_credential(conn, credential)
                if links:
                    await conn.execute(INSERT_RULES, *columns([link_row(g) for g in links]))
                await conn.execute(
                    f"INSERT INTO integrations ({_COLUMNS}) VALUES"
                    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    *_values(integration),
                )
                if links:
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CHANNEL, f"rules:{credential.tenant_id}"
                    )

        await self._run(work)

    async def integration(self, integration_id: str) -> IntegrationRecord | None:
        async def work(conn: asyncpg.Connection) -> IntegrationRecord | None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM integrations WHERE integration_id = $1", integration_id
            )
            return _integration(row) if row else None

        return await self._run(work)

    async def integrations(self, tenant_id: str, type: str) -> list[IntegrationRecord]:
        async def work(conn: asyncpg.Connection) -> list[IntegrationRecord]:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM integrations WHERE tenant_id = $1"
                " AND ($2 = '' OR type = $2) ORDER BY created_at, integration_id",
                tenant_id,
                type,
            )
            return [_integration(r) for r in rows]

        return await self._run(work)

    async def platform_integrations(
        self, type: str, after: str, limit: int
    ) -> list[IntegrationRecord]:
        async def work(conn: asyncpg.Connection) -> list[IntegrationRecord]:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM integrations WHERE integration_id > $1"
                " AND ($2 = '' OR type = $2) ORDER BY integration_id LIMIT $3",
                after,
                type,
                limit,
            )
            return [_integration(r) for r in rows]

        return await self._run(work)

    async def update_integration(self, new: IntegrationRecord, read_at: datetime) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(
                "UPDATE integrations SET display_name = $2, settings = $3, sealed = $4,"
                " secret_names = $5, enabled = $6, updated_at = $7, secret_rotated_at = $8,"
                " previous_secret_until = $9 WHERE integration_id = $1 AND updated_at = $10",
                new.integration_id,
                new.display_name,
                new.settings,
                new.sealed,
                list(new.secret_names),
                new.enabled,
                new.updated_at,
                new.secret_rotated_at,
                new.previous_secret_until,
                read_at,
            )
            return bool(status.split()[-1] != "0")

        return await self._run(work)

    async def delete_integration(self, integration_id: str, at: datetime) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                credential_id = await conn.fetchval(
                    "DELETE FROM integrations WHERE integration_id = $1 RETURNING credential_id",
                    integration_id,
                )
                if credential_id is None:
                    return False
                await conn.execute(
                    "UPDATE credentials SET revoked_at = $2"
                    " WHERE credential_id = $1 AND revoked_at IS NULL",
                    credential_id,
                    at,
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"cred:{credential_id}")
            return True

        return await self._run(work)
