"""Benchmark: downstream lineage traversal at depth 5 on a 100,000-edge graph, on the embedded
profile's graph store (Postgres), and with --distributed on JanusGraph on Cassandra too (which
it then assembles and starts; the embedded run needs neither), in one run.

    .venv/bin/python scripts/bench_lineage.py [--edges 100000] [--walks 300] [--distributed]

The graph: nodes n0..n(E/2), each with two downstream edges to nodes a little further on (a
pipeline-like DAG, so a depth-5 walk reaches up to 63 nodes). Every store gets the same edges;
then the same random starts are walked on each, alternately, after 20 warm-up walks.
Figures: p50/p99 per store; the baseline is one level of the same walk on Postgres (one
indexed query: edges_at), with the ratio of the walk's p99 to it; with --distributed, the
ratio JanusGraph/Postgres too."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.domain.model import Direction, LineageEdge
from core.lineage.stores.janusgraph import JanusGraphLineageGraph
from core.lineage.stores.postgres import PostgresLineageGraph
from core.ports import LineageGraph
from core.postgres import create_pool, migrate
from core.stack import EmbeddedStack
from scripts import devstack
from scripts.benchkit import pct, progress

TENANT = "bench"


def generate(n_edges: int) -> list[LineageEdge]:
    rng = random.Random(5)
    nodes = n_edges // 2
    at = datetime(2026, 1, 1, tzinfo=UTC)
    edges = []
    for i in range(nodes):
        for _ in range(2):
            j = min(nodes, i + rng.randint(1, 200))
            edges.append(LineageEdge(f"n{i}", f"n{j}", "derives", at))
    return edges


async def load(
    store: LineageGraph, edges: list[LineageEdge], label: str, chunk: int = 2000
) -> float:
    start = time.perf_counter()
    for i in range(0, len(edges), chunk):
        await store.upsert_edges(TENANT, edges[i : i + chunk])
        progress(f"{label}: loaded {min(i + chunk, len(edges)):,}/{len(edges):,} edges")
    return time.perf_counter() - start


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily lineage traversal benchmark")
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--walks", type=int, default=300)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument(
        "--distributed", action="store_true", help="walk JanusGraph on Cassandra too"
    )
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="lily-bench-lineage-"))
    print(f"lily lineage bench: {args.edges:,} edges; data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, _ = await stack.start()
    pool = await create_pool(dsn)
    await migrate(pool)
    janus: JanusGraphLineageGraph | None = None
    try:
        postgres = PostgresLineageGraph(pool)
        stores: dict[str, LineageGraph] = {"postgres": postgres}
        if args.distributed:
            endpoints = await asyncio.to_thread(devstack.up, data / "dist")
            janus = JanusGraphLineageGraph(endpoints["janusgraph"], timeout=120)
            await janus.connect()
            stores["janusgraph"] = janus
        edges = generate(args.edges)
        loaded = {name: await load(store, edges, name) for name, store in stores.items()}
        starts = [f"n{i}" for i in random.Random(9).choices(range(args.edges // 2), k=args.walks)]
        for node in starts[:20]:  # warm up (the JVM compiles the walk script on first use)
            for store in stores.values():
                await store.traverse(TENANT, node, Direction.DOWNSTREAM, args.depth)
        ms: dict[str, list[float]] = {name: [] for name in stores}
        one_level: list[float] = []
        reached: dict[str, list[int]] = {name: [] for name in stores}
        for k, node in enumerate(starts):
            t0 = time.perf_counter()
            await postgres.edges_at(TENANT, [node], forward=True)
            one_level.append((time.perf_counter() - t0) * 1000)
            for name, store in stores.items():
                t0 = time.perf_counter()
                result = await store.traverse(TENANT, node, Direction.DOWNSTREAM, args.depth)
                ms[name].append((time.perf_counter() - t0) * 1000)
                reached[name].append(len(result.nodes))
            if len({r[-1] for r in reached.values()}) > 1:
                raise SystemExit(f"the stores disagree from {node}: {reached}")
            if k % 50 == 0:
                progress(f"walks: {k}/{len(starts)}")
        print(file=sys.stderr)
        print(f"\nload ({args.edges:,} edges, chunks of 2,000)")
        for name, seconds in loaded.items():
            print(f"  {name:<11} {args.edges / seconds:>9,.0f} edges/s ({seconds:.1f} s)")
        print(
            f"\ndownstream traversal, depth {args.depth}, {args.walks} random starts "
            f"(nodes reached: median {statistics.median(reached['postgres']):.0f}, "
            f"max {max(reached['postgres'])})"
        )
        for name, values in {**ms, "baseline: one level on postgres": one_level}.items():
            print(
                f"  {name:<11} p50 {statistics.median(values):7.2f} ms  "
                f"p99 {pct(values, 99):7.2f} ms"
            )
        walk = pct(ms["postgres"], 99) / pct(one_level, 99)
        print(f"  ratio p99 postgres walk/one level {walk:6.2f}")
        if janus is not None:
            ratio = pct(ms["janusgraph"], 99) / pct(ms["postgres"], 99)
            print(
                f"  ratio p99 janusgraph/postgres {ratio:6.2f}   (target: JanusGraph p99 < 100 ms)"
            )
    finally:
        if janus is not None:
            await janus.close()
            await asyncio.to_thread(devstack.down, data / "dist")
        await pool.close()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
