"""The composition root: builds stores, bus, services, workers and the gRPC server from
settings, and takes them down again in order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import grpc
from cassandra.cluster import Session as CassandraSession
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core import cassandra, tracing
from core.errors import ErrorInterceptor
from core.events.nats import NatsChangeBus
from core.events.outbox import OutboxRelay, PostgresOutbox
from core.lineage.service import LineageService
from core.lineage.servicer import LineageServicer
from core.lineage.stores.janusgraph import JanusGraphLineageGraph
from core.lineage.stores.postgres import PostgresLineageGraph
from core.metadata.pagination import PageTokens
from core.metadata.service import MetadataService
from core.metadata.servicer import MetadataServicer
from core.metadata.stores.cassandra import CassandraAssetStore
from core.metadata.stores.postgres import PostgresAssetStore
from core.ports import AssetStore, LineageGraph, Outbox, OutboxRecord
from core.postgres import create_pool, migrate, shared_secret
from core.settings import Settings
from core.workers.ingest import IngestWorker, encode_work
from core.workers.propagation import PropagationWorker
from policy.access import OpenAccess, PolicyAccess
from policy.permissions import CallGuard, OpenGuard
from policy.service import PolicyService
from policy.servicer import PolicyServicer
from policy.store import PostgresPolicyStore

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    metadata_pb.DESCRIPTOR.services_by_name["MetadataService"].full_name,
    lineage_pb.DESCRIPTOR.services_by_name["LineageService"].full_name,
    policy_pb.DESCRIPTOR.services_by_name["PolicyService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


class StartupError(RuntimeError):
    """A backend Lily needs could not be reached at start; the message says which."""


@dataclass
class Backends:
    """What one Lily process is connected to, per settings.profile: Postgres and the bus
    always; the asset store, its outbox and the lineage graph on Postgres (local) or on
    Cassandra and JanusGraph (distributed)."""

    pool: asyncpg.Pool
    bus: NatsChangeBus
    store: AssetStore
    outbox: Outbox
    lineage: LineageGraph | None  # None in ingest workers, which never walk lineage
    cassandra: CassandraSession | None = None
    janusgraph: JanusGraphLineageGraph | None = None

    async def close(self, timeout: float = 10.0) -> None:
        """Closes each connection, each in at most `timeout` seconds: a backend that has gone
        away is logged and left behind, and never holds up shutdown."""
        loop = asyncio.get_running_loop()
        # (name, close, what to do instead if close takes too long)
        steps: list[tuple[str, Callable[[], Awaitable[None]], Callable[[], None]]] = [
            ("NATS", self.bus.close, lambda: None),
            ("Postgres", self.pool.close, self.pool.terminate),
        ]
        if self.janusgraph is not None:
            steps.append(
                ("JanusGraph", functools.partial(self.janusgraph.close, timeout), lambda: None)
            )
        if self.cassandra is not None:
            steps.append(
                ("Cassandra", functools.partial(cassandra.close, self.cassandra), lambda: None)
            )
        for name, close, abandon in steps:
            started = loop.time()
            try:
                await asyncio.wait_for(close(), timeout)
            except TimeoutError:
                log.warning("shutdown: %s did not close within %.0f s; left behind", name, timeout)
                abandon()
                continue
            log.info("shutdown: %s closed in %.2f s", name, loop.time() - started)


@dataclass
class Lily:
    """A running Lily core."""

    settings: Settings
    backends: Backends
    server: grpc.aio.Server
    port: int
    relay: OutboxRelay
    worker: IngestWorker | None
    health: health.aio.HealthServicer
    policy: PolicyService
    # The system tenant's first admin API key, if this start created it (shown once).
    bootstrap_key: str | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        await self.policy.stop()
        await _shut_down(self.tasks, self.backends)


def _exit_after_commit(records: Sequence[OutboxRecord]) -> None:
    # Testing hook (LILY_TEST_EXIT_AFTER_COMMIT=1): die between a commit and its publish.
    log.warning("exiting right after a commit, before publishing (LILY_TEST_EXIT_AFTER_COMMIT)")
    os._exit(70)


def _on_commit(relay: OutboxRelay) -> Callable[[Sequence[OutboxRecord]], None]:
    if os.environ.get("LILY_TEST_EXIT_AFTER_COMMIT") == "1":
        return _exit_after_commit
    return relay.submit


async def _connect(
    settings: Settings,
    postgres_dsn: str,
    nats_url: str,
    *,
    name: str,
    migrate_first: bool = False,
    with_lineage: bool = True,
) -> Backends:
    """Tracing, a Postgres pool (migrated first if asked), the JetStream bus, and the
    profile's stores; a StartupError names whichever backend cannot be reached, and nothing
    stays open after a failure."""
    tracing.configure()
    opened: list[Callable[[], Awaitable[None]]] = []
    try:
        try:
            pool = await create_pool(postgres_dsn)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StartupError(f"Postgres at {postgres_dsn!r} is not reachable: {exc}") from exc
        opened.append(pool.close)
        if migrate_first:
            await migrate(pool)
        try:
            bus = await NatsChangeBus.connect(nats_url, name=name)
        except Exception as exc:  # nats raises several unrelated types
            raise StartupError(f"NATS at {nats_url!r} is not reachable: {exc}") from exc
        opened.append(bus.close)
        if settings.profile == "local":
            store = PostgresAssetStore(pool)
            lineage = PostgresLineageGraph(pool) if with_lineage else None
            return Backends(pool, bus, store, PostgresOutbox(pool), lineage)
        c = settings.cassandra
        try:
            session = await cassandra.connect(c.hosts, timeout=c.timeout)
        except Exception as exc:  # the driver raises several unrelated types
            raise StartupError(f"Cassandra at {c.hosts} is not reachable: {exc}") from exc
        opened.append(functools.partial(cassandra.close, session))
        if migrate_first:
            await cassandra.migrate(session, c.keyspace, replication_factor=c.replication_factor)
        else:
            await cassandra.use_keyspace(session, c.keyspace)
        cstore = await CassandraAssetStore.open(session, timeout=c.timeout)
        if not with_lineage:
            return Backends(pool, bus, cstore, cstore, None, session)
        graph = JanusGraphLineageGraph(settings.janusgraph_url)
        opened.append(graph.close)
        try:
            await graph.connect()
        except Exception as exc:  # gremlinpython raises several unrelated types
            raise StartupError(
                f"JanusGraph at {settings.janusgraph_url} is not reachable: {exc}"
            ) from exc
        return Backends(pool, bus, cstore, cstore, graph, session, graph)
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                await close()
        raise


async def _shut_down(tasks: list[asyncio.Task[None]], backends: Backends) -> None:
    """Cancels background tasks and waits for them (a while), then closes the backends.

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
    await backends.close()


@dataclass
class Workers:
    """A running `lily worker`: the ingest worker and an outbox relay for its commits."""

    backends: Backends
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        await _shut_down(self.tasks, self.backends)


async def start_workers(settings: Settings, *, postgres_dsn: str, nats_url: str) -> Workers:
    """The ingest worker in a process of its own (started by `lily up`, or run by hand)."""
    backends = await _connect(
        settings, postgres_dsn, nats_url, name="lily-worker", with_lineage=False
    )
    relay = OutboxRelay(backends.outbox, backends.bus)
    worker = IngestWorker(
        backends.bus, backends.store, batch=settings.ingest_batch, on_commit=_on_commit(relay)
    )
    return Workers(
        backends,
        [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(worker.run(), name="ingest-worker"),
        ],
    )


async def start(settings: Settings, *, postgres_dsn: str, nats_url: str) -> Lily:
    """Connects to the profile's backends, migrates, and serves gRPC on settings.grpc_port."""
    backends = await _connect(settings, postgres_dsn, nats_url, name="lily", migrate_first=True)
    try:
        secret = await shared_secret(backends.pool, "page_token_secret")
    except BaseException:
        await _shut_down([], backends)
        raise

    policy = PolicyService(PostgresPolicyStore(backends.pool, postgres_dsn), settings.auth)
    try:
        await policy.start()
        bootstrap_key = await policy.bootstrap()
    except BaseException:
        await policy.stop()
        await _shut_down([], backends)
        raise
    if settings.auth.enabled:
        guard: CallGuard | OpenGuard = CallGuard(policy)
        access: PolicyAccess | OpenAccess = PolicyAccess(policy)
    else:
        log.warning(
            "authentication is OFF: every call is an admin of %r", settings.auth.system_tenant
        )
        guard, access = OpenGuard(settings.auth.system_tenant), OpenAccess()

    store, bus = backends.store, backends.bus
    relay = OutboxRelay(backends.outbox, bus)
    on_commit = _on_commit(relay)
    service = MetadataService(
        store,
        bus,
        PageTokens(secret),
        consistency=settings.consistency,
        encode_work=encode_work,
        on_commit=on_commit,
    )
    worker = None
    if settings.workers and settings.worker_processes == 0:
        worker = IngestWorker(bus, store, batch=settings.ingest_batch, on_commit=on_commit)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(
        interceptors=[tracing.server_interceptor(), ErrorInterceptor(guard)], options=options
    )
    metadata_grpc.add_MetadataServiceServicer_to_server(MetadataServicer(service, access), server)
    policy_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(policy, service.get), server)
    if backends.lineage is None:  # (servers connect one; only workers go without)
        raise RuntimeError("a server needs its lineage graph")
    lineage = LineageService(backends.lineage, store, on_commit=on_commit)
    lineage_grpc.add_LineageServiceServicer_to_server(LineageServicer(lineage), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpc's way of saying the address cannot be bound
        port = 0
    if port == 0:
        await policy.stop()
        await _shut_down([], backends)
        raise StartupError(f"cannot listen on {address} (in use, or not an address of this host)")
    await server.start()
    lily = Lily(
        settings, backends, server, port, relay, worker, health_servicer, policy, bootstrap_key
    )
    if settings.workers:
        lily.tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        propagation = PropagationWorker(
            bus,
            store,
            backends.lineage,
            propagating=settings.propagate_tags,
            max_depth=settings.propagation_depth,
            chunk=settings.propagation_chunk,
            parallel=settings.propagation_parallel,
            on_commit=on_commit,
        )
        lily.tasks.append(asyncio.create_task(propagation.run(), name="propagation"))
    if worker is not None:
        lily.tasks.append(asyncio.create_task(worker.run(), name="ingest-worker"))
    for name in ("", *SERVICE_NAMES[:3]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC serving on %s:%d", settings.grpc_host, port)
    return lily
