"""The distributed profile's stores: assets and their outbox in Cassandra, lineage in
JanusGraph."""

from __future__ import annotations

import functools

from cassandra.cluster import Session

from core import cassandra
from core.backends import CellStores
from core.lifecycle import Closer, StartupError, close_all, nothing
from core.lineage.stores.janusgraph import JanusGraphLineageGraph
from core.metadata.stores.cassandra import CassandraAssetStore
from core.settings import DistributedStores


class DistributedBackend:
    """The shared cell in the configured keyspace and JanusGraph's own graph; each DEDICATED
    cell in a keyspace and a ConfiguredGraphFactory graph named after it, through a session
    of its own on the same cluster."""

    def __init__(
        self,
        settings: DistributedStores,
        session: Session,
        graph: JanusGraphLineageGraph | None,
        shared: CellStores,
        closers: list[Closer],
    ) -> None:
        self._settings = settings
        self._session = session
        self._graph = graph
        self.shared = shared
        self.closers = closers

    @classmethod
    async def open(
        cls, settings: DistributedStores, *, migrate_first: bool, with_lineage: bool
    ) -> DistributedBackend:
        """Connects to Cassandra (migrating the keyspace first, if asked) and, with lineage,
        to JanusGraph; nothing stays open after a failure."""
        c = settings.cassandra
        closers: list[Closer] = []
        try:
            try:
                session = await cassandra.connect(c.hosts, timeout=c.timeout)
            except Exception as exc:  # the driver raises several unrelated types
                raise StartupError(f"Cassandra at {c.hosts} is not reachable: {exc}") from exc
            closers.append(("Cassandra", functools.partial(cassandra.close, session), nothing))
            if migrate_first:
                await cassandra.migrate(
                    session, c.keyspace, replication_factor=c.replication_factor
                )
            else:
                await cassandra.use_keyspace(session, c.keyspace)
            store = await CassandraAssetStore.open(session, timeout=c.timeout)
            graph = None
            if with_lineage:
                graph = JanusGraphLineageGraph(settings.janusgraph_url)
                closers.insert(0, ("JanusGraph", graph.close, nothing))
                try:
                    await graph.connect()
                except Exception as exc:  # gremlinpython raises several unrelated types
                    raise StartupError(
                        f"JanusGraph at {settings.janusgraph_url} is not reachable: {exc}"
                    ) from exc
        except BaseException:
            await close_all(closers)
            raise
        return cls(settings, session, graph, CellStores(store, store, graph), closers)

    async def open_cell(self, name: str) -> CellStores:
        if self._graph is None:
            raise RuntimeError("a process without lineage serves no DEDICATED cell")
        c = self._settings.cassandra
        session = await cassandra.another_session(self._session, timeout=c.timeout)
        closers: list[Closer] = [
            (
                f"Cassandra session of {name}",
                functools.partial(cassandra.close_session, session),
                nothing,
            )
        ]
        try:
            await cassandra.migrate(session, name, replication_factor=c.replication_factor)
            store = await CassandraAssetStore.open(session, timeout=c.timeout)
            await self._graph.create_graph(name)
            graph = JanusGraphLineageGraph(self._settings.janusgraph_url, graph=name)
            closers.insert(0, (f"JanusGraph graph {name}", graph.close, nothing))
            await graph.connect()
        except BaseException:
            await close_all(closers)
            raise
        return CellStores(store, store, graph, closers)
