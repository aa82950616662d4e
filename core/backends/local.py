"""The local profile's stores: assets, their outbox and lineage in Postgres."""

from __future__ import annotations

import asyncpg

from core.backends import CellStores
from core.events.outbox import PostgresOutbox
from core.lifecycle import Closer, close_all
from core.lineage.stores.postgres import PostgresLineageGraph
from core.metadata.stores.postgres import PostgresAssetStore
from core.postgres import create_pool, create_schema, migrate
from core.settings import LocalStores


class LocalBackend:
    """The shared cell on the process's pool (the public schema); each DEDICATED cell in a
    schema of its own, through a pool of its own whose search_path is that schema only."""

    def __init__(
        self, settings: LocalStores, pool: asyncpg.Pool, dsn: str, *, with_lineage: bool
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._dsn = dsn
        graph = PostgresLineageGraph(pool) if with_lineage else None
        self.shared = CellStores(PostgresAssetStore(pool), PostgresOutbox(pool), graph)
        self.closers: list[Closer] = []  # (the pool is the process's)

    async def open_cell(self, name: str) -> CellStores:
        await create_schema(self._pool, name)
        pool = await create_pool(
            self._dsn, schema=name, min_size=1, max_size=self._settings.dedicated_pool_size
        )
        closers: list[Closer] = [(f"Postgres pool of {name}", pool.close, pool.terminate)]
        try:
            await migrate(pool, data_only=True)
        except BaseException:
            await close_all(closers)
            raise
        return CellStores(
            PostgresAssetStore(pool), PostgresOutbox(pool), PostgresLineageGraph(pool), closers
        )
