"""Measures the bytes one ingested asset takes in each store, for the cost estimate
(COST.md).

    .venv/bin/python scripts/storage.py [--assets 100000] [--profile local|distributed|both]

Per profile: its own stores, one `lily up`, a fresh tenant; the assets of bench_ingest (10%
tables, 90% columns, the columns with a type, a tenth of tables and columns tagged) streamed
through IngestMetadataStream until the bulk job has written them all and propagation is idle.
Then:
- Postgres (local profile: everything; distributed: only the job and policy rows): each
  table's growth (heap, indexes, TOAST) over the ingest;
- Cassandra (distributed): Lily's server is stopped and Cassandra drained by a clean stop
  (memtables flushed to SSTables, before any compaction), then the keyspace's directory
  sizes on disk, per table (the commit log, a transient, is not counted);
- NATS: the change stream's bytes per asset (its events are kept seven days).
Figures are bytes per asset, the columns and tables together, replication factor 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import grpc
import nats
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.events.nats import CHANGES_STREAM
from core.stack import EmbeddedStack, free_port
from scripts import devstack
from scripts.bench_ingest import generate, lily_ingest
from scripts.benchkit import lily_up, new_tenant, progress, propagation_idle

KEYSPACE = "lily_storage"
_SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind = 'r'
"""


async def pg_sizes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {r["relname"]: r["bytes"] for r in await conn.fetch(_SIZES, timeout=60)}
    finally:
        await conn.close()


async def stream_bytes(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(CHANGES_STREAM)).state.bytes
    finally:
        await nc.close()


def grown(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    out = {t: (after[t] - before.get(t, 0)) / n for t in after}
    return {t: b for t, b in sorted(out.items(), key=lambda x: -x[1]) if b > 0}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def show(title: str, per_table: dict[str, float]) -> None:
    print(f"  {title}: {sum(per_table.values()):,.0f} bytes per asset")
    for table, b in per_table.items():
        print(f"    {table:<40} {b:>8,.0f}")


async def measure(profile: str, n: int) -> None:
    data = Path(tempfile.mkdtemp(prefix=f"lily-storage-{profile}-"))
    print(f"\n{profile} profile: {n:,} assets; data under {data}")
    endpoints: dict[str, str] = {}
    env: dict[str, str] = {}
    if profile == "distributed":
        endpoints = await asyncio.to_thread(devstack.up, data / "dist")
        env = {
            "LILY_STORES__TYPE": "distributed",
            "LILY_STORES__CASSANDRA__HOSTS": endpoints["cassandra"],
            "LILY_STORES__CASSANDRA__KEYSPACE": KEYSPACE,
            "LILY_STORES__JANUSGRAPH_URL": endpoints["janusgraph"],
        }
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    port = free_port()
    server = await lily_up(data, dsn, url, port, 0, **env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            md = await new_tenant(ch, data, f"storage{uuid.uuid4().hex[:6]}")
            pg0, nats0 = await pg_sizes(dsn), await stream_bytes(url)
            _, _, job = await lily_ingest(metadata_grpc.MetadataServiceStub(ch), md, generate(n))
            if job.state != metadata_pb.BULK_JOB_STATE_SUCCEEDED or job.written != n:
                raise SystemExit(f"bulk job did not write every asset: {job}")
            await propagation_idle(url)
            pg1, nats1 = await pg_sizes(dsn), await stream_bytes(url)
        print(file=sys.stderr)
        show("Postgres (heap, indexes, TOAST)", grown(pg0, pg1, n))
        print(f"  NATS change stream: {(nats1 - nats0) / n:,.0f} bytes per asset")
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await stack.stop()
        if endpoints:
            progress("stopping Cassandra cleanly (its memtables are flushed)")
            await asyncio.to_thread(devstack.down, data / "dist")
    if endpoints:
        keyspace = devstack.Cassandra(data / "dist").home / "data" / KEYSPACE
        tables = {t.name.rsplit("-", 1)[0]: dir_bytes(t) / n for t in keyspace.iterdir()}
        show(
            "Cassandra (SSTables after a drain, before compaction)",
            {t: b for t, b in sorted(tables.items(), key=lambda x: -x[1]) if b > 0},
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description="Bytes per asset in each store")
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--profile", choices=["local", "distributed", "both"], default="both")
    args = parser.parse_args()
    for profile in ("local", "distributed"):
        if args.profile in (profile, "both"):
            await measure(profile, args.assets)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
