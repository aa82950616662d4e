"""PostgresIdentityStore: the IdentityStore port (policy/ports.py) on Postgres (migration
0010): each tenant's people and their sessions. Its writes announce themselves on the policy
change feed (policy/stores/postgres.py) in their own transactions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from core.postgres import run_on
from policy.model import PeopleChange, PersonRecord, SessionRecord
from policy.stores.postgres import CHANNEL

_NOTIFY = "SELECT pg_notify($1, unnest($2::text[]))"


def _person(row: asyncpg.Record) -> PersonRecord:
    return PersonRecord(
        row["tenant_id"],
        row["user_id"],
        row["login"],
        row["email"],
        row["status"],
        tuple(row["groups"]),
        row["source"],
        row["observed_at"],
    )


def _session(row: asyncpg.Record) -> SessionRecord:
    return SessionRecord(
        row["session_id"],
        row["tenant_id"],
        row["subject"],
        row["user_id"],
        row["issuer"],
        row["refresh_digest"],
        bytes(row["upstream"]),
        row["created_at"],
        row["refreshed_at"],
        row["expires_at"],
        row["tokens_until"],
        row["revoked_at"],
        row["revoked_why"],
    )


def person_key(tenant_id: str, user_id: str) -> str:
    """The change feed's key of a person (tenant ids have no '/')."""
    return f"{tenant_id}/{user_id}"


async def _revoke_sessions(
    conn: asyncpg.Connection, where: str, args: Sequence[Any], why: str, until: datetime
) -> list[str]:
    """Ends the live sessions `where` picks (its parameters from $2); their ids go on the
    revoked list until `until`. Returns the feed's messages."""
    rows = await conn.fetch(
        "UPDATE sessions SET revoked_at = now(), revoked_why = $1"
        f" WHERE revoked_at IS NULL AND {where} RETURNING session_id, tenant_id",
        why,
        *args,
    )
    if rows:
        await conn.executemany(
            "INSERT INTO revoked_tokens (jti, tenant_id, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (jti) DO UPDATE SET expires_at ="
            " greatest(revoked_tokens.expires_at, EXCLUDED.expires_at)",
            [(r["session_id"], r["tenant_id"], until) for r in rows],
        )
    return [f"jti:{r['session_id']}" for r in rows]


class PostgresIdentityStore:
    """See policy.ports.IdentityStore."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, work: Callable[[Any], Any]) -> Any:
        return await run_on(self._pool, "identity store", work)

    # -- people

    async def people(self) -> list[PersonRecord]:
        return [_person(r) for r in await self._pool.fetch("SELECT * FROM directory_people")]

    async def person(self, tenant_id: str, user_id: str) -> PersonRecord | None:
        row = await self._run(
            lambda conn: conn.fetchrow(
                "SELECT * FROM directory_people WHERE tenant_id = $1 AND user_id = $2",
                tenant_id,
                user_id,
            )
        )
        return _person(row) if row else None

    async def list_people(
        self, tenant_id: str, status: str, after: str, limit: int
    ) -> list[PersonRecord]:
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT * FROM directory_people WHERE tenant_id = $1 AND user_id > $2"
                " AND ($3 = '' OR status = $3) ORDER BY user_id LIMIT $4",
                tenant_id,
                after,
                status,
                limit,
            )
        )
        return [_person(r) for r in rows]

    async def change_people(
        self,
        tenant_id: str,
        user_ids: Sequence[str] | None,
        change: Callable[[dict[str, PersonRecord]], PeopleChange],
        revoke_until: datetime,
    ) -> tuple[PeopleChange, int, int]:
        async def work(conn: asyncpg.Connection) -> tuple[PeopleChange, int, int]:
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT * FROM directory_people WHERE tenant_id = $1"
                    " AND ($2::text[] IS NULL OR user_id = ANY($2::text[]))"
                    " ORDER BY user_id FOR UPDATE",
                    tenant_id,
                    None if user_ids is None else list(user_ids),
                )
                before = {r["user_id"]: _person(r) for r in rows}
                done = change(dict(before))
                if not done.people:
                    return done, 0, 0
                await conn.executemany(
                    "INSERT INTO directory_people (tenant_id, user_id, login, email, status,"
                    " groups, source, observed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (tenant_id, user_id) DO UPDATE SET login = EXCLUDED.login,"
                    " email = EXCLUDED.email, status = EXCLUDED.status,"
                    " groups = EXCLUDED.groups, source = EXCLUDED.source,"
                    " observed_at = EXCLUDED.observed_at, updated_at = now()",
                    [
                        (
                            tenant_id,
                            p.user_id,
                            p.login,
                            p.email,
                            p.status,
                            list(p.groups),
                            p.source,
                            p.observed_at,
                        )
                        for p in done.people
                    ],
                )
                messages = [f"person:{person_key(tenant_id, p.user_id)}" for p in done.people]
                blocked = [
                    p
                    for p in done.people
                    if p.blocked and (p.user_id not in before or not before[p.user_id].blocked)
                ]
                sessions = credentials = 0
                if blocked:
                    ended = await _revoke_sessions(
                        conn,
                        "tenant_id = $2 AND user_id = ANY($3::text[])",
                        (tenant_id, [p.user_id for p in blocked]),
                        "the identity provider suspended or deactivated the person",
                        revoke_until,
                    )
                    revoked = await conn.fetch(
                        "UPDATE credentials SET revoked_at = now() WHERE tenant_id = $1"
                        " AND revoked_at IS NULL AND lower(subject) = ANY($2::text[])"
                        " RETURNING credential_id",
                        tenant_id,
                        [n for p in blocked for n in p.names],
                    )
                    sessions, credentials = len(ended), len(revoked)
                    messages += ended + [f"cred:{r['credential_id']}" for r in revoked]
                await conn.execute(_NOTIFY, CHANNEL, messages)
            return done, sessions, credentials

        result: tuple[PeopleChange, int, int] = await self._run(work)
        return result

    # -- sessions

    async def add_session(self, session: SessionRecord) -> None:
        s = session
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO sessions (session_id, tenant_id, subject, user_id, issuer,"
                " refresh_digest, upstream, created_at, refreshed_at, expires_at, tokens_until)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                s.session_id,
                s.tenant_id,
                s.subject,
                s.user_id,
                s.issuer,
                s.refresh_digest,
                s.upstream,
                s.created_at,
                s.refreshed_at,
                s.expires_at,
                s.tokens_until,
            )
        )

    async def session(self, session_id: str) -> SessionRecord | None:
        row = await self._run(
            lambda conn: conn.fetchrow("SELECT * FROM sessions WHERE session_id = $1", session_id)
        )
        return _session(row) if row else None

    async def refresh_session(self, session_id: str, spent_digest: str, new: SessionRecord) -> bool:
        status = await self._run(
            lambda conn: conn.execute(
                "UPDATE sessions SET refresh_digest = $3, upstream = $4, subject = $5,"
                " refreshed_at = $6, tokens_until = $7"
                " WHERE session_id = $1 AND refresh_digest = $2 AND revoked_at IS NULL",
                session_id,
                spent_digest,
                new.refresh_digest,
                new.upstream,
                new.subject,
                new.refreshed_at,
                new.tokens_until,
            )
        )
        return str(status).split()[-1] != "0"

    async def revoke_session(self, session_id: str, why: str, until: datetime) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                ended = await _revoke_sessions(conn, "session_id = $2", (session_id,), why, until)
                await conn.execute(_NOTIFY, CHANNEL, ended)
            return bool(ended)

        done: bool = await self._run(work)
        return done
