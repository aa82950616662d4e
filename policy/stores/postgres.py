"""PostgresPolicyStore: the PolicyStore port (policy/ports.py) on Postgres: tenants, Casbin
rules, credentials, signing keys, revoked tokens and denials (migration 0006), and the change
feed every server instance listens to.

Every write that changes what another instance must know (rules, a credential, a revoked
token, a tenant, the signing keys) sends `NOTIFY lily_policy, '<kind>:<key>'` in its own
transaction, so the notification arrives only if the change committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from core.postgres import BACKEND_ERRORS, run_on
from policy.model import CredentialRecord, DenialRecord, TenantRecord
from policy.rules import RoleLink, Rule

log = logging.getLogger(__name__)

CHANNEL = "lily_policy"
T = TypeVar("T")


def _rule_row(r: Rule) -> tuple[str, str, str, str, str, str]:
    return ("p", r.subject, r.domain, r.object, r.action, r.effect)


def link_row(g: RoleLink) -> tuple[str, str, str, str, str, str]:
    return ("g", g.subject, g.role, g.domain, "", "")


# The signing keys still verifying, oldest first (the newest signs).
_LIVE_KEYS_FROM = (
    " FROM signing_keys WHERE retired_at IS NULL OR retired_at > now() ORDER BY created_at"
)

INSERT_RULES = (
    "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
    " ON CONFLICT DO NOTHING"
)


def columns(rows: Sequence[tuple[str, ...]]) -> list[list[str]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[]] * 6


def _credential(row: asyncpg.Record) -> CredentialRecord:
    return CredentialRecord(
        row["credential_id"],
        row["tenant_id"],
        row["kind"],
        row["subject"],
        row["secret_digest"],
        tuple(row["roles"]),
        row["description"],
        row["created_by"],
        row["created_at"],
        row["revoked_at"],
    )


def _tenant(row: asyncpg.Record) -> TenantRecord:
    return TenantRecord(
        row["tenant_id"],
        row["display_name"],
        row["isolation"],
        row["state"],
        row["error"],
        row["created_at"],
    )


class PostgresPolicyStore:
    """See policy.ports.PolicyStore."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn

    async def _run(self, what: str, work: Callable[[Any], Awaitable[T]]) -> T:
        return await run_on(self._pool, f"policy store ({what})", work)

    # -- rules

    async def load_rules(self) -> tuple[list[Rule], list[RoleLink]]:
        rows = await self._pool.fetch(
            "SELECT ptype, v0, v1, v2, v3, v4 FROM casbin_rule ORDER BY id"
        )
        rules = [
            Rule(r["v0"], r["v1"], r["v2"], r["v3"], r["v4"]) for r in rows if r["ptype"] == "p"
        ]
        links = [RoleLink(r["v0"], r["v1"], r["v2"]) for r in rows if r["ptype"] == "g"]
        return rules, links

    async def change_rules(
        self,
        tenant_id: str,
        *,
        add: Iterable[Rule] = (),
        add_links: Iterable[RoleLink] = (),
        remove: Iterable[Rule] = (),
        remove_links: Iterable[RoleLink] = (),
        replace: bool = False,
    ) -> tuple[int, int]:
        """Adds and removes rules of one tenant in one transaction (with `replace`, first
        removes all of the tenant's); returns (added, removed)."""
        adds = [_rule_row(r) for r in add] + [link_row(g) for g in add_links]
        removes = [_rule_row(r) for r in remove] + [link_row(g) for g in remove_links]

        async def work(conn: asyncpg.Connection) -> tuple[int, int]:
            removed = 0
            async with conn.transaction():
                if replace:
                    status = await conn.execute(
                        "DELETE FROM casbin_rule WHERE (ptype = 'p' AND v1 = $1)"
                        " OR (ptype = 'g' AND v2 = $1)",
                        tenant_id,
                    )
                    removed += int(status.split()[-1])
                if removes:
                    status = await conn.execute(
                        "DELETE FROM casbin_rule c USING unnest($1::text[], $2::text[],"
                        " $3::text[], $4::text[], $5::text[], $6::text[])"
                        " AS x(ptype, v0, v1, v2, v3, v4) WHERE (c.ptype, c.v0, c.v1, c.v2,"
                        " c.v3, c.v4) = (x.ptype, x.v0, x.v1, x.v2, x.v3, x.v4)",
                        *columns(removes),
                    )
                    removed += int(status.split()[-1])
                added = 0
                if adds:
                    status = await conn.execute(INSERT_RULES, *columns(adds))
                    added = int(status.split()[-1])
                if added or removed:
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"rules:{tenant_id}")
            return added, removed

        return await self._run("rules", work)

    # -- tenants

    async def tenants(self) -> list[TenantRecord]:
        rows = await self._pool.fetch("SELECT * FROM tenants ORDER BY tenant_id")
        return [_tenant(r) for r in rows]

    async def tenant(self, tenant_id: str) -> TenantRecord | None:
        row = await self._pool.fetchrow("SELECT * FROM tenants WHERE tenant_id = $1", tenant_id)
        return _tenant(row) if row else None

    async def create_tenant(
        self,
        tenant: TenantRecord,
        admin: CredentialRecord | None,
        links: Sequence[RoleLink] = (),
        rules: Sequence[Rule] = (),
    ) -> bool:
        """Registers a tenant with its first credential and roles, in one transaction; False
        if the tenant id is taken."""

        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "INSERT INTO tenants (tenant_id, display_name, isolation, state, error,"
                    " created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    tenant.tenant_id,
                    tenant.display_name,
                    tenant.isolation,
                    tenant.state,
                    tenant.error,
                    tenant.created_at,
                )
                if status.split()[-1] == "0":
                    return False
                if admin is not None:
                    await insert_credential(conn, admin)
                rows = [_rule_row(r) for r in rules] + [link_row(g) for g in links]
                if rows:
                    await conn.execute(INSERT_RULES, *columns(rows))
                await conn.execute(
                    "SELECT pg_notify($1, $2)", CHANNEL, f"tenant:{tenant.tenant_id}"
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"rules:{tenant.tenant_id}")
            return True

        return await self._run("tenants", work)

    async def tenant_ready(self, tenant_id: str) -> None:
        """A PROVISIONING tenant is READY (its cell is made): its credentials work now."""

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE tenants SET state = 'READY', error = '' WHERE tenant_id = $1",
                    tenant_id,
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"tenant:{tenant_id}")

        await self._run("tenants", work)

    async def forget_tenant(self, tenant_id: str) -> None:
        """Removes a tenant that never became READY, with its credentials and policy lines
        (provisioning failed: nothing of it is kept, and it can be created again)."""

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                state = await conn.fetchval(
                    "SELECT state FROM tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id
                )
                if state is None or state == "READY":
                    return
                await conn.execute("DELETE FROM credentials WHERE tenant_id = $1", tenant_id)
                await conn.execute(
                    "DELETE FROM casbin_rule WHERE (ptype = 'p' AND v1 = $1)"
                    " OR (ptype = 'g' AND v2 = $1)",
                    tenant_id,
                )
                await conn.execute("DELETE FROM tenants WHERE tenant_id = $1", tenant_id)
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"tenant:{tenant_id}")
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"rules:{tenant_id}")

        await self._run("tenants", work)

    # -- credentials

    async def add_credential(self, cred: CredentialRecord, links: Sequence[RoleLink]) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await insert_credential(conn, cred)
                if links:
                    await conn.execute(INSERT_RULES, *columns([link_row(g) for g in links]))
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", CHANNEL, f"rules:{cred.tenant_id}"
                    )

        await self._run("credentials", work)

    async def credential(self, credential_id: str) -> CredentialRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM credentials WHERE credential_id = $1", credential_id
        )
        return _credential(row) if row else None

    async def credentials(self, tenant_id: str, include_revoked: bool) -> list[CredentialRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM credentials WHERE tenant_id = $1 AND ($2 OR revoked_at IS NULL)"
            " ORDER BY created_at",
            tenant_id,
            include_revoked,
        )
        return [_credential(r) for r in rows]

    async def revoke_credential(self, credential_id: str, at: datetime) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "UPDATE credentials SET revoked_at = $2"
                    " WHERE credential_id = $1 AND revoked_at IS NULL",
                    credential_id,
                    at,
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"cred:{credential_id}")
            return status.split()[-1] != "0"

        return await self._run("credentials", work)

    # -- tokens

    async def revoke_token(self, jti: str, tenant_id: str, expires_at: datetime) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO revoked_tokens (jti, tenant_id, expires_at) VALUES ($1, $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    jti,
                    tenant_id,
                    expires_at,
                )
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"jti:{jti}")

        await self._run("tokens", work)

    async def revoked_tokens(self) -> set[str]:
        await self._pool.execute("DELETE FROM revoked_tokens WHERE expires_at < now()")
        return {r["jti"] for r in await self._pool.fetch("SELECT jti FROM revoked_tokens")}

    async def signing_keys(self, new: tuple[str, str]) -> dict[str, str]:
        """The issuer's keys not retired (oldest first: the newest signs); `new` is stored
        first if there are none (the first server to start creates the key every instance
        signs with)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7301002)")
            rows = await conn.fetch("SELECT kid, private_pem" + _LIVE_KEYS_FROM)
            if not rows:
                await conn.execute(
                    "INSERT INTO signing_keys (kid, private_pem) VALUES ($1, $2)", *new
                )
                return {new[0]: new[1]}
        return {r["kid"]: r["private_pem"] for r in rows}

    async def rotate_signing_key(
        self, new: tuple[str, str], grace_s: float
    ) -> list[tuple[str, datetime, datetime | None]]:
        """Stores `new` as the key to sign with; the keys before it retire `grace_s` seconds
        from now (unless they retire sooner). Returns every live key (kid, created, retires),
        oldest first."""

        async def work(conn: asyncpg.Connection) -> list[tuple[str, datetime, datetime | None]]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7301002)")
                await conn.execute(
                    "UPDATE signing_keys SET retired_at = now() + make_interval(secs => $1)"
                    " WHERE retired_at IS NULL",
                    grace_s,
                )
                await conn.execute(
                    "INSERT INTO signing_keys (kid, private_pem, created_at)"
                    " VALUES ($1, $2, clock_timestamp())",
                    *new,
                )
                rows = await conn.fetch("SELECT kid, created_at, retired_at" + _LIVE_KEYS_FROM)
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"keys:{new[0]}")
            return [(r["kid"], r["created_at"], r["retired_at"]) for r in rows]

        return await self._run("signing keys", work)

    # -- denials

    async def add_denials(self, denials: Sequence[DenialRecord]) -> None:
        await self._pool.executemany(
            "INSERT INTO denials (tenant_id, at, subject, method, object, action, code, reason,"
            " request_id, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [
                (
                    d.tenant_id,
                    d.at,
                    _text(d.subject, 256),
                    _text(d.method, 256),
                    _text(d.object, 1024),
                    _text(d.action, 32),
                    d.code,
                    _text(d.reason, 1024),
                    _text(d.request_id, 64),
                    _text(d.origin, 256),
                )
                for d in denials
            ],
        )

    async def denials(
        self, tenant_ids: Sequence[str], before: datetime | None, limit: int
    ) -> list[DenialRecord]:
        rows = await self._pool.fetch(
            "SELECT * FROM denials WHERE tenant_id = ANY($1::text[])"
            " AND ($2::timestamptz IS NULL OR at < $2) ORDER BY at DESC, id DESC LIMIT $3",
            list(tenant_ids),
            before,
            limit,
        )
        return [
            DenialRecord(
                r["tenant_id"],
                r["at"],
                r["subject"],
                r["method"],
                r["object"],
                r["action"],
                r["code"],
                r["reason"],
                r["request_id"],
                r["origin"],
            )
            for r in rows
        ]

    # -- the change feed

    async def listen(
        self, on_change: Callable[[str], None], on_reconnect: Callable[[], None]
    ) -> None:
        """Calls `on_change(payload)` for every policy notification, for ever: on a dedicated
        connection, connected again (after which `on_reconnect()`: notifications may have been
        missed) when it drops."""
        delay = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: on_change(payload))
                on_reconnect()
                delay = 0.2
                await lost.wait()
                log.warning("policy change feed: connection lost; connecting again")
            except (*BACKEND_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("policy change feed: %r; retrying in %.1f s", exc, delay)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _text(value: str, limit: int) -> str:
    """What a caller sent, fit for a text column (no NUL; bounded)."""
    return value.replace("\x00", "\ufffd")[:limit]


async def insert_credential(conn: asyncpg.Connection, c: CredentialRecord) -> None:
    await conn.execute(
        "INSERT INTO credentials (credential_id, tenant_id, kind, subject, secret_digest, roles,"
        " description, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        c.credential_id,
        c.tenant_id,
        c.kind,
        c.subject,
        c.secret_digest,
        list(c.roles),
        c.description,
        c.created_by,
        c.created_at,
    )
