"""Benchmark: a PII tag on the root of a 1,000-node downstream tree, until every node shows
it and its event is published; p50/p99 over the runs, against a raw baseline in the same run.
With --fanout N: a root with N direct children instead (the issue's 10,000 fan-out), the
propagation job's progress shown as it moves.

    .venv/bin/python scripts/bench_propagation.py [--runs 100] [--warmup 3] [--fanout 10000]
        [--profile local|distributed]
        [--cassandra HOST:PORT --janusgraph WS_URL]   # distributed: a running dev stack

Starts an embedded Postgres and NATS and `lily up` (the distributed profile on the given dev
stack, else the local one), ingests the tree (levels of 1, 3, 6, ... 250 tables, 10 levels
deep, each node's parent picked in turn from the level above: fan-outs of 1 to 4) and its
999 edges, then per run: tags the root (UpdateTags) and times until the 999 downstream
assets' `asset.tagged` events, caused by that tagging, have all arrived on NATS (an event is
published after its write commits); then untags it and waits for the 999 `untagged` events
(not timed). The baseline, per run: the same 999 tag changes done directly, one UpdateTags
call per asset, 32 at a time, timed until all 999 events have arrived: what a client
tagging the tree itself would wait.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import nats
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedStack, free_port
from scripts.benchkit import ingest_tables, lily_up, new_tenant, pct, progress, propagation_idle

LEVELS = [1, 3, 6, 12, 24, 48, 96, 160, 200, 200, 250]  # 1,000 nodes, 10 steps deep


def tree() -> tuple[list[str], list[tuple[str, str]]]:
    names: list[str] = []
    edges: list[tuple[str, str]] = []
    above: list[str] = []
    for depth, size in enumerate(LEVELS):
        level = [f"pg://tree/l{depth}/n{i}" for i in range(size)]
        edges += [(above[i % len(above)], name) for i, name in enumerate(level)] if above else []
        names += level
        above = level
    return names, edges


def star(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    names = ["pg://star/root", *(f"pg://star/c{i:06}" for i in range(n))]
    return names, [(names[0], c) for c in names[1:]]


class Events:
    """Counts asset.tagged/untagged events per cause (propagated) and per asset (direct)."""

    def __init__(self) -> None:
        self.by_cause: dict[str, set[str]] = {}
        self.direct: set[str] = set()
        self.last_direct: dict[str, str] = {}  # asset -> its latest direct event
        self.changed = asyncio.Event()

    async def on_msg(self, msg) -> None:  # type: ignore[no-untyped-def]
        event = events_pb.ChangeEvent.FromString(msg.data)
        if event.cause_event_id:
            self.by_cause.setdefault(event.cause_event_id, set()).add(event.asset_id)
        else:
            self.direct.add(event.asset_id)
            self.last_direct[event.asset_id] = event.event_id
        self.changed.set()

    async def until(self, done) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(600):
            while not done():
                self.changed.clear()
                await self.changed.wait()


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily propagation benchmark")
    parser.add_argument(
        "--runs", type=int, default=100, help="counted runs (at least 100: a p99 of fewer is a max)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="runs first, not counted")
    parser.add_argument("--fanout", type=int, help="a root with this many children, not a tree")
    parser.add_argument("--profile", choices=["local", "distributed"], default="local")
    parser.add_argument("--cassandra", help="distributed: the dev stack's Cassandra host:port")
    parser.add_argument("--janusgraph", help="distributed: the dev stack's JanusGraph ws:// URL")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lily-bench-propagation-"))
    shape = f"a fan-out of {args.fanout:,}" if args.fanout else "a 1,000-node tree"
    print(f"lily bench: propagation over {shape}, {args.profile} profile; data {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    env = {}
    if args.profile == "distributed":
        env = {
            "LILY_STORES__TYPE": "distributed",
            "LILY_STORES__CASSANDRA__HOSTS": args.cassandra,
            "LILY_STORES__CASSANDRA__KEYSPACE": "lily_bench_propagation",
            "LILY_STORES__JANUSGRAPH_URL": args.janusgraph,
        }
    port = free_port()
    server = await lily_up(data, dsn, url, port, 0, **env)
    tenant = "prop" + uuid.uuid4().hex[:8]
    nc = await nats.connect(url)
    events = Events()
    await nc.subscribe(f"lily.{tenant}.asset.*", cb=events.on_msg)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            md = await new_tenant(ch, data, tenant)
            stub = metadata_grpc.MetadataServiceStub(ch)
            lineage = lineage_grpc.LineageServiceStub(ch)
            names, edges = star(args.fanout) if args.fanout else tree()
            ids = await ingest_tables(stub, md, names)
            for i in range(0, len(edges), 500):
                progress(f"ingesting edges: {i:,} of {len(edges):,}")
                await lineage.IngestRelationships(
                    lineage_pb.IngestRelationshipsRequest(
                        relationships=[
                            lineage_pb.RelationshipInput(
                                upstream=lineage_pb.AssetRef(qualified_name=u),
                                downstream=lineage_pb.AssetRef(qualified_name=d),
                            )
                            for u, d in edges[i : i + 500]
                        ]
                    ),
                    metadata=md,
                    timeout=60,
                )
            root, downstream = ids[names[0]], [ids[n] for n in names[1:]]
            drained = await propagation_idle(url)
            print(
                f"  the worker took {drained:.1f} s more for the "
                f"{len(names) + len(edges):,} creation events"
            )

            async def tag(asset_id: str, name: str, remove: bool = False) -> str:
                request = metadata_pb.UpdateTagsRequest(asset_id=asset_id)
                if remove:
                    request.remove.append(name)
                else:
                    request.add.append(common_pb.TagAssignment(name=name))
                await stub.UpdateTags(request, metadata=md, timeout=30)
                return asset_id

            gate = asyncio.Semaphore(32)

            async def one(asset_id: str, remove: bool) -> None:
                async with gate:
                    await tag(asset_id, "RAWBENCH", remove)

            def propagated_since(before: set[str]):  # type: ignore[no-untyped-def]
                """True once a cause not in `before` has its 999 downstream events."""
                return lambda: any(
                    len(assets) >= len(downstream)
                    for cause, assets in events.by_cause.items()
                    if cause not in before
                )

            async def follow_job(start: float) -> None:
                """Shows the root tag's propagation job as it moves (its id: the tag's event
                id), until it has succeeded."""
                before = events.last_direct.get(root)
                await events.until(lambda: events.last_direct.get(root) != before)
                job_id = events.last_direct[root]
                seen = None
                while True:
                    try:
                        job = (
                            await lineage.GetPropagationJob(
                                lineage_pb.GetPropagationJobRequest(job_id=job_id),
                                metadata=md,
                                timeout=10,
                            )
                        ).job
                    except grpc.aio.AioRpcError:
                        job = None  # not started yet
                    if job is not None:
                        now = (job.state, job.assets_done, job.assets_total, job.assets_changed)
                        if now != seen:
                            seen = now
                            state = lineage_pb.PropagationJobState.Name(job.state)
                            print(
                                f"    {time.perf_counter() - start:6.2f} s  job …{job_id[-8:]} "
                                f"{state.removeprefix('PROPAGATION_JOB_STATE_')}: "
                                f"{job.assets_done:,}/{job.assets_total:,} done, "
                                f"{job.assets_changed:,} changed"
                            )
                        if job.state == lineage_pb.PROPAGATION_JOB_STATE_SUCCEEDED:
                            return
                        if job.state == lineage_pb.PROPAGATION_JOB_STATE_FAILED:
                            raise SystemExit(f"propagation job failed: {job.error}")
                    await asyncio.sleep(0.1)

            lily_ms, raw_ms = [], []
            for run in range(-args.warmup, args.runs):  # (negative: warm-up, not counted)
                # lily: tag the root, wait for the propagated events of that tagging
                done = propagated_since(set(events.by_cause))
                start = time.perf_counter()
                await tag(root, "PII")
                if args.fanout:
                    await follow_job(start)
                await events.until(done)
                lily_ms.append((time.perf_counter() - start) * 1000)
                done = propagated_since(set(events.by_cause))
                await tag(root, "PII", remove=True)
                await events.until(done)
                # raw: the same 999 tag changes made directly, 32 calls at a time (a tag
                # that does not propagate), then taken off again (not timed)
                for remove in (False, True):
                    events.direct.clear()
                    start = time.perf_counter()
                    await asyncio.gather(*(one(a, remove) for a in downstream))
                    await events.until(lambda: len(events.direct) >= len(downstream))
                    if not remove:
                        raw_ms.append((time.perf_counter() - start) * 1000)
                if run < 0:
                    lily_ms.clear()
                    raw_ms.clear()
                    progress(f"warm-up {run + args.warmup + 1}/{args.warmup}")
                    continue
                progress(
                    f"run {run + 1}/{args.runs}: lily {lily_ms[-1]:.0f} ms, raw {raw_ms[-1]:.0f} ms"
                )
        print(file=sys.stderr)
        print(
            f"\npropagation of one tag to {len(downstream):,} downstream assets "
            f"({args.profile}, {args.runs} runs after {args.warmup} to warm up)"
        )
        for label, ms in (("lily (tag the root)", lily_ms), ("raw (tag each asset)", raw_ms)):
            print(f"  {label:<22} p50 {pct(ms, 50):7.0f} ms   p99 {pct(ms, 99):7.0f} ms")
        ratio = statistics.median(a / b for a, b in zip(lily_ms, raw_ms, strict=True))
        target = "completes, in transactions of <= 500" if args.fanout else "lily p99 < 1,000 ms"
        print(f"  lily / raw, median of runs {ratio:.2f}   (target: {target})")
    finally:
        await nc.close()
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
