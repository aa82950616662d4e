"""The stores a cell keeps its metadata and lineage in, chosen once, by settings.stores.type:

- local (core.settings.LocalStores, core/backends/local.py): assets, their outbox and lineage
  in Postgres; the shared cell in the public schema, each DEDICATED cell in a schema of its own;
- distributed (core.settings.DistributedStores, core/backends/distributed.py): assets and their
  outbox (write intents) in Cassandra, lineage in JanusGraph; a keyspace and a graph per
  DEDICATED cell.

open_backend is the one place that looks at the type: everything after it works through the
ports (core.ports), whatever the backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from core.lifecycle import Closer
from core.ports import AssetStore, LineageGraph, Outbox
from core.settings import Stores


@dataclass
class CellStores:
    """One cell's stores, and what to close with the cell (a DEDICATED cell's own
    connections; nothing for the shared cell, whose connections are the backend's)."""

    store: AssetStore
    outbox: Outbox
    graph: LineageGraph | None  # None in ingest workers, which never walk lineage
    closers: list[Closer] = field(default_factory=list)


class Backend(Protocol):
    """What a process is connected to for its cells' stores."""

    shared: CellStores  # the shared cell's, open from the start
    closers: list[Closer]  # the backend's own connections, closed last

    async def open_cell(self, name: str) -> CellStores:
        """A DEDICATED cell's stores, made if new (schema, or keyspace and graph; all
        migrated) and opened. On failure nothing it opened stays open, and whatever it made
        is reused by the next try."""
        ...


async def open_backend(
    stores: Stores,
    pool: asyncpg.Pool,
    postgres_dsn: str,
    *,
    migrate_first: bool,
    with_lineage: bool,
) -> Backend:
    """The backend `stores` names, connected (and migrated first, if asked); a
    core.lifecycle.StartupError names what cannot be reached. `pool` is the process's
    Postgres (the public schema), already migrated if asked."""
    if stores.type == "distributed":
        from core.backends.distributed import DistributedBackend

        return await DistributedBackend.open(
            stores, migrate_first=migrate_first, with_lineage=with_lineage
        )
    from core.backends.local import LocalBackend

    return LocalBackend(stores, pool, postgres_dsn, with_lineage=with_lineage)
