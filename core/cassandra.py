"""Cassandra from asyncio, and versioned CQL migrations (core/migrations/cassandra/NNNN_*.cql).

cassandra-driver has no asyncio API: `execute` bridges its execute_async futures onto the
loop (call_soon_threadsafe), so the loop never blocks on a query; what the driver only offers
blocking (connect, set_keyspace, shutdown) runs in a worker thread. Every call has a timeout."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    ResponseFuture,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy

log = logging.getLogger(__name__)

_MIGRATIONS = "core.migrations.cassandra"
DATACENTER = "datacenter1"


async def connect(host: str, port: int, *, timeout: float = 10.0) -> Session:
    def blocking() -> Session:
        profile = ExecutionProfile(
            load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=DATACENTER),
            request_timeout=timeout,
        )
        cluster = Cluster(
            [host],
            port=port,
            connect_timeout=timeout,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=5,
        )
        return cluster.connect()

    return await asyncio.wait_for(asyncio.to_thread(blocking), timeout + 5)


async def close(session: Session) -> None:
    await asyncio.to_thread(session.cluster.shutdown)


async def execute(
    session: Session, statement: Any, params: Any = None, *, timeout: float = 10.0
) -> Any:
    """The first page of rows of `statement` (its paging_state says if there are more)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    response: ResponseFuture = session.execute_async(statement, params, timeout=timeout)

    def ok(rows: Any) -> None:
        # (on a driver thread; the response is complete, so result() does not block)
        try:
            page = _Page(rows, response.result().paging_state)
        except Exception as exc:  # handed to the waiting coroutine, not lost on this thread
            loop.call_soon_threadsafe(_settle, done, None, exc)
            return
        loop.call_soon_threadsafe(_settle, done, page, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, done, None, exc)

    response.add_callbacks(ok, failed)
    return await asyncio.wait_for(done, timeout + 1)


def _settle(done: asyncio.Future[Any], page: Any, exc: BaseException | None) -> None:
    if done.done():
        return  # the caller gave up (timeout or cancel)
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(page)


class _Page(list[Any]):
    """Rows of one page, and the driver's paging state for the next (None: last page)."""

    def __init__(self, rows: Any, paging_state: bytes | None) -> None:
        super().__init__(rows or [])
        self.paging_state = paging_state


def _migrations() -> list[tuple[int, str, list[str]]]:
    found = []
    for entry in resources.files(_MIGRATIONS).iterdir():
        if entry.name.endswith(".cql"):
            text = "\n".join(
                line for line in entry.read_text().splitlines() if not line.strip().startswith("--")
            )
            statements = [s.strip() for s in text.split(";") if s.strip()]
            found.append((int(entry.name.split("_", 1)[0]), entry.name, statements))
    return sorted(found)


async def migrate(session: Session, keyspace: str, *, replication_factor: int = 1) -> list[str]:
    """Creates `keyspace` if needed and applies the pending migrations in order; returns what
    it applied. Each statement is idempotent (IF NOT EXISTS), so a migration interrupted half
    way is simply applied again."""
    await execute(
        session,
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
        f"{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}",
        timeout=30,
    )
    await asyncio.to_thread(session.set_keyspace, keyspace)
    await execute(
        session,
        "CREATE TABLE IF NOT EXISTS lily_migrations (version int PRIMARY KEY, name text,"
        " applied_at timestamp)",
        timeout=30,
    )
    done = {row.version for row in await execute(session, "SELECT version FROM lily_migrations")}
    applied = []
    for version, name, statements in _migrations():
        if version in done:
            continue
        for statement in statements:
            await execute(session, statement, timeout=60)
        await execute(
            session,
            "INSERT INTO lily_migrations (version, name, applied_at)"
            " VALUES (%s, %s, toTimestamp(now()))",
            (version, name),
        )
        log.info("applied Cassandra migration %s", name)
        applied.append(name)
    return applied
