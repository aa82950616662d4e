"""Benchmark: ingest into the distributed profile's Cassandra through Lily vs the raw driver.

    .venv/bin/python scripts/bench_cassandra_ingest.py [--assets 200000] [--rounds 1]
        [--cassandra HOST:PORT --janusgraph WS_URL]   # a running dev stack; else one is started

Starts the dev stack (scripts/devstack.py) unless given one, an embedded Postgres and NATS, and
`lily up --profile distributed`, then per round (fresh tenants each time):
1. raw:  the same asset rows (10% tables, 90% columns) written straight into the assets table
         with cassandra-driver prepared statements, two ways: execute_concurrent (100 in
         flight) and unlogged batches of 24 through execute_concurrent; the faster is the ceiling
2. lily: the assets streamed through IngestMetadataStream, timed until the bulk job reports every
         asset written (tables by the server, columns by the ingest workers from JetStream);
         Lily also writes the name directory, the audit trail and the events' intents
The figure is lily's assets/s as a ratio of the ceiling's, measured in the same run.
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
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from cassandra.concurrent import execute_concurrent, execute_concurrent_with_args
from cassandra.query import BatchStatement, BatchType
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core import cassandra
from core.domain.rules import asset_id_for
from core.stack import EmbeddedStack, free_port
from scripts import devstack
from scripts.bench_ingest import generate, lily_ingest, settle
from scripts.benchkit import lily_up, progress

KEYSPACE = "lily_bench"
RAW_INSERT = (
    f"INSERT INTO {KEYSPACE}.assets (tenant_id, asset_id, qualified_name, asset_type, name,"
    " description, owners, data_source, parent_qualified_name, parent_id, tags, tag_names,"
    " business_terms, attributes, external_id, version, is_deleted, created_at, updated_at,"
    " source_event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, false, ?, ?, ?)"
    " USING TIMESTAMP ?"
)


def raw_rows(assets: list[common_pb.AssetInput], tenant: str) -> list[tuple]:
    now = time.time_ns() // 1000
    return [
        (
            tenant,
            asset_id_for(tenant, a.qualified_name),
            a.qualified_name,
            a.asset_type,
            a.name,
            a.description,
            list(a.owners),
            a.data_source,
            a.parent_qualified_name,
            asset_id_for(tenant, a.parent_qualified_name) if a.parent_qualified_name else "",
            "[" + ",".join(f'{{"n":"{t.name}","s":1}}' for t in a.tags) + "]",
            {t.name for t in a.tags},
            [],
            dict(a.attributes),
            "",
            now,
            now,
            now,
            now,
        )
        for a in assets
    ]


async def raw_ingest(session, assets, tenant: str) -> tuple[float, float]:
    """Seconds for execute_concurrent one by one, and in unlogged batches of 24."""
    statement = await asyncio.to_thread(session.prepare, RAW_INSERT)
    await settle()
    rows = raw_rows(assets, tenant + "a")
    progress("raw: execute_concurrent ...")
    start = time.perf_counter()
    await asyncio.to_thread(execute_concurrent_with_args, session, statement, rows, concurrency=100)
    single = time.perf_counter() - start
    await settle()
    rows = raw_rows(assets, tenant + "b")
    progress("raw: unlogged batches ...")
    start = time.perf_counter()
    batches = []
    for i in range(0, len(rows), 24):
        batch = BatchStatement(BatchType.UNLOGGED)
        for row in rows[i : i + 24]:
            batch.add(statement, row)
        batches.append((batch, ()))
    await asyncio.to_thread(execute_concurrent, session, batches, concurrency=64)
    return single, time.perf_counter() - start


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily ingest benchmark on Cassandra")
    parser.add_argument("--assets", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cassandra", help="a running Cassandra host:port (else one starts)")
    parser.add_argument("--janusgraph", help="a running JanusGraph ws:// URL")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="lily-bench-cassandra-"))
    print(f"lily bench: {args.assets:,} assets into Cassandra; data under {data}")
    started_stack = not args.cassandra
    if started_stack:
        endpoints = await asyncio.to_thread(devstack.up, data / "dist")
    else:
        endpoints = {"cassandra": args.cassandra, "janusgraph": args.janusgraph}
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    session = await cassandra.connect(endpoints["cassandra"], timeout=30)
    port = free_port()
    server = await lily_up(
        data,
        dsn,
        url,
        port,
        0,
        LILY_PROFILE="distributed",
        LILY_CASSANDRA__HOSTS=endpoints["cassandra"],
        LILY_CASSANDRA__KEYSPACE=KEYSPACE,
        LILY_JANUSGRAPH_URL=endpoints["janusgraph"],
    )
    try:
        assets = generate(args.assets)
        rounds = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            for r in range(args.rounds):
                md = (("x-lily-tenant", f"bench{r}"),)
                single_s, batched_s = await raw_ingest(session, assets, f"benchraw{r}")
                lily_s, accepted_s, job = await lily_ingest(stub, md, assets)
                if job.state != metadata_pb.BULK_JOB_STATE_SUCCEEDED or job.written != len(assets):
                    raise SystemExit(f"bulk job did not write every asset: {job}")
                rounds.append((single_s, batched_s, lily_s, accepted_s))
        print(file=sys.stderr)
        n = len(assets)
        print(f"\ningest into Cassandra ({n:,} assets, {args.rounds} round(s); jobs SUCCEEDED)")
        for r, (single_s, batched_s, lily_s, accepted_s) in enumerate(rounds):
            ceiling = min(single_s, batched_s)
            print(
                f"  round {r}: raw execute_concurrent {n / single_s:>7,.0f} assets/s   "
                f"raw unlogged batches {n / batched_s:>7,.0f} assets/s\n"
                f"           lily {n / lily_s:>7,.0f} assets/s ({lily_s:.1f} s; stream "
                f"returned after {accepted_s:.1f} s)   ratio lily/best raw {ceiling / lily_s:.2f}"
                f"   (vs execute_concurrent {single_s / lily_s:.2f})"
            )
        ratio = statistics.median(min(s, b) / lily_s for s, b, lily_s, _ in rounds)
        print(f"  ratio lily/best raw, median of rounds {ratio:.2f}   (target >= 0.6)")
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await cassandra.close(session)
        await stack.stop()
        if started_stack:
            await asyncio.to_thread(devstack.down, data / "dist")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
