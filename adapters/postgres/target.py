"""A PostgreSQL target as the enforcer reaches it (asyncpg, every call within a timeout): what
its catalogs say of a table's SELECT grants (pg_class.relacl and pg_attribute.attacl: the
grants themselves, not what a role may reach through membership), statements run in one
transaction, and what a role can really read (has_table_privilege, has_column_privilege).

An engine that cannot be reached is TargetDown (the delivery waits, queued); a statement the
engine refuses is Refusal (it can never succeed as it stands: dead-lettered with the reason)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence

import asyncpg

from adapters.postgres.config import PostgresTargetSettings
from adapters.postgres.mapping import PUBLIC, Grants, Object, TableFacts, ident
from adapters.spec import TryLater

_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,
)

_GRANTS = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS role,
       NULL::text AS column
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.oid = $1 AND a.privilege_type = 'SELECT'
UNION ALL
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       att.attname::text
  FROM pg_attribute att, aclexplode(att.attacl) a
 WHERE att.attrelid = $1 AND att.attnum > 0 AND NOT att.attisdropped
   AND a.privilege_type = 'SELECT'
"""


class TargetDown(TryLater):
    """The engine cannot be reached."""


class Refusal(Exception):
    """The engine refused a statement: it cannot succeed until something is changed."""


class PostgresTarget:
    def __init__(self, settings: PostgresTargetSettings, password: str, timeout: float) -> None:
        self.settings = settings
        self._password = password
        self._timeout = timeout
        self._conn: asyncpg.Connection | None = None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One connection, kept between uses; TargetDown if it cannot be had or breaks."""
        try:
            if self._conn is None or self._conn.is_closed():
                s = self.settings
                self._conn = await asyncpg.connect(
                    host=s.host,
                    port=s.port,
                    user=s.user,
                    database=s.database,
                    password=self._password or None,
                    ssl=s.sslmode,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                )
            yield self._conn
        except _DOWN as exc:
            await self.close()
            raise TargetDown(f"the target cannot be reached: {type(exc).__name__}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise Refusal(f"{exc.sqlstate}: {exc}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._timeout)


async def facts(conn: asyncpg.Connection, obj: Object) -> TableFacts | None:
    """The table's owner, columns and SELECT grants; None if there is no such table."""
    row = await conn.fetchrow(
        "SELECT c.oid, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
        " WHERE c.oid = to_regclass($1)",
        f"{ident(obj.schema)}.{ident(obj.table)}",
    )
    if row is None:
        return None
    columns = await conn.fetch(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0"
        " AND NOT attisdropped ORDER BY attnum",
        row["oid"],
    )
    table: set[str] = set()
    by_role: dict[str, set[str]] = defaultdict(set)
    for grant in await conn.fetch(_GRANTS, row["oid"]):
        if grant["column"] is None:
            table.add(grant["role"])
        else:
            by_role[grant["role"]].add(grant["column"])
    grants = {
        role: Grants(role in table, frozenset(by_role.get(role, ())))
        for role in table | set(by_role)
    }
    return TableFacts(row["owner"], tuple(c["attname"] for c in columns), grants)


async def run(conn: asyncpg.Connection, statements: Sequence[str]) -> None:
    if not statements:
        return
    async with conn.transaction():
        for statement in statements:
            await conn.execute(statement)


async def still_read(
    conn: asyncpg.Connection, obj: Object, roles: Iterable[str], columns: Iterable[str]
) -> list[str]:
    """Of the roles, those that can still read the table (if `columns` is empty) or one of the
    columns, through whatever grant: "role: column", "role: table"."""
    table = f"{ident(obj.schema)}.{ident(obj.table)}"
    wanted = sorted(columns)
    found: list[str] = []
    for role in sorted(roles):
        if role == PUBLIC:  # no role of its own to ask for
            continue
        if not wanted:
            if await conn.fetchval(
                "SELECT has_table_privilege($1, $2, 'SELECT') OR EXISTS (SELECT 1 FROM"
                " pg_attribute WHERE attrelid = to_regclass($2) AND attnum > 0 AND NOT"
                " attisdropped AND has_column_privilege($1, attrelid, attnum, 'SELECT'))",
                role,
                table,
            ):
                found.append(f"{role}: table")
            continue
        readable = await conn.fetch(
            "SELECT c FROM unnest($3::text[]) AS c WHERE has_column_privilege($1, $2, c, 'SELECT')",
            role,
            table,
            wanted,
        )
        found.extend(f"{role}: {r['c']}" for r in readable)
    return found
