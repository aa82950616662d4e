"""Cells: where a tenant's metadata lives, decided once per request.

A cell is one set of stores, event streams, services and workers. Every SHARED tenant is served
by the shared cell (the public schema, or the configured keyspace and the server's graph, and
the LILY_* streams), with the tenant leading every key and subject. Each DEDICATED tenant has
a cell of its own, named `cell_name(tenant)`: its own Postgres schema (local profile), or its
own Cassandra keyspace and JanusGraph graph (distributed), and its own JetStream streams, with
its own outbox relay, ingest worker and propagation worker. The control plane (tenants,
policies, credentials, denials) stays in the public schema whatever the isolation.

The interceptor routes every authenticated call (Cells.enter): the principal's tenant, looked
up in the tenant registry (PolicyService's cache, refreshed on every change), gives the cell,
and the servicers take their services from current_cell(). A DEDICATED tenant's cell is opened
(made if new: schema, keyspace, graph and streams are all created if missing, and migrated) when
the tenant is created, at start, when another instance says the tenant is ready, or at its first
call here, whichever comes first."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from cassandra.cluster import Session as CassandraSession

from core import cassandra
from core.domain.errors import Unavailable
from core.events.nats import NatsChangeBus
from core.events.outbox import OutboxRelay, PostgresOutbox
from core.lineage.service import LineageService
from core.lineage.stores.janusgraph import JanusGraphLineageGraph
from core.lineage.stores.postgres import PostgresLineageGraph
from core.metadata.pagination import PageTokens
from core.metadata.service import MetadataService
from core.metadata.stores.cassandra import CassandraAssetStore
from core.metadata.stores.postgres import PostgresAssetStore
from core.ports import AssetStore, LineageGraph, Outbox, OutboxRecord
from core.postgres import create_pool, create_schema, migrate
from core.settings import Settings
from core.workers.ingest import IngestWorker, encode_work
from core.workers.propagation import PropagationWorker

log = logging.getLogger(__name__)

SHARED = "shared"
OPEN_TIMEOUT = 180.0  # seconds to make or open a cell (a new Cassandra keyspace takes a while)

# (name, close, what to do instead if close takes too long)
Closer = tuple[str, Callable[[], Awaitable[None]], Callable[[], None]]


def cell_name(tenant_id: str) -> str:
    """A DEDICATED tenant's cell: a name valid as a Postgres schema, a Cassandra keyspace, a
    JanusGraph graph and part of a JetStream stream name (a-z, 0-9, _; at most 48), readable,
    and distinct for distinct tenants (`a-b` and `a_b` differ in the hash)."""
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    return f"t_{re.sub(r'[^a-z0-9_]', '_', tenant_id)[:36]}_{digest}"


async def close_all(steps: Sequence[Closer], timeout: float = 10.0) -> None:
    """Runs each close in at most `timeout` seconds: one that hangs is logged and left
    behind, and never holds up the rest."""
    loop = asyncio.get_running_loop()
    for name, close, abandon in steps:
        started = loop.time()
        try:
            await asyncio.wait_for(close(), timeout)
        except TimeoutError:
            log.warning("shutdown: %s did not close within %.0f s; left behind", name, timeout)
            abandon()
            continue
        except Exception as exc:  # the shutdown boundary: log, and close the rest
            log.warning("shutdown: closing %s failed: %r", name, exc)
            continue
        log.info("shutdown: %s closed in %.2f s", name, loop.time() - started)


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancels background tasks and waits for them (a while).

    A cancel can be lost: Python 3.11's asyncio.wait_for drops one that lands as its inner
    future completes, and nats-py's fetch waits in wait_for; a worker loop that lost its
    cancel goes round again for ever. Waiting on it is the suspected cause of `lily up`
    hanging on SIGTERM (seen once for over 10 minutes after a benchmark, idle loop, no worker
    processes left). So the cancel is sent again, and a task that still runs is left."""
    pending = set(tasks)
    for _ in range(3):
        for task in pending:
            task.cancel()
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=5.0)
    for task in pending:
        log.warning("shutdown: task %s did not stop; left behind", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("shutdown: task %s had failed: %r", task.get_name(), task.exception())


def _exit_after_commit(records: Sequence[OutboxRecord]) -> None:
    # Testing hook (LILY_TEST_EXIT_AFTER_COMMIT=1): die between a commit and its publish.
    log.warning("exiting right after a commit, before publishing (LILY_TEST_EXIT_AFTER_COMMIT)")
    os._exit(70)


def on_commit(relay: OutboxRelay) -> Callable[[Sequence[OutboxRecord]], None]:
    if os.environ.get("LILY_TEST_EXIT_AFTER_COMMIT") == "1":
        return _exit_after_commit
    return relay.submit


@dataclass
class Cell:
    """One cell's stores, bus, services and (once started) workers."""

    name: str
    tenant_id: str | None  # the one tenant a DEDICATED cell serves; None for the shared cell
    store: AssetStore
    graph: LineageGraph
    bus: NatsChangeBus
    relay: OutboxRelay
    metadata: MetadataService
    lineage: LineageService
    closers: list[Closer] = field(default_factory=list)  # a DEDICATED cell's connections
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def assemble(
        cls,
        name: str,
        tenant_id: str | None,
        settings: Settings,
        pages: PageTokens,
        store: AssetStore,
        outbox: Outbox,
        graph: LineageGraph,
        bus: NatsChangeBus,
    ) -> Cell:
        relay = OutboxRelay(outbox, bus)
        commit = on_commit(relay)
        metadata = MetadataService(
            store,
            bus,
            pages,
            consistency=settings.consistency,
            encode_work=encode_work,
            on_commit=commit,
        )
        lineage = LineageService(graph, store, on_commit=commit)
        return cls(name, tenant_id, store, graph, bus, relay, metadata, lineage)

    def start_workers(self, settings: Settings, *, ingest: bool) -> None:
        """The outbox relay and the propagation worker; the ingest worker too if `ingest`."""
        tag = "" if self.tenant_id is None else f"[{self.name}]"
        commit = on_commit(self.relay)
        propagation = PropagationWorker(
            self.bus,
            self.store,
            self.graph,
            propagating=settings.propagate_tags,
            max_depth=settings.propagation_depth,
            chunk=settings.propagation_chunk,
            parallel=settings.propagation_parallel,
            on_commit=commit,
        )
        self.tasks += [
            asyncio.create_task(self.relay.run(), name=f"outbox-relay{tag}"),
            asyncio.create_task(propagation.run(), name=f"propagation{tag}"),
        ]
        if ingest:
            worker = IngestWorker(
                self.bus, self.store, batch=settings.ingest_batch, on_commit=commit
            )
            self.tasks.append(asyncio.create_task(worker.run(), name=f"ingest-worker{tag}"))

    async def close(self) -> None:
        await stop_tasks(self.tasks)
        await close_all(self.closers)


_cell: contextvars.ContextVar[Cell | None] = contextvars.ContextVar("cell", default=None)


def current_cell() -> Cell:
    """The cell the interceptor routed this call to."""
    cell = _cell.get()
    if cell is None:
        raise RuntimeError("no cell: the call was not routed (an open method?)")
    return cell


class Cells:
    """The shared cell and every DEDICATED tenant's cell opened in this process."""

    def __init__(
        self,
        settings: Settings,
        shared: Cell,
        pages: PageTokens,
        *,
        isolation_of: Callable[[str], str | None],
        pool: asyncpg.Pool,
        postgres_dsn: str,
        cassandra_session: CassandraSession | None = None,
        janusgraph: JanusGraphLineageGraph | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self._pages = pages
        self._isolation_of = isolation_of
        self._pool = pool  # the server's (public schema)
        self._dsn = postgres_dsn
        self._session = cassandra_session
        self._janusgraph = janusgraph
        self._dedicated: dict[str, Cell] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._workers = False
        self._closed = False

    def dedicated(self) -> dict[str, Cell]:
        return dict(self._dedicated)

    async def enter(self, tenant_id: str) -> Cell:
        """Routes the current call to the tenant's cell."""
        dedicated = self._isolation_of(tenant_id) == "DEDICATED"
        cell = await self.open(tenant_id) if dedicated else self.shared
        _cell.set(cell)
        return cell

    async def open(self, tenant_id: str) -> Cell:
        """The tenant's DEDICATED cell, made and opened if it is not open yet (safe to call
        concurrently: one opening per tenant)."""
        if (cell := self._dedicated.get(tenant_id)) is not None:
            return cell
        lock = self._opening.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            if (cell := self._dedicated.get(tenant_id)) is not None:
                return cell
            if self._closed:
                raise Unavailable("the server is shutting down")
            try:
                cell = await asyncio.wait_for(self._make(tenant_id), OPEN_TIMEOUT)
            except TimeoutError as exc:
                raise Unavailable(
                    f"tenant {tenant_id!r}: its stores did not open within {OPEN_TIMEOUT:.0f} s"
                ) from exc
            if self._workers:
                cell.start_workers(self.settings, ingest=True)
            self._dedicated[tenant_id] = cell
            log.info("cell %s open for tenant %s", cell.name, tenant_id)
            return cell

    def start_workers(self) -> None:
        """Workers for every cell, now and as more are opened. A DEDICATED cell always runs
        its ingest worker here (`lily worker` processes serve the shared cell only)."""
        self._workers = True
        self.shared.start_workers(self.settings, ingest=self.settings.worker_processes == 0)
        for cell in self._dedicated.values():
            cell.start_workers(self.settings, ingest=True)

    async def close(self) -> None:
        """Stops and closes every DEDICATED cell (the shared cell's connections are the
        server's, closed with its backends)."""
        self._closed = True
        cells, self._dedicated = list(self._dedicated.values()), {}
        await stop_tasks(self.shared.tasks)
        for cell in cells:
            await cell.close()

    async def _make(self, tenant_id: str) -> Cell:
        name = cell_name(tenant_id)
        closers: list[Closer] = []
        try:
            bus = await self.shared.bus.for_cell(name)
            if self.settings.profile == "local":
                store, outbox, graph = await self._postgres(name, closers)
            else:
                store, outbox, graph = await self._distributed(name, closers)
        except BaseException:
            await close_all(list(reversed(closers)))
            raise
        cell = Cell.assemble(name, tenant_id, self.settings, self._pages, store, outbox, graph, bus)
        cell.closers = closers
        return cell

    async def _postgres(
        self, name: str, closers: list[Closer]
    ) -> tuple[AssetStore, Outbox, LineageGraph]:
        await create_schema(self._pool, name)
        pool = await create_pool(
            self._dsn, schema=name, min_size=1, max_size=self.settings.dedicated_pool_size
        )
        closers.append((f"Postgres pool of {name}", pool.close, pool.terminate))
        await migrate(pool, data_only=True)
        return PostgresAssetStore(pool), PostgresOutbox(pool), PostgresLineageGraph(pool)

    async def _distributed(
        self, name: str, closers: list[Closer]
    ) -> tuple[AssetStore, Outbox, LineageGraph]:
        assert self._session is not None and self._janusgraph is not None  # distributed
        c = self.settings.cassandra
        session = await cassandra.another_session(self._session, timeout=c.timeout)
        closers.append(
            (
                f"Cassandra session of {name}",
                functools.partial(cassandra.close_session, session),
                lambda: None,
            )
        )
        await cassandra.migrate(session, name, replication_factor=c.replication_factor)
        store = await CassandraAssetStore.open(session, timeout=c.timeout)
        await self._janusgraph.create_graph(name)
        graph = JanusGraphLineageGraph(self.settings.janusgraph_url, graph=name)
        closers.append((f"JanusGraph graph {name}", graph.close, lambda: None))
        await graph.connect()
        return store, store, graph
