"""Postgres connection pool and versioned migrations (core/migrations/postgres/NNNN_*.sql)."""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import orjson

from core.domain.errors import Unavailable

log = logging.getLogger(__name__)

# What a store turns into core.domain.errors.Unavailable: Postgres unreachable or restarting.
BACKEND_ERRORS = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    # a pooled connection left mid-operation when Postgres went down ("cannot switch to
    # state ...; another operation is in progress"): seen in scripts/soak.py's restart
    asyncpg.exceptions.InternalClientError,
    TimeoutError,
)

_MIGRATIONS = "core.migrations.postgres"

T = TypeVar("T")


async def run_on(pool: asyncpg.Pool, what: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """`work` on a connection of the pool; Unavailable naming `what` if Postgres is away."""
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    except BACKEND_ERRORS as exc:
        raise Unavailable(f"{what} unavailable") from exc


def _jsonb_encode(value: object) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> object:
    return orjson.loads(data[1:])  # jsonb's binary format: a version byte, then the JSON text


@functools.cache
def _session_sql() -> str:
    return resources.files("core.migrations").joinpath("postgres_session.sql").read_text()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, so jsonb columns also work with binary COPY.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.execute(_session_sql())


# A migration whose first line is this holds the control plane (policy, tenants): it runs in
# the public schema only, never in a DEDICATED tenant's schema.
CONTROL_MARK = "-- control plane"


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    timeout: float = 10.0,
    schema: str = "",
) -> asyncpg.Pool:
    """A pool whose connections encode and decode jsonb as Python objects. Every query made
    through it is bounded by command_timeout. With `schema`, its connections see that schema's
    tables only (a DEDICATED tenant's; see create_schema)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        command_timeout=60,
        init=_init_connection,
        server_settings={"search_path": schema} if schema else None,
    )


async def create_schema(pool: asyncpg.Pool, schema: str) -> None:
    """Creates `schema` (a name of a-z, 0-9 and _) if it does not exist."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ValueError(f"not a schema name Lily makes: {schema!r}")
    await pool.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files(_MIGRATIONS).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool, *, data_only: bool = False) -> list[str]:
    """Applies pending migrations in order, each in its own transaction; safe to run from
    several processes at once (an advisory lock serializes them). Returns what it applied.
    With `data_only` (a DEDICATED tenant's schema), control-plane migrations are left out."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(7301001)")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS lily_migrations ("
                " version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM lily_migrations")}
            for version, name, sql in _migrations():
                if version in done or (data_only and sql.startswith(CONTROL_MARK)):
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO lily_migrations (version, name) VALUES ($1, $2)", version, name
                    )
                log.info("applied migration %s", name)
                applied.append(name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7301001)")
    return applied


async def shared_secret(pool: asyncpg.Pool, key: str) -> bytes:
    """A random secret created once per database and shared by every server instance."""
    value = secrets.token_hex(32)
    row = await pool.fetchrow(
        "INSERT INTO lily_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE"
        " SET key = EXCLUDED.key RETURNING value",
        key,
        value,
    )
    assert row is not None  # an upsert with RETURNING always returns the row
    return bytes.fromhex(row["value"])
