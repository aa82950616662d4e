"""The composition root: builds stores, bus, services, workers and the gRPC server from
settings, and takes them down again in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lily.v1 import enforcement_pb2 as enforcement_pb
from lily.v1 import enforcement_pb2_grpc as enforcement_grpc
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import notification_pb2 as notification_pb
from lily.v1 import notification_pb2_grpc as notification_grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc
from lily.v1 import quality_pb2 as quality_pb
from lily.v1 import quality_pb2_grpc as quality_grpc

from core import metrics, tracing
from core.backends import Backend, open_backend
from core.cells import SHARED, Cell, Cells, current_cell, on_commit
from core.events.nats import NatsChangeBus
from core.events.outbox import OutboxRelay
from core.lifecycle import StartupError, close_all, stop_tasks
from core.lineage.servicer import LineageServicer
from core.metadata.pagination import PageTokens
from core.metadata.servicer import MetadataServicer
from core.ports import OutboxRecord
from core.postgres import create_pool, migrate, shared_secret
from core.quality.engine import QualityEngine
from core.quality.service import QualityService
from core.quality.servicer import QualityServicer
from core.quality.store import PostgresQualityStore
from core.requestctx import principal_ctx
from core.settings import Settings
from core.transforms.pipeline import Hooks
from core.wire.status import ErrorInterceptor, Guard
from core.workers.ingest import IngestWorker
from policy.access import OpenAccess, PolicyAccess
from policy.notification_servicer import NotificationServicer
from policy.permissions import CallGuard, OpenGuard
from policy.service import PolicyService
from policy.servicer import EnforcementServicer, IntegrationServicer, PolicyServicer
from policy.stores.enforcement import PostgresEnforcementStore
from policy.stores.identity import PostgresIdentityStore
from policy.stores.integrations import PostgresIntegrationStore
from policy.stores.kept_nats import NatsKeptDeliveries
from policy.stores.notifications import PostgresNotificationStore
from policy.stores.outbound_nats import NatsOutbound
from policy.stores.postgres import PostgresPolicyStore

log = logging.getLogger(__name__)

# Lily's own services (each with its health status), then gRPC's.
LILY_SERVICES = (
    metadata_pb.DESCRIPTOR.services_by_name["MetadataService"].full_name,
    lineage_pb.DESCRIPTOR.services_by_name["LineageService"].full_name,
    policy_pb.DESCRIPTOR.services_by_name["PolicyService"].full_name,
    integration_pb.DESCRIPTOR.services_by_name["IntegrationService"].full_name,
    enforcement_pb.DESCRIPTOR.services_by_name["EnforcementService"].full_name,
    notification_pb.DESCRIPTOR.services_by_name["NotificationService"].full_name,
    quality_pb.DESCRIPTOR.services_by_name["DataQualityService"].full_name,
)
SERVICE_NAMES = (*LILY_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)

__all__ = ["Lily", "StartupError", "Workers", "start", "start_workers"]


@dataclass
class Backends:
    """What one Lily process is connected to: Postgres and the bus always; its cells'
    stores through the backend settings.stores chose (core/backends)."""

    pool: asyncpg.Pool
    bus: NatsChangeBus
    backend: Backend

    async def close(self, timeout: float = 10.0) -> None:
        """Closes each connection, each in at most `timeout` seconds: a backend that has gone
        away is logged and left behind, and never holds up shutdown."""
        await close_all(
            [
                ("NATS", self.bus.close, lambda: None),
                ("Postgres", self.pool.close, self.pool.terminate),
                *self.backend.closers,
            ],
            timeout,
        )


@dataclass
class Lily:
    """A running Lily core. Its gRPC health says NOT_SERVING until serving() is called."""

    settings: Settings
    backends: Backends
    server: grpc.aio.Server
    port: int
    cells: Cells
    health: health.aio.HealthServicer
    policy: PolicyService
    # The system tenant's first admin API key, if this start created it (shown once).
    bootstrap_key: str | None = None
    # Takes its consumers' lag off /metrics.
    unobserve: Callable[[], None] = lambda: None

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def serving(self) -> None:
        """Says SERVING on gRPC health, for the server and each of its services: call it once
        everything the process serves is ready (for `lily up`: the REST gateway listens and
        the first admin key is saved)."""
        for name in ("", *LILY_SERVICES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on %s", self.address)

    async def stop(self, grace: float | None = None) -> None:
        self.unobserve()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        await self.policy.stop()
        await self.cells.close()
        await self.backends.close()


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
    backend of settings.stores; a StartupError names whichever backend cannot be reached,
    and nothing stays open after a failure."""
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
        backend = await open_backend(
            settings.stores,
            pool,
            postgres_dsn,
            migrate_first=migrate_first,
            with_lineage=with_lineage,
        )
        return Backends(pool, bus, backend)
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                await close()
        raise


async def _shut_down(tasks: list[asyncio.Task[None]], backends: Backends) -> None:
    """Stops background tasks (see core.lifecycle.stop_tasks), then closes the backends."""
    await stop_tasks(tasks)
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
    shared = backends.backend.shared
    relay = OutboxRelay(shared.outbox, backends.bus)
    worker = IngestWorker(
        backends.bus, shared.store, batch=settings.ingest_batch, on_commit=on_commit(relay)
    )
    return Workers(
        backends,
        [
            asyncio.create_task(relay.run(), name="outbox-relay"),
            asyncio.create_task(worker.run(), name="ingest-worker"),
        ],
    )


class _PolicyEvents:
    """The policy service's own change events (enforcement receipts), on the bus."""

    def __init__(self, bus: NatsChangeBus) -> None:
        self._bus = bus

    async def publish(self, events: Sequence[tuple[str, str, bytes]]) -> None:
        await self._bus.publish(
            [OutboxRecord(eid, eid, subject, payload, {}) for subject, eid, payload in events]
        )


async def start(settings: Settings, *, postgres_dsn: str, nats_url: str) -> Lily:
    """Connects to the backends settings name, migrates, and serves gRPC on
    settings.grpc_port (health NOT_SERVING until Lily.serving())."""
    backends = await _connect(settings, postgres_dsn, nats_url, name="lily", migrate_first=True)
    try:
        secret = await shared_secret(backends.pool, "page_token_secret")
    except BaseException:
        await _shut_down([], backends)
        raise

    policy = PolicyService(
        PostgresPolicyStore(backends.pool, postgres_dsn),
        settings.auth,
        PostgresIntegrationStore(backends.pool),
        PostgresIdentityStore(backends.pool),
        secret_key=settings.secret_key.get_secret_value(),
        kept=NatsKeptDeliveries(backends.bus.js),
        receipts=PostgresEnforcementStore(backends.pool),
        events=_PolicyEvents(backends.bus),
        notifications=PostgresNotificationStore(backends.pool),
        outbound=NatsOutbound(backends.bus.js),
    )
    cells: Cells | None = None
    try:
        await policy.start()
        bootstrap_key = await policy.tenants.bootstrap()
        if settings.auth.enabled:
            guard: CallGuard | OpenGuard = CallGuard(policy)
            access: PolicyAccess | OpenAccess = PolicyAccess(policy)
        else:
            log.warning(
                "authentication is OFF: every call is an admin of %r", settings.auth.system_tenant
            )
            guard, access = OpenGuard(settings.auth.system_tenant), OpenAccess()

        pages = PageTokens(secret)
        backend = backends.backend
        hooks = Hooks(settings.transforms, settings.actions)
        shared = Cell.assemble(
            SHARED, None, settings, pages, access, backend.shared, backends.bus, hooks
        )
        cells = Cells(
            settings,
            shared,
            pages,
            access,
            backend,
            isolation_of=policy.tenants.isolation_of,
            hooks=hooks,
        )
        policy.tenants.cells = cells
        quality_store = PostgresQualityStore(backends.pool)
        cells.quality = QualityEngine(
            quality_store,
            cells.enter,
            restricted=settings.auth.restricted_tags,
            every=settings.quality_every,
        )

        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(
            interceptors=[tracing.server_interceptor(), ErrorInterceptor(_routed(guard, cells))],
            options=options,
        )
        metadata_grpc.add_MetadataServiceServicer_to_server(
            MetadataServicer(lambda: current_cell().metadata), server
        )
        lineage_grpc.add_LineageServiceServicer_to_server(
            LineageServicer(lambda: current_cell().lineage), server
        )
        policy_grpc.add_PolicyServiceServicer_to_server(
            PolicyServicer(policy, lambda: current_cell().metadata), server
        )
        integration_grpc.add_IntegrationServiceServicer_to_server(
            IntegrationServicer(policy.integrations), server
        )
        assert policy.enforcement is not None
        enforcement_grpc.add_EnforcementServiceServicer_to_server(
            EnforcementServicer(policy.enforcement), server
        )
        assert policy.notifications is not None
        notification_grpc.add_NotificationServiceServicer_to_server(
            NotificationServicer(policy.notifications, lambda: current_cell().metadata), server
        )
        quality_grpc.add_DataQualityServiceServicer_to_server(
            QualityServicer(
                QualityService(quality_store, cells.quality), lambda: current_cell().bus
            ),
            server,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(SERVICE_NAMES, server)
        for name in ("", *LILY_SERVICES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # grpc's way of saying the address cannot be bound
            port = 0
        if port == 0:
            raise StartupError(
                f"cannot listen on {address} (in use, or not an address of this host)"
            )
        for tenant in policy.tenants.all():
            if tenant.has_cell:
                await cells.open(tenant.tenant_id)
        if settings.workers:
            cells.start_workers()
        await server.start()
    except BaseException:
        await policy.stop()
        if cells is not None:
            await cells.close()
        await _shut_down([], backends)
        raise
    log.info("gRPC listening on %s:%d", settings.grpc_host, port)
    unobserve = metrics.on_scrape(cells.observe)
    return Lily(
        settings, backends, server, port, cells, health_servicer, policy, bootstrap_key, unobserve
    )


def _routed(guard: Guard, cells: Cells) -> Guard:
    """The guard, then routing: an authenticated call runs in its tenant's cell."""

    async def call(method: str, context: grpc.aio.ServicerContext) -> None:
        await guard(method, context)
        principal = principal_ctx.get()
        if principal is not None:
            await cells.enter(principal.tenant_id)

    return call
