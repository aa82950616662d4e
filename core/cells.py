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
and the servicers take their services from current_cell() (the server hands them that). A
DEDICATED tenant's cell is opened (made if new: its stores by the backend, core/backends; its
streams here) when the tenant is created, at start, when another instance says the tenant is
ready, or at its first call here, whichever comes first."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.backends import Backend, CellStores
from core.domain.errors import Unavailable
from core.events.nats import NatsChangeBus
from core.events.outbox import OutboxRelay
from core.lifecycle import Closer, close_all, stop_tasks
from core.lineage.service import LineageService
from core.metadata.pagination import PageTokens
from core.metadata.service import MetadataService
from core.ports import Access, AssetStore, LineageGraph, OutboxRecord
from core.quality.engine import QualityEngine
from core.settings import Settings
from core.transforms.pipeline import NO_HOOKS, Hooks
from core.workers.actions import ActionsWorker
from core.workers.ingest import IngestWorker, encode_work
from core.workers.propagation import PropagationWorker
from core.workers.quality import QualityWorker

log = logging.getLogger(__name__)

SHARED = "shared"
OPEN_TIMEOUT = 180.0  # seconds to make or open a cell (a new Cassandra keyspace takes a while)


def cell_name(tenant_id: str) -> str:
    """A DEDICATED tenant's cell: a name valid as a Postgres schema, a Cassandra keyspace, a
    JanusGraph graph and part of a JetStream stream name (a-z, 0-9, _; at most 48), readable,
    and distinct for distinct tenants (`a-b` and `a_b` differ in the hash)."""
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:8]
    return f"t_{re.sub(r'[^a-z0-9_]', '_', tenant_id)[:36]}_{digest}"


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
        access: Access,
        stores: CellStores,
        bus: NatsChangeBus,
        hooks: Hooks = NO_HOOKS,
    ) -> Cell:
        if stores.graph is None:
            raise RuntimeError("a cell that serves calls needs its lineage graph")
        relay = OutboxRelay(stores.outbox, bus)
        commit = on_commit(relay)
        metadata = MetadataService(
            stores.store,
            bus,
            pages,
            access,
            consistency=settings.consistency,
            encode_work=encode_work,
            on_commit=commit,
            hooks=hooks,
        )
        lineage = LineageService(stores.graph, stores.store, access, on_commit=commit)
        return cls(
            name,
            tenant_id,
            stores.store,
            stores.graph,
            bus,
            relay,
            metadata,
            lineage,
            list(stores.closers),
        )

    def start_workers(
        self,
        settings: Settings,
        *,
        ingest: bool,
        quality: QualityEngine | None,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        """The outbox relay, the propagation worker, (given its engine) the data-quality
        worker and (if any tenant has actions) the actions worker; the ingest worker too if
        `ingest`."""
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
        if hooks.has_actions:
            actions = ActionsWorker(self.bus, hooks)
            self.tasks.append(asyncio.create_task(actions.run(), name=f"actions{tag}"))
        if quality is not None:
            rules = QualityWorker(self.bus, quality)
            self.tasks.append(asyncio.create_task(rules.run(), name=f"quality{tag}"))
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
        access: Access,
        backend: Backend,
        *,
        isolation_of: Callable[[str], str | None],
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.shared = shared
        self._pages = pages
        self._access = access
        self._backend = backend
        self._isolation_of = isolation_of
        self._dedicated: dict[str, Cell] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._workers = False
        self._closed = False
        # The data-quality engine, if the server has one (its workers run in every cell).
        self.quality: QualityEngine | None = None

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
                cell.start_workers(
                    self.settings, ingest=True, quality=self.quality, hooks=self.hooks
                )
            self._dedicated[tenant_id] = cell
            log.info("cell %s open for tenant %s", cell.name, tenant_id)
            return cell

    def start_workers(self) -> None:
        """Workers for every cell, now and as more are opened. A DEDICATED cell always runs
        its ingest worker here (`lily worker` processes serve the shared cell only)."""
        self._workers = True
        self.shared.start_workers(
            self.settings,
            ingest=self.settings.worker_processes == 0,
            quality=self.quality,
            hooks=self.hooks,
        )
        for cell in self._dedicated.values():
            cell.start_workers(self.settings, ingest=True, quality=self.quality, hooks=self.hooks)
        if self.quality is not None:  # the schedule of the data-quality rules, every tenant's
            self.shared.tasks.append(asyncio.create_task(self.quality.run(), name="quality"))

    async def observe(self) -> None:
        """The lag of every cell's consumers and its dead letters, in core.metrics."""
        buses = [self.shared.bus, *(c.bus for c in self._dedicated.values())]
        await asyncio.gather(*(bus.observe() for bus in buses))

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
        bus = await self.shared.bus.for_cell(name)
        stores = await self._backend.open_cell(name)
        return Cell.assemble(
            name, tenant_id, self.settings, self._pages, self._access, stores, bus, self.hooks
        )
