"""The LineageGraph contract, over every backend (Postgres; JanusGraph on Cassandra)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from core.domain.lineage import changed, newest_per_edge, outcome
from core.domain.model import Direction, EdgeOutcome, LineageEdge
from core.ports import LineageGraph

DOWN, UP, BOTH = Direction.DOWNSTREAM, Direction.UPSTREAM, Direction.BOTH
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def postgres_graph(stack: tuple[str, str]) -> AsyncIterator[LineageGraph]:
    from core.lineage.stores.postgres import PostgresLineageGraph
    from core.postgres import create_pool, migrate

    pool = await create_pool(stack[0], min_size=1, max_size=4)
    await migrate(pool)
    yield PostgresLineageGraph(pool)
    await pool.close()


@pytest_asyncio.fixture
async def janusgraph_graph(dist_stack: dict[str, str]) -> AsyncIterator[LineageGraph]:
    from core.lineage.stores.janusgraph import JanusGraphLineageGraph

    janus = JanusGraphLineageGraph(dist_stack["janusgraph"])
    await janus.connect()
    yield janus
    await janus.close()


@pytest.fixture(params=["postgres", "janusgraph"])
def graph(request: pytest.FixtureRequest) -> LineageGraph:
    """Each backend's store (the JanusGraph one starts the distributed stack, once)."""
    return request.getfixturevalue(f"{request.param}_graph")


@pytest.fixture
def tenant() -> str:
    return "g" + uuid.uuid4().hex[:12]


def edge(up: str, down: str, at: int = 0, kind: str = "derives", deleted: bool = False):
    return LineageEdge(up, down, kind, T0 + timedelta(seconds=at), deleted)


async def _written(graph: LineageGraph, tenant: str, edges: list[LineageEdge]) -> int:
    """Upserts; returns how many edges the write changed."""
    before = await graph.upsert_edges(tenant, edges)
    assert set(before) == {e.key for e in edges}
    return sum(changed(e, before[e.key]) for e in newest_per_edge(edges))


async def test_upserts_report_each_edge_as_it_was(graph: LineageGraph, tenant: str):
    ab, ac = edge("a", "b", 10), edge("a", "c", 10)
    first = await graph.upsert_edges(tenant, [ab, ac])
    assert [outcome(e, first[e.key]) for e in (ab, ac)] == [EdgeOutcome.CREATED] * 2
    assert await graph.get_edges(tenant, [ab.key, ("a", "nope", "derives")]) == {ab.key: ab}
    assert await graph.get_edges("someone-else", [ab.key]) == {}
    writes = [edge("a", "b", 5), edge("a", "c", 20, deleted=True), edge("x", "y", 1, deleted=True)]
    before = await graph.upsert_edges(tenant, writes)
    assert before[ab.key] == ab and before[ac.key] == ac and before[("x", "y", "derives")] is None
    assert [outcome(e, before[e.key]) for e in writes] == [
        EdgeOutcome.STALE,
        EdgeOutcome.DELETED,
        EdgeOutcome.UNCHANGED,  # deleting an edge nobody made: kept, so older upserts are stale
    ]
    revived = await graph.upsert_edges(tenant, [edge("a", "c", 30), edge("x", "y", 0)])
    assert outcome(edge("a", "c", 30), revived[ac.key]) == EdgeOutcome.CREATED
    assert revived[ac.key] == edge("a", "c", 20, deleted=True)
    assert outcome(edge("x", "y", 0), revived[("x", "y", "derives")]) == EdgeOutcome.STALE
    assert outcome(edge("a", "c", 40), edge("a", "c", 30)) == EdgeOutcome.UNCHANGED


async def test_edges_at_many_nodes_at_once_are_the_live_ones(graph: LineageGraph, tenant: str):
    live = [edge("a", "c"), edge("b", "c"), edge("x", "d")]
    await graph.upsert_edges(
        tenant, [*live, edge("y", "c", deleted=True), edge("z", "d"), edge("c", "e")]
    )
    await graph.delete_node(tenant, "z")
    into = await graph.edges_at(tenant, ["c", "d", "nobody", "c"], forward=False)
    assert sorted(e.key for e in into) == sorted(e.key for e in live)
    assert {e.source_event_time for e in into} == {T0}
    out = await graph.edges_at(tenant, ["a", "c", "z", "e"], forward=True)
    assert sorted(e.key for e in out) == [
        ("a", "c", "derives"),
        ("c", "e", "derives"),
        ("z", "d", "derives"),  # (only the far end's state counts: z was asked for)
    ]
    assert await graph.edges_at("someone-else", ["c", "d"], forward=False) == []


async def test_upserts_are_idempotent_and_last_writer_wins(graph: LineageGraph, tenant: str):
    assert await _written(graph, tenant, [edge("a", "b", 10), edge("b", "c", 10)]) == 2
    assert await _written(graph, tenant, [edge("a", "b", 10), edge("b", "c", 10)]) == 0
    assert await _written(graph, tenant, [edge("a", "b", 5, deleted=True)]) == 0  # older
    assert set((await graph.traverse(tenant, "a", DOWN, 5)).nodes) == {"a", "b", "c"}
    assert await _written(graph, tenant, [edge("a", "b", 20, deleted=True)]) == 1  # newer
    assert (await graph.traverse(tenant, "a", DOWN, 5)).nodes == {"a": 0}
    assert await _written(graph, tenant, [edge("a", "b", 30)]) == 1  # revived
    result = await graph.traverse(tenant, "a", DOWN, 5)
    assert result.nodes == {"a": 0, "b": 1, "c": 2}
    assert {(e.upstream_id, e.downstream_id, e.source_event_time) for e in result.edges} == {
        ("a", "b", T0 + timedelta(seconds=30)),
        ("b", "c", T0 + timedelta(seconds=10)),
    }
    # an edge named twice in a batch applies as if in time order; kinds are distinct edges
    assert (
        await _written(
            graph,
            tenant,
            [edge("c", "d", 9), edge("c", "d", 8, deleted=True), edge("c", "d", 1, "copies")],
        )
        == 2
    )
    assert len((await graph.traverse(tenant, "c", DOWN, 1)).edges) == 2


async def test_directions_and_depth(graph: LineageGraph, tenant: str):
    await graph.upsert_edges(
        tenant, [edge("a", "b"), edge("b", "c"), edge("c", "d"), edge("x", "b")]
    )
    assert (await graph.traverse(tenant, "a", DOWN, 1)).nodes == {"a": 0, "b": 1}
    assert (await graph.traverse(tenant, "a", DOWN, 3)).nodes == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert (await graph.traverse(tenant, "c", UP, 2)).nodes == {"c": 0, "b": 1, "a": 2, "x": 2}
    both = await graph.traverse(tenant, "b", BOTH, 1)
    assert both.nodes == {"b": 0, "a": 1, "x": 1, "c": 1}
    assert len(both.edges) == 3
    assert (await graph.traverse(tenant, "a", DOWN, 0)).nodes == {"a": 0}
    assert (await graph.traverse(tenant, "nobody", DOWN, 3)).nodes == {}


async def test_cycles_end(graph: LineageGraph, tenant: str):
    await graph.upsert_edges(tenant, [edge("a", "b"), edge("b", "c"), edge("c", "a")])
    result = await graph.traverse(tenant, "a", DOWN, 50)
    assert result.nodes == {"a": 0, "b": 1, "c": 2}
    assert len(result.edges) == 3
    assert (await graph.traverse(tenant, "a", BOTH, 50)).nodes == {"a": 0, "b": 1, "c": 1}


async def test_deleted_nodes_are_kept_but_not_walked(graph: LineageGraph, tenant: str):
    await graph.upsert_edges(tenant, [edge("a", "b"), edge("b", "c")])
    assert await graph.delete_node(tenant, "b") is True
    assert await graph.delete_node(tenant, "b") is False  # already
    assert await graph.delete_node(tenant, "zzz") is False  # unknown
    assert (await graph.traverse(tenant, "a", DOWN, 5)).nodes == {"a": 0}
    assert (await graph.traverse(tenant, "b", DOWN, 5)).nodes == {}
    await graph.upsert_node(tenant, "b")
    assert (await graph.traverse(tenant, "a", DOWN, 5)).nodes == {"a": 0, "b": 1, "c": 2}


async def test_wide_fan_out(graph: LineageGraph, tenant: str):
    children = [edge("root", f"child{i}") for i in range(10_000)]
    assert await _written(graph, tenant, children) == 10_000
    assert await _written(graph, tenant, children[:1000]) == 0
    result = await graph.traverse(tenant, "root", DOWN, 2)
    assert len(result.nodes) == 10_001 and len(result.edges) == 10_000
    assert (await graph.traverse(tenant, "child77", UP, 3)).nodes == {"child77": 0, "root": 1}
    capped = await graph.traverse(tenant, "root", DOWN, 2, max_nodes=100)
    assert capped.truncated and len(capped.nodes) == 100


async def test_deep_chain(graph: LineageGraph, tenant: str):
    await graph.upsert_edges(tenant, [edge(f"n{i}", f"n{i + 1}") for i in range(50)])
    result = await graph.traverse(tenant, "n0", DOWN, 50)
    assert len(result.nodes) == 51 and result.nodes["n50"] == 50
    assert "n50" not in (await graph.traverse(tenant, "n0", DOWN, 49)).nodes
    assert (await graph.traverse(tenant, "n50", UP, 100)).nodes["n0"] == 50


async def test_tenants_are_separate(graph: LineageGraph, tenant: str):
    other = tenant + "x"
    await graph.upsert_edges(tenant, [edge("a", "b")])
    await graph.upsert_edges(other, [edge("a", "z")])
    assert (await graph.traverse(tenant, "a", DOWN, 3)).nodes == {"a": 0, "b": 1}
    assert (await graph.traverse(other, "a", DOWN, 3)).nodes == {"a": 0, "z": 1}
    assert (await graph.traverse(other, "b", UP, 3)).nodes == {}


async def test_concurrent_writers_of_a_new_node_make_one_node(graph: LineageGraph, tenant: str):
    import asyncio

    twin = graph
    if type(graph).__name__ == "JanusGraphLineageGraph":  # its calls queue on one thread:
        from core.lineage.stores.janusgraph import JanusGraphLineageGraph

        twin = JanusGraphLineageGraph(graph._url)  # type: ignore[attr-defined]  # a 2nd writer
    try:
        await asyncio.gather(
            *(
                store.upsert_edges(tenant, [edge(f"p{i}-{k}", "shared") for k in range(20)])
                for i, store in enumerate((graph, twin, graph, twin))
            )
        )
    finally:
        if twin is not graph:
            await twin.close()  # type: ignore[attr-defined]
    # one "shared" node: walking up from it finds every writer's parents
    assert len((await graph.traverse(tenant, "shared", UP, 1)).nodes) == 1 + 4 * 20
