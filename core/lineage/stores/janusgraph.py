"""The LineageGraph port on JanusGraph (the distributed profile), through gremlinpython.

The graph: a vertex `asset` per (tenant, asset_id), whose vertex id is derived from them
(`vertex_id`; custom string ids, graph.set-vertex-id), so lookups are direct reads and two
writers creating the same node write the same vertex, never a duplicate; a composite index on
(tenant, asset_id), `assetByTenantAndId`, serves lookups by property. An edge `lineage` runs
from upstream to downstream with its `kind`, its `source_event_time` (epoch microseconds), a
`deleted` flag and both asset ids; vertices carry `deleted` too.
Edge upserts run server-side as one parameterized Gremlin script per chunk (no string building:
values travel as bindings), so a fan-out of 10,000 edges is a few requests, not 10,000.
Traversals run as one server-side script per direction (see _WALK).

gremlinpython runs its own event loop, so every call runs on one dedicated thread, never on
ours; each waits at most `timeout` seconds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from gremlin_python.driver.client import Client
from gremlin_python.driver.protocol import GremlinServerError
from gremlin_python.statics import long

from core.blocking import in_daemon_thread
from core.domain.errors import Unavailable
from core.domain.lineage import MAX_LINEAGE_NODES, in_direction, newest_per_edge
from core.domain.model import Direction, EdgeKey, LineageEdge, Subgraph

T = TypeVar("T")
_CHUNK = 500
_WIDE_CHUNK = 5000  # nodes per edges_at request (it reads, so no write batch to bound)
_ATTEMPTS = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SCHEMA = """
mgmt = g.getGraph().openManagement()
if (mgmt.getVertexLabel('asset') == null) {
    tenant = mgmt.makePropertyKey('tenant').dataType(String.class)
        .cardinality(Cardinality.SINGLE).make()
    assetId = mgmt.makePropertyKey('asset_id').dataType(String.class)
        .cardinality(Cardinality.SINGLE).make()
    mgmt.makePropertyKey('deleted').dataType(Boolean.class)
        .cardinality(Cardinality.SINGLE).make()
    mgmt.makePropertyKey('kind').dataType(String.class).make()
    mgmt.makePropertyKey('up').dataType(String.class).make()
    mgmt.makePropertyKey('down').dataType(String.class).make()
    mgmt.makePropertyKey('source_event_time').dataType(Long.class).make()
    asset = mgmt.makeVertexLabel('asset').make()
    mgmt.makeEdgeLabel('lineage').multiplicity(Multiplicity.MULTI).make()
    mgmt.buildIndex('assetByTenantAndId', Vertex.class).addKey(tenant).addKey(assetId)
        .indexOnly(asset).buildCompositeIndex()
    mgmt.commit()
    'created'
} else {
    mgmt.rollback()
    'present'
}
"""

# A DEDICATED tenant's graph: made from the server's template configuration (keyspace = the
# graph's name) and opened, which binds `<name>_traversal` on this server (on the others within
# JanusGraph's 20 s rebinding). Needs the ConfigurationManagementGraph (see scripts/devstack.py).
_CREATE_GRAPH = """
if (!ConfiguredGraphFactory.getGraphNames().contains(name)) {
    if (ConfiguredGraphFactory.getTemplateConfiguration() == null) {
        throw new IllegalStateException('JanusGraph has no template configuration for new graphs')
    }
    ConfiguredGraphFactory.create(name)
}
ConfiguredGraphFactory.open(name)
'ready'
"""

# rows: [[upstream_id, downstream_id, kind, source_event_time_us, deleted], ...]
_UPSERT_EDGES = """
def ids = (rows.collect { it[0] } + rows.collect { it[1] }).unique()
def cache = [:]
g.V(ids.collect { vids[it] }).toList().each { cache[it.value('asset_id')] = it }
def fresh = ids.findAll { !cache.containsKey(it) } as Set
fresh.each { id ->
    cache[id] = g.addV('asset').property(T.id, vids[id])
        .property('tenant', tenant).property('asset_id', id)
        .property('deleted', false).next()
}
// The edges already into the chunk's downstream vertices that existed before, in one read.
def known = rows.findAll { !(it[1] in fresh) }.collect { cache[it[1]] }.unique()
def existing = [:]
if (known) {
    g.V(known).inE('lineage').toList().each {
        existing[[it.value('up'), it.value('down'), it.value('kind')]] = it
    }
}
// Each row's edge as stored before this write ([time, deleted]; null: new).
def before = []
for (r in rows) {
    def edge = existing[[r[0], r[1], r[2]]]
    if (edge == null) {
        before << null
        cache[r[0]].addEdge('lineage', cache[r[1]], 'up', r[0], 'down', r[1], 'kind', r[2],
            'source_event_time', r[3], 'deleted', r[4])
    } else {
        before << [edge.value('source_event_time'), edge.value('deleted')]
        if (edge.value('source_event_time') < r[3]) {
            edge.property('source_event_time', r[3])
            edge.property('deleted', r[4])
        }
    }
}
[before]
"""

# wanted_keys: [[upstream_id, downstream_id, kind], ...] -> the stored ones, as
# [[up, down, kind, source_event_time_us, deleted], ...]
_GET_EDGES = """
def wanted = wanted_keys.collect { [it[0], it[1], it[2]] } as Set
def found = []
g.V(wanted_keys.collect { vids[it[1]] }.unique()).inE('lineage').toList().each {
    def key = [it.value('up'), it.value('down'), it.value('kind')]
    if (key in wanted) found << (key + [it.value('source_event_time'), it.value('deleted')])
}
[found]
"""

# ids: asset ids -> the live edges out of them (forward) or into them whose far end is live,
# as [[up, down, kind, source_event_time_us], ...]
_EDGES_AT = """
def near = g.V(ids.collect { vids[it] })
def rows = (forward ? near.outE('lineage') : near.inE('lineage')).has('deleted', false).toList()
def far = rows.collect { (forward ? it.inVertex() : it.outVertex()).id() }.unique()
def dead = far ? g.V(far).has('deleted', true).id().toSet() : [] as Set
def found = []
for (e in rows) {
    if ((forward ? e.inVertex() : e.outVertex()).id() in dead) continue
    found << [e.value('up'), e.value('down'), e.value('kind'), e.value('source_event_time')]
}
[found]
"""

# One direction's breadth-first walk, run server-side in one request (a level per request
# cost a round trip or two each): the same algorithm as core.domain.lineage._walk, which the
# contract suite holds both to. Edges carry both asset ids, so only the far ends' `deleted`
# flags are read, a level at a time.
_WALK = """
def found = g.V(vid).tryNext()
if (!found.isPresent() || found.get().value('deleted')) return [[live: false]]
def depthOf = [(start): 0]
def frontier = [found.get().id()]
def edges = []
def truncated = false
for (level = 1; level <= maxDepth && frontier && !truncated; level++) {
    def rows = forward ? g.V(frontier).outE('lineage').has('deleted', false).toList()
                       : g.V(frontier).inE('lineage').has('deleted', false).toList()
    def far = rows.collect { (forward ? it.inVertex() : it.outVertex()).id() }.unique()
    def dead = far ? g.V(far).has('deleted', true).id().toSet() : [] as Set
    def next = []
    for (e in rows) {
        def farId = (forward ? e.inVertex() : e.outVertex()).id()
        if (farId in dead) continue
        def target = forward ? e.value('down') : e.value('up')
        if (!depthOf.containsKey(target)) {
            if (depthOf.size() >= maxNodes) { truncated = true; continue }
            depthOf[target] = level
            next << farId
        }
        edges << [e.value('up'), e.value('down'), e.value('kind'), e.value('source_event_time')]
    }
    frontier = next
}
// (a list around the map: the server streams a top-level map as its entries)
[[live: true, nodes: depthOf, edges: edges, truncated: truncated]]
"""

_SET_NODE = """
def found = g.V(vid).tryNext()
if (found.isPresent()) {
    def was = found.get().value('deleted')
    found.get().property('deleted', deleted)
    was != deleted
} else if (!deleted) {
    g.addV('asset').property(T.id, vid)
        .property('tenant', tenant).property('asset_id', assetId)
        .property('deleted', false).iterate()
    true
} else {
    false
}
"""


def vertex_id(tenant_id: str, asset_id: str) -> str:
    """The vertex id of (tenant, asset): hex, since JanusGraph reserves characters such as '-'
    in custom string ids, and both parts may contain them."""
    return hashlib.sha256(f"{tenant_id}\x00{asset_id}".encode()).hexdigest()[:40]


def _micros(at: datetime) -> long:
    # (gremlinpython sends a plain int as a 32-bit Int)
    return long((at - _EPOCH) // timedelta(microseconds=1))


def _from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class JanusGraphLineageGraph:
    """The LineageGraph port on JanusGraph. See core.ports.LineageGraph for its guarantees."""

    def __init__(self, url: str, *, graph: str = "", timeout: float = 30.0) -> None:
        """On the server's `graph` (and `g`), or on a graph of ConfiguredGraphFactory's named
        `graph` (a DEDICATED tenant's; see create_graph)."""
        self._url = url
        self._source = f"{graph}_traversal" if graph else "g"
        self._timeout = timeout
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gremlin")
        self._client: Client | None = None

    async def connect(self) -> None:
        """Opens the connections and creates the schema if the graph has none."""
        await self._run(lambda: self._script(SCHEMA, {}))

    async def close(self, timeout: float = 10.0) -> None:
        """Closes the connections, waiting at most `timeout` (gremlinpython's close can hang
        on a server that has gone; it is then left to its daemon thread)."""
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            await in_daemon_thread(self._client.close, timeout, "gremlin-close")

    async def _run(self, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout + 5):
                return await loop.run_in_executor(self._thread, work)
        except TimeoutError as exc:
            raise Unavailable("lineage graph did not answer in time") from exc
        except (OSError, RuntimeError, concurrent.futures.TimeoutError) as exc:
            raise Unavailable(f"lineage graph unavailable: {type(exc).__name__}") from exc

    async def create_graph(self, name: str) -> None:
        """Creates (if new) and opens ConfiguredGraphFactory's graph `name`."""
        await self._run(lambda: self._script(_CREATE_GRAPH, {"name": name}))

    # -- on the gremlin thread ------------------------------------------------------------

    def _script(self, script: str, bindings: dict[str, Any]) -> list[Any]:
        if self._client is None:
            self._client = Client(self._url, self._source)
        for attempt in range(_ATTEMPTS):
            try:
                return self._client.submit(script, bindings).all().result(timeout=self._timeout)
            except GremlinServerError as exc:
                # Another writer created one of our new vertices first (same derived id): the
                # scripts are idempotent, and the next attempt finds the vertex.
                if "already exists" not in str(exc) or attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- the port ---------------------------------------------------------------------------

    async def upsert_edges(
        self, tenant_id: str, edges: Sequence[LineageEdge]
    ) -> dict[EdgeKey, LineageEdge | None]:
        latest = newest_per_edge(edges)
        rows = [
            [e.upstream_id, e.downstream_id, e.kind, _micros(e.source_event_time), e.is_deleted]
            for e in latest
        ]
        before: dict[EdgeKey, LineageEdge | None] = {}
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i : i + _CHUNK]
            result = await self._run(
                lambda chunk=chunk: self._script(  # type: ignore[misc]
                    _UPSERT_EDGES,
                    {"tenant": tenant_id, "rows": chunk, "vids": _vids(tenant_id, chunk)},
                )
            )
            for e, was in zip(latest[i : i + _CHUNK], result[0], strict=True):
                before[e.key] = (
                    None if was is None else LineageEdge(*e.key, _from_micros(was[0]), was[1])
                )
        return before

    async def get_edges(
        self, tenant_id: str, keys: Sequence[EdgeKey]
    ) -> dict[EdgeKey, LineageEdge]:
        found: dict[EdgeKey, LineageEdge] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = [list(k) for k in keys[i : i + _CHUNK]]
            result = await self._run(
                lambda chunk=chunk: self._script(  # type: ignore[misc]
                    _GET_EDGES, {"wanted_keys": chunk, "vids": _vids(tenant_id, chunk)}
                )
            )
            for up, down, kind, at, deleted in result[0]:
                found[(up, down, kind)] = LineageEdge(up, down, kind, _from_micros(at), deleted)
        return found

    async def edges_at(
        self, tenant_id: str, asset_ids: Sequence[str], forward: bool
    ) -> list[LineageEdge]:
        found = []
        unique = sorted(set(asset_ids))
        for i in range(0, len(unique), _WIDE_CHUNK):
            chunk = unique[i : i + _WIDE_CHUNK]
            bindings = {
                "ids": chunk,
                "vids": {a: vertex_id(tenant_id, a) for a in chunk},
                "forward": forward,
            }
            result = await self._run(
                lambda bindings=bindings: self._script(_EDGES_AT, bindings)  # type: ignore[misc]
            )
            found += [LineageEdge(u, d, k, _from_micros(t)) for u, d, k, t in result[0]]
        return found

    async def upsert_node(self, tenant_id: str, asset_id: str) -> None:
        await self._run(lambda: self._script(_SET_NODE, _node(tenant_id, asset_id, deleted=False)))

    async def delete_node(self, tenant_id: str, asset_id: str) -> bool:
        result = await self._run(
            lambda: self._script(_SET_NODE, _node(tenant_id, asset_id, deleted=True))
        )
        return bool(result[0])

    async def traverse(
        self,
        tenant_id: str,
        start: str,
        direction: Direction,
        depth: int,
        max_nodes: int = MAX_LINEAGE_NODES,
    ) -> Subgraph:
        async def walk(forward: bool, depth: int) -> Subgraph:
            return await self._walk(tenant_id, start, forward, depth, max_nodes)

        return await in_direction(direction, depth, walk)

    async def _walk(
        self, tenant_id: str, start: str, forward: bool, depth: int, max_nodes: int
    ) -> Subgraph:
        bindings = {
            "vid": vertex_id(tenant_id, start),
            "start": start,
            "forward": forward,
            "maxDepth": depth,
            "maxNodes": max_nodes,
        }
        [result] = await self._run(lambda: self._script(_WALK, bindings))
        if not result["live"]:
            return Subgraph({}, ())
        edges = tuple(LineageEdge(u, d, k, _from_micros(t)) for u, d, k, t in result["edges"])
        return Subgraph(dict(result["nodes"]), edges, bool(result["truncated"]))


def _vids(tenant_id: str, rows: list[list[Any]]) -> dict[str, str]:
    return {a: vertex_id(tenant_id, a) for r in rows for a in (r[0], r[1])}


def _node(tenant_id: str, asset_id: str, *, deleted: bool) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "assetId": asset_id,
        "vid": vertex_id(tenant_id, asset_id),
        "deleted": deleted,
    }
