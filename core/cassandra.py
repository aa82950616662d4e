"""Cassandra from asyncio, and versioned CQL migrations (core/migrations/cassandra/NNNN_*.cql).

cassandra-driver has no asyncio API: `execute` bridges its execute_async futures onto the
loop (call_soon_threadsafe), so the loop never blocks on a query; what the driver only offers
blocking (connect, set_keyspace, shutdown) runs in a worker thread. Every call has a timeout."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

from cassandra import OperationTimedOut, RequestExecutionException
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy
from cassandra.query import BatchStatement, BatchType

from core.blocking import in_daemon_thread, settle

log = logging.getLogger(__name__)

# What a Cassandra call raises when the cluster cannot be reached or cannot answer in time
# (as opposed to a bad statement): the stores turn these into Unavailable.
BACKEND_ERRORS = (
    NoHostAvailable,
    OperationTimedOut,
    RequestExecutionException,
    ConnectionException,
    OSError,
    TimeoutError,
)

_MIGRATIONS = "core.migrations.cassandra"
DATACENTER = "datacenter1"


def contact_points(hosts: str, default_port: int = 9042) -> tuple[list[str], int]:
    """'h1:p,h2:p' as the driver takes them: host names, and the one port they share."""
    names, ports = [], set()
    for part in hosts.split(","):
        host, sep, port = part.strip().rpartition(":")
        names.append(host if sep else port)
        ports.add(int(port) if sep else default_port)
    if len(ports) != 1:
        raise ValueError(f"Cassandra hosts {hosts!r} must share one port")
    return names, ports.pop()


async def connect(hosts: str, *, timeout: float = 10.0) -> Session:
    """A session on the cluster at `hosts` ('host:port[,host:port...]')."""
    names, port = contact_points(hosts)

    def blocking() -> Session:
        profile = ExecutionProfile(
            load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=DATACENTER),
            request_timeout=timeout,
        )
        cluster = Cluster(
            names,
            port=port,
            connect_timeout=timeout,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            protocol_version=5,
            # back within seconds of a node's return (the default waits up to 10 minutes)
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 10.0),
        )
        return cluster.connect()

    return await asyncio.wait_for(asyncio.to_thread(blocking), timeout + 5)


async def close(session: Session, *, timeout: float = 10.0) -> None:
    """Shuts the driver down (its threads and connections), waiting at most `timeout`."""
    await in_daemon_thread(session.cluster.shutdown, timeout, "cassandra-shutdown")


async def another_session(session: Session, *, timeout: float = 10.0) -> Session:
    """A second session on `session`'s cluster (for another keyspace; see close_session)."""
    return await asyncio.wait_for(asyncio.to_thread(session.cluster.connect), timeout + 5)


async def close_session(session: Session, *, timeout: float = 10.0) -> None:
    """Closes one session's connections, leaving its cluster (and other sessions) up."""
    await in_daemon_thread(session.shutdown, timeout, "cassandra-session-shutdown")


async def execute(
    session: Session,
    statement: Any,
    params: Any = None,
    *,
    timeout: float = 10.0,
    paging_state: bytes | None = None,
) -> Any:
    """One page of rows of `statement` (from `paging_state`, if given; the page's own
    paging_state says if there are more)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    response: ResponseFuture = session.execute_async(
        statement, params, timeout=timeout, paging_state=paging_state
    )

    def ok(rows: Any) -> None:
        # (on a driver thread; the response is complete, so result() does not block)
        try:
            page = _Page(rows, response.result().paging_state)
        except Exception as exc:  # handed to the waiting coroutine, not lost on this thread
            loop.call_soon_threadsafe(settle, done, None, exc)
            return
        loop.call_soon_threadsafe(settle, done, page, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(settle, done, None, exc)

    response.add_callbacks(ok, failed)
    return await asyncio.wait_for(done, timeout + 1)


async def execute_many(
    session: Session,
    statements: Sequence[tuple[Any, Any]],
    *,
    concurrency: int = 256,
    timeout: float = 10.0,
) -> None:
    """Runs (statement, params) pairs, at most `concurrency` at a time, and returns when all
    are done; raises the first failure (once the ones in flight settle). The loop wakes once
    for the lot: each completion, on a driver thread, starts the next statement itself."""
    if not statements:
        return
    loop = asyncio.get_running_loop()
    run = _Many(session, statements, loop.create_future(), loop, timeout)
    for _ in range(min(concurrency, len(statements))):
        if not run.start_next():
            break
    await asyncio.wait_for(run.done, timeout * (1 + len(statements) // concurrency) + 1)


class _Many:
    def __init__(
        self,
        session: Session,
        statements: Sequence[tuple[Any, Any]],
        done: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        timeout: float,
    ) -> None:
        self.session, self.statements, self.done = session, statements, done
        self.loop, self.timeout = loop, timeout
        self.lock = threading.Lock()
        self.next = self.pending = 0
        self.error: BaseException | None = None

    def start_next(self) -> bool:
        with self.lock:
            if self.error is not None or self.next >= len(self.statements):
                return False
            i, self.next = self.next, self.next + 1
            self.pending += 1
        statement, params = self.statements[i]
        try:
            response = self.session.execute_async(statement, params, timeout=self.timeout)
        except Exception as exc:
            self.finish(exc)
            return False
        response.add_callbacks(self.ok, self.finish)
        return True

    def ok(self, _: Any) -> None:
        self.finish(None)

    def finish(self, exc: BaseException | None) -> None:
        with self.lock:
            self.pending -= 1
            if exc is not None and self.error is None:
                self.error = exc
        if exc is None and self.start_next():
            return
        with self.lock:
            last = self.pending == 0 and (
                self.error is not None or self.next >= len(self.statements)
            )
        if last:
            self.loop.call_soon_threadsafe(settle, self.done, None, self.error)


def replica_batches(session: Session, statements: Sequence[Any], size: int) -> list[Any]:
    """Bound statements grouped into unlogged batches of up to `size` whose partitions share
    a primary replica, so each batch is one request that its coordinator applies locally."""
    metadata = session.cluster.metadata
    groups: dict[Any, list[Any]] = {}
    for statement in statements:
        replicas = metadata.get_replicas(statement.keyspace, statement.routing_key)
        groups.setdefault(replicas[0] if replicas else None, []).append(statement)
    batches = []
    for group in groups.values():
        for i in range(0, len(group), size):
            batch = BatchStatement(BatchType.UNLOGGED)
            for statement in group[i : i + size]:
                batch.add(statement)
            batches.append(batch)
    return batches


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


async def use_keyspace(session: Session, keyspace: str, *, timeout: float = 10.0) -> None:
    await asyncio.wait_for(asyncio.to_thread(session.set_keyspace, keyspace), timeout)


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
    await use_keyspace(session, keyspace, timeout=30)
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
