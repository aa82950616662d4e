"""The composition root: builds stores, bus, services, workers and the gRPC server from
settings, and takes them down again in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core import tracing
from core.errors import ErrorInterceptor
from core.events.nats import NatsChangeBus
from core.events.outbox import OutboxRelay
from core.metadata.pagination import PageTokens
from core.metadata.service import MetadataService
from core.metadata.servicer import MetadataServicer
from core.metadata.stores.postgres import PostgresAssetStore
from core.ports import AssetStore, OutboxRecord
from core.postgres import create_pool, migrate, shared_secret
from core.settings import Settings
from core.workers.ingest import IngestWorker, encode_work

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    metadata_pb.DESCRIPTOR.services_by_name["MetadataService"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)


class StartupError(RuntimeError):
    """A backend Lily needs could not be reached at start; the message says which."""


@dataclass
class Lily:
    """A running Lily core."""

    settings: Settings
    pool: asyncpg.Pool
    bus: NatsChangeBus
    server: grpc.aio.Server
    port: int
    relay: OutboxRelay
    worker: IngestWorker | None
    health: health.aio.HealthServicer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        await _shut_down(self.tasks, self.bus, self.pool)


def _exit_after_commit(records: Sequence[OutboxRecord]) -> None:
    # Testing hook (LILY_TEST_EXIT_AFTER_COMMIT=1): die between a commit and its publish.
    log.warning("exiting right after a commit, before publishing (LILY_TEST_EXIT_AFTER_COMMIT)")
    os._exit(70)


def asset_store(settings: Settings, pool: asyncpg.Pool) -> AssetStore:
    """The one place that picks the asset store backend (settings.asset_store.type)."""
    match settings.asset_store.type:
        case "postgres":
            return PostgresAssetStore(pool)


def _on_commit(relay: OutboxRelay) -> Callable[[Sequence[OutboxRecord]], None]:
    if os.environ.get("LILY_TEST_EXIT_AFTER_COMMIT") == "1":
        return _exit_after_commit
    return relay.submit


async def _connect(
    postgres_dsn: str, nats_url: str, *, name: str, migrate_first: bool = False
) -> tuple[asyncpg.Pool, NatsChangeBus]:
    """Tracing, a Postgres pool (migrated first if asked) and the JetStream bus; a StartupError
    names whichever backend cannot be reached, and nothing stays open after a failure."""
    tracing.configure()
    try:
        pool = await create_pool(postgres_dsn)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise StartupError(f"Postgres at {postgres_dsn!r} is not reachable: {exc}") from exc
    try:
        if migrate_first:
            await migrate(pool)
        try:
            bus = await NatsChangeBus.connect(nats_url, name=name)
        except Exception as exc:  # nats raises several unrelated types
            raise StartupError(f"NATS at {nats_url!r} is not reachable: {exc}") from exc
    except BaseException:
        await pool.close()
        raise
    return pool, bus


async def _shut_down(
    tasks: list[asyncio.Task[None]], bus: NatsChangeBus, pool: asyncpg.Pool
) -> None:
    """Cancels background tasks and waits for them, then closes the bus and the pool."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await bus.close()
    await pool.close()


@dataclass
class Workers:
    """A running `lily worker`: the ingest worker and an outbox relay for its commits."""

    pool: asyncpg.Pool
    bus: NatsChangeBus
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        await _shut_down(self.tasks, self.bus, self.pool)


async def start_workers(settings: Settings, *, postgres_dsn: str, nats_url: str) -> Workers:
    """The ingest worker in a process of its own (started by `lily up`, or run by hand)."""
    pool, bus = await _connect(postgres_dsn, nats_url, name="lily-worker")
    store = asset_store(settings, pool)
    relay = OutboxRelay(pool, bus)
    worker = IngestWorker(bus, store, batch=settings.ingest_batch, on_commit=_on_commit(relay))
    return Workers(
        pool,
        bus,
        [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(worker.run(), name="ingest-worker"),
        ],
    )


async def start(settings: Settings, *, postgres_dsn: str, nats_url: str) -> Lily:
    """Connects to Postgres and NATS, migrates, and serves gRPC on settings.grpc_port."""
    pool, bus = await _connect(postgres_dsn, nats_url, name="lily", migrate_first=True)
    try:
        secret = await shared_secret(pool, "page_token_secret")
    except BaseException:
        await _shut_down([], bus, pool)
        raise

    store = asset_store(settings, pool)
    relay = OutboxRelay(pool, bus)
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
        interceptors=[tracing.server_interceptor(), ErrorInterceptor()], options=options
    )
    metadata_grpc.add_MetadataServiceServicer_to_server(MetadataServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:  # grpc's way of saying the address cannot be bound
        port = 0
    if port == 0:
        await _shut_down([], bus, pool)
        raise StartupError(f"cannot listen on {address} (in use, or not an address of this host)")
    await server.start()
    lily = Lily(settings, pool, bus, server, port, relay, worker, health_servicer)
    if settings.workers:
        lily.tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
    if worker is not None:
        lily.tasks.append(asyncio.create_task(worker.run(), name="ingest-worker"))
    for name in ("", SERVICE_NAMES[0]):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC serving on %s:%d", settings.grpc_host, port)
    return lily
