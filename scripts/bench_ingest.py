"""Benchmark: ingest through Lily vs the raw Postgres path, and read/watch latency, in one run.

    .venv/bin/python scripts/bench_ingest.py [--assets 100000] [--rounds 3]

Starts its own embedded Postgres and NATS and a `lily up` server process against them, then:
1. raw:  the same rows written straight to Postgres with asyncpg executemany of the same upsert
2. lily: the rows (10% tables, 90% columns) streamed through IngestMetadataStream, timed until the
         bulk job reports every asset written (the eventual ones included)
   1 and 2 alternate for --rounds rounds (fresh tenants each time); the median ratio is the figure,
   since a shared machine's noise can swing a single run either way
3. GetMetadata p50/p99 over gRPC vs a raw asyncpg SELECT by primary key
4. WatchChanges delivery p50/p99 (write RPC sent -> event received) vs the raw path's row
   upsert followed by a NATS message to a subscriber
Figures are printed as ratios against the baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import grpc
import nats
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.domain.rules import asset_id_for
from core.postgres import create_pool, migrate
from core.stack import EmbeddedStack, free_port
from scripts.benchkit import (
    CpuMeter,
    cpu_delta,
    lily_up,
    new_tenant,
    pct,
    progress,
    propagation_idle,
)

RAW_UPSERT = """
INSERT INTO assets (tenant_id, asset_id, qualified_name, asset_type, name, description, owners,
    data_source, parent_qualified_name, parent_id, tags, tag_names, business_terms, attributes,
    external_id, version, is_deleted, created_at, updated_at, source_event_time)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14::jsonb, $15, 1, false,
        $16, $16, $16)
ON CONFLICT (tenant_id, asset_id) DO UPDATE SET
    qualified_name = EXCLUDED.qualified_name, asset_type = EXCLUDED.asset_type,
    name = EXCLUDED.name, description = EXCLUDED.description, owners = EXCLUDED.owners,
    data_source = EXCLUDED.data_source, parent_qualified_name = EXCLUDED.parent_qualified_name,
    parent_id = EXCLUDED.parent_id, tags = EXCLUDED.tags, tag_names = EXCLUDED.tag_names,
    business_terms = EXCLUDED.business_terms, attributes = EXCLUDED.attributes,
    external_id = EXCLUDED.external_id, version = assets.version + 1,
    updated_at = EXCLUDED.updated_at, source_event_time = EXCLUDED.source_event_time
"""


async def settle(nats_url: str | None = None) -> None:
    """Lets the previous phase's background work (event publishing, propagation of its new
    assets when given the NATS URL, vacuum) finish first."""
    if nats_url:
        await propagation_idle(nats_url)
    await asyncio.sleep(1.0)


def generate(n: int) -> list[common_pb.AssetInput]:
    """n assets: 10% tables, each followed by 9 of its columns."""
    out = []
    for t in range(max(1, n // 10)):
        table = f"snowflake://acct/db/schema{t % 50}/table{t}"
        out.append(
            common_pb.AssetInput(
                qualified_name=table,
                asset_type=common_pb.ASSET_TYPE_TABLE,
                name=f"table{t}",
                description="a generated table",
                owners=["data-eng"],
                data_source="snowflake",
                tags=[common_pb.TagAssignment(name="gold")] if t % 10 == 0 else [],
            )
        )
        for c in range(9):
            out.append(
                common_pb.AssetInput(
                    qualified_name=f"{table}/col{c}",
                    asset_type=common_pb.ASSET_TYPE_COLUMN,
                    name=f"col{c}",
                    data_source="snowflake",
                    parent_qualified_name=table,
                    attributes={"data_type": "varchar"},
                    tags=[common_pb.TagAssignment(name="PII")] if c == 0 else [],
                )
            )
    return out[:n]


def cpu_per(cpu: dict[str, float], n: int) -> str:
    """CPU-microseconds per asset of each process, and of all of them."""
    each = ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in cpu.items())
    return f"{each}; all {sum(cpu.values()) / n * 1e6:.0f}"


def latency(label: str, ms: list[float], note: str = "") -> None:
    p50, p99 = statistics.median(ms), pct(ms, 99)
    print(f"  {label:<18} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {note}".rstrip())


async def raw_ingest(pool: asyncpg.Pool, assets: list[common_pb.AssetInput], tenant: str) -> float:
    now = datetime.now(UTC)
    rows = [
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
            json.dumps([{"n": t.name, "s": 1, "v": t.value} for t in a.tags]),
            [t.name for t in a.tags],
            list(a.business_terms),
            json.dumps(dict(a.attributes)),
            a.external_id,
            now,
        )
        for a in assets
    ]
    start = time.perf_counter()
    async with pool.acquire() as conn:
        for i in range(0, len(rows), 1000):
            await conn.executemany(RAW_UPSERT, rows[i : i + 1000])
            progress(f"raw: {i + 1000:,}/{len(rows):,} rows")
    return time.perf_counter() - start


async def lily_ingest(
    stub: metadata_grpc.MetadataServiceStub,
    md: tuple,
    assets: list[common_pb.AssetInput],
    nats_url: str | None = None,
) -> tuple[float, float, metadata_pb.BulkJob]:
    await settle(nats_url)

    async def batches():
        for i in range(0, len(assets), 1000):
            yield metadata_pb.IngestMetadataStreamRequest(assets=assets[i : i + 1000])
            progress(f"lily: sent {min(i + 1000, len(assets)):,}/{len(assets):,}")

    start = time.perf_counter()
    summary = await stub.IngestMetadataStream(batches(), metadata=md, timeout=1800)
    accepted_s = time.perf_counter() - start
    while True:
        job = (
            await stub.GetBulkJob(
                metadata_pb.GetBulkJobRequest(job_id=summary.bulk_job_id), metadata=md, timeout=10
            )
        ).job
        progress(f"lily: written {job.written:,}/{job.accepted:,}")
        if job.state in (metadata_pb.BULK_JOB_STATE_SUCCEEDED, metadata_pb.BULK_JOB_STATE_FAILED):
            return time.perf_counter() - start, accepted_s, job
        await asyncio.sleep(0.02)


async def lily_phase(
    stub: metadata_grpc.MetadataServiceStub,
    md: tuple,
    assets: list[common_pb.AssetInput],
    url: str,
    meter: CpuMeter,
) -> tuple[float, float, metadata_pb.BulkJob, dict[str, float]]:
    """Lily's ingest, and its CPU: the ingest and the work its events set off in the
    background (the propagation worker's), waited for before the meter is read."""
    await settle(url)
    c0 = meter.read()
    lily_s, accepted_s, job = await lily_ingest(stub, md, assets)
    await propagation_idle(url)
    return lily_s, accepted_s, job, cpu_delta(c0, meter.read())


async def raw_phase(
    pool: asyncpg.Pool, assets: list[common_pb.AssetInput], tenant: str, url: str, meter: CpuMeter
) -> tuple[float, dict[str, float]]:
    """The raw path and its CPU (the Lily phase's leftovers settled first, not charged)."""
    await settle(url)
    c0 = meter.read()
    raw_s = await raw_ingest(pool, assets, tenant)
    return raw_s, cpu_delta(c0, meter.read())


async def get_latency(
    stub, md, tenant: str, pool, ids: list[str], n: int
) -> tuple[list[float], list[float]]:
    grpc_ms, raw_ms = [], []
    sample = random.Random(7).choices(ids, k=n)
    async with pool.acquire() as conn:
        stmt = await conn.prepare("SELECT * FROM assets WHERE tenant_id = $1 AND asset_id = $2")
        for i, aid in enumerate(sample):
            t0 = time.perf_counter()
            await stub.GetMetadata(
                metadata_pb.GetMetadataRequest(asset_id=aid), metadata=md, timeout=5
            )
            t1 = time.perf_counter()
            await stmt.fetchrow(tenant, aid)
            t2 = time.perf_counter()
            grpc_ms.append((t1 - t0) * 1000)
            raw_ms.append((t2 - t1) * 1000)
            if i % 200 == 0:
                progress(f"GetMetadata: {i}/{n}")
    return grpc_ms, raw_ms


async def watch_latency(
    stub, md, nats_url: str, n: int, pool: asyncpg.Pool
) -> tuple[list[float], list[float]]:
    call = stub.WatchChanges(
        metadata_pb.WatchChangesRequest(asset_types=[common_pb.ASSET_TYPE_TABLE]), metadata=md
    )
    await call.initial_metadata()
    watch_ms = []
    for i in range(n):
        qn = f"bench://watch/t{i}"
        t0 = time.perf_counter()
        await stub.IngestMetadata(
            metadata_pb.IngestMetadataRequest(
                assets=[
                    common_pb.AssetInput(qualified_name=qn, asset_type=common_pb.ASSET_TYPE_TABLE)
                ]
            ),
            metadata=md,
            timeout=5,
        )
        while (await asyncio.wait_for(call.read(), 5)).event.qualified_name != qn:
            pass
        watch_ms.append((time.perf_counter() - t0) * 1000)
        progress(f"WatchChanges: {i + 1}/{n}")
    call.cancel()
    # the baseline: what a change and its notice cost without Lily: the row written to
    # Postgres (the same upsert), then a message on NATS to a subscriber
    nc = await nats.connect(nats_url)
    sub = await nc.subscribe("bench.rtt")
    raw_ms = []
    tenant = "benchwatch"
    async with pool.acquire() as conn:
        for i in range(n):
            qn = f"bench://watch/raw{i}"
            now = datetime.now(UTC)
            aid = asset_id_for(tenant, qn)
            empty: tuple[object, ...] = ("", "", [], "", "", "", "[]", [], [], "{}", "")
            row = (tenant, aid, qn, common_pb.ASSET_TYPE_TABLE, *empty, now)
            t0 = time.perf_counter()
            await conn.execute(RAW_UPSERT, *row)
            await nc.publish("bench.rtt", qn.encode())
            await sub.next_msg(timeout=5)
            raw_ms.append((time.perf_counter() - t0) * 1000)
    await nc.close()
    return watch_ms, raw_ms


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily ingest/read/watch benchmark")
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="raw and lily runs, alternated; the median counts"
    )
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--watches", type=int, default=200)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="lily-bench-"))
    print(f"lily bench: {args.assets:,} assets (10% tables, 90% columns); data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    pool = await create_pool(dsn)
    await migrate(pool)
    port = free_port()
    server = await lily_up(data, dsn, url, port, 0)
    try:
        assets = generate(args.assets)
        meter = CpuMeter(server.pid, data / "stack")
        rounds: list[tuple[float, float, float, dict[str, float], dict[str, float]]] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            first: tuple[tuple[str, str], ...] = ()
            for r in range(args.rounds):
                # Fresh tenants each round: both paths insert new rows every time. Both share
                # one table that grows as they go, so the order alternates (raw first in even
                # rounds, Lily first in odd ones) lest the path that goes first always meet
                # the smaller indexes.
                md = await new_tenant(ch, data, f"bench{r}")
                first = first or md

                lily = lily_phase(stub, md, assets, url, meter)
                raw = raw_phase(pool, assets, f"benchraw{r}", url, meter)
                if r % 2:
                    lily_s, accepted_s, job, lily_cpu = await lily
                    raw_s, raw_cpu = await raw
                else:
                    raw_s, raw_cpu = await raw
                    lily_s, accepted_s, job, lily_cpu = await lily
                if job.state != metadata_pb.BULK_JOB_STATE_SUCCEEDED or job.written != len(assets):
                    raise SystemExit(f"bulk job did not write every asset: {job}")
                rounds.append((raw_s, lily_s, accepted_s, raw_cpu, lily_cpu))
            assert first
            ids = [asset_id_for("bench0", a.qualified_name) for a in assets]
            await settle(url)
            get_ms, get_raw_ms = await get_latency(stub, first, "bench0", pool, ids, args.gets)
            watch_ms, watch_raw_ms = await watch_latency(stub, first, url, args.watches, pool)
        print(file=sys.stderr)
        n = len(assets)
        print(f"\ningest ({n:,} assets, {args.rounds} rounds; every bulk job SUCCEEDED)")
        for r, (raw_s, lily_s, accepted_s, raw_cpu, lily_cpu) in enumerate(rounds):
            print(
                f"  round {r}: raw {n / raw_s:>7,.0f} assets/s ({raw_s:.2f} s)   "
                f"lily {n / lily_s:>7,.0f} assets/s ({lily_s:.2f} s; stream returned after "
                f"{accepted_s:.2f} s)   ratio {raw_s / lily_s:.2f}"
            )
            print(f"    CPU-us per asset, raw:  {cpu_per(raw_cpu, n)}")
            print(f"    CPU-us per asset, lily: {cpu_per(lily_cpu, n)}")
        ratio = statistics.median(raw_s / lily_s for raw_s, lily_s, *_ in rounds)
        cpu = statistics.median(
            sum(lily_cpu.values()) / sum(raw_cpu.values()) for *_, raw_cpu, lily_cpu in rounds
        )
        print(f"  ratio lily/raw, median of rounds {ratio:>6.2f}   (target >= 0.5)")
        print(f"  CPU of every process, lily/raw, median of rounds {cpu:.2f}   (target < 2)")
        print(f"\nGetMetadata ({args.gets} sequential calls)")
        latency("gRPC GetMetadata", get_ms, "(target p99 < 5 ms)")
        latency("raw SELECT by key", get_raw_ms)
        print(f"  ratio p99 gRPC/raw {pct(get_ms, 99) / pct(get_raw_ms, 99):6.2f}")
        print(f"\nWatchChanges ({args.watches} changes: write RPC sent -> event at the watcher)")
        latency("lily", watch_ms, "(target < 100 ms)")
        latency("raw upsert+NATS", watch_raw_ms)
        print(f"  ratio p99 lily/raw {pct(watch_ms, 99) / pct(watch_raw_ms, 99):6.2f}")
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await pool.close()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
