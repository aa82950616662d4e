"""Benchmark: ingest into the distributed profile's Cassandra through Lily vs the raw driver.

    .venv/bin/python scripts/bench_cassandra_ingest.py [--assets 200000] [--rounds 2]
        [--cassandra HOST:PORT --janusgraph WS_URL]   # a running dev stack; else one is started

Starts the dev stack (scripts/devstack.py) unless given one, an embedded Postgres and NATS, and
`lily up --profile distributed`, then per round (fresh tenants each time; the raw and Lily
phases swap order every round, and each starts once Cassandra has no flush or compaction left
from the one before, so neither pays the other's background work):
1. raw:  the rows Lily stores for each asset (10% tables, 90% columns) — the asset row, its
         entry in the name directory and its audit row — written straight with cassandra-driver
         prepared statements, in unlogged batches of 24 through execute_concurrent (64 in
         flight): the best raw method found, and the ceiling. For reference, also the asset
         rows alone that way, and every row one by one with execute_concurrent (100 in flight,
         on a tenth of the assets: it is the slowest)
2. lily: the assets streamed through IngestMetadataStream, timed until the bulk job reports every
         asset written (tables by the server, columns by the ingest workers from JetStream);
         on top of the same rows Lily reads each asset first (versions, last-writer-wins),
         writes the transaction's intent, counts the job and publishes a ChangeEvent per asset
The figure is lily's assets/s as a ratio of the ceiling's, measured in the same round.
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
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from cassandra.concurrent import execute_concurrent
from cassandra.query import BatchStatement, BatchType
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core import cassandra
from core.domain.rules import asset_id_for
from core.metadata.stores.cassandra import parent_dir
from core.stack import EmbeddedStack, free_port
from scripts import devstack
from scripts.bench_ingest import generate, lily_ingest, settle
from scripts.benchkit import lily_up, new_tenant, progress

KEYSPACE = "lily_bench"
RAW_ASSET = (
    f"INSERT INTO {KEYSPACE}.assets (tenant_id, asset_id, qualified_name, asset_type, name,"
    " description, owners, data_source, parent_qualified_name, parent_id, tags, tag_names,"
    " business_terms, attributes, external_id, version, is_deleted, created_at, updated_at,"
    " source_event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, false, ?, ?, ?)"
    " USING TIMESTAMP ?"
)
RAW_ENTRY = (
    f"INSERT INTO {KEYSPACE}.assets_by_path (tenant_id, dir, entry, asset_id, asset_type,"
    " is_deleted) VALUES (?, ?, ?, ?, ?, false) USING TIMESTAMP ?"
)
RAW_MARKER = (
    f"INSERT INTO {KEYSPACE}.assets_by_path (tenant_id, dir, entry, has_children)"
    " VALUES (?, ?, ?, true)"
)
RAW_AUDIT = (
    f"INSERT INTO {KEYSPACE}.audit (tenant_id, asset_id, month, seq, principal, action, change,"
    " changed_fields, asset_version, at, request_id, origin, event_id)"
    " VALUES (?, ?, ?, ?, 'bench', 'IngestMetadataStream', 1, ?, 1, ?, 'bench', '', ?)"
    " USING TIMESTAMP ?"
)
_FIELDS = ["name", "description", "owners", "data_source", "tags", "attributes"]


def raw_rows(assets: list[common_pb.AssetInput], tenant: str) -> list[tuple]:
    """The assets table's values for each asset (as RAW_ASSET takes them)."""
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


def same_rows(statements: dict[str, object], assets: list, tenant: str) -> list[tuple]:
    """(statement, values) for every row Lily stores for these assets: the asset, its entry
    in the name directory (and a directory marker per table), and its audit row."""
    month = time.gmtime().tm_year * 12 + time.gmtime().tm_mon
    out = []
    for seq, row in enumerate(raw_rows(assets, tenant)):
        tenant_id, asset_id, name, kind, now = row[0], row[1], row[2], row[3], row[-1]
        out.append((statements["asset"], row))
        out.append((statements["entry"], (tenant_id, parent_dir(name), name, asset_id, kind, now)))
        if kind == common_pb.ASSET_TYPE_TABLE:
            schema = parent_dir(name)
            out.append((statements["marker"], (tenant_id, parent_dir(schema), schema + "/")))
        out.append(
            (
                statements["audit"],
                (
                    tenant_id,
                    asset_id,
                    month,
                    (now << 10) + seq,
                    _FIELDS,
                    now,
                    str(uuid.uuid4()),
                    now,
                ),
            )
        )
    return out


def _batched(rows: list[tuple], size: int = 24) -> list[tuple]:
    batches = []
    for i in range(0, len(rows), size):
        batch = BatchStatement(BatchType.UNLOGGED)
        for statement, values in rows[i : i + size]:
            batch.add(statement, values)
        batches.append((batch, ()))
    return batches


async def settle_cassandra(session) -> None:
    """Waits (up to 2 minutes) until Cassandra has had no flush or compaction running for a
    second, so a phase does not pay for the background work of the one before."""
    busy_pools = ("CompactionExecutor", "MemtableFlushWriter", "MemtablePostFlush")
    quiet_since = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        tasks = await cassandra.execute(
            session, "SELECT * FROM system_views.sstable_tasks", timeout=10
        )
        pools = await cassandra.execute(
            session,
            "SELECT name, active_tasks, pending_tasks FROM system_views.thread_pools",
            timeout=10,
        )
        busy = bool(tasks) or any(
            p.name in busy_pools and (p.active_tasks or p.pending_tasks) for p in pools
        )
        if busy:
            quiet_since = None
            progress("waiting for Cassandra's compactions to finish ...")
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        await asyncio.sleep(0.2)


@dataclass
class Figures:
    rate: float  # assets/s, wall clock
    cassandra_us: float | None  # Cassandra's CPU per asset, its background work included
    machine_us: float  # the whole machine's busy CPU per asset


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def measured(session, jvm: int | None, n: int, work) -> Figures:
    """Runs `work` (a coroutine function) on a settled Cassandra; the CPU figures run until
    Cassandra has settled again (flushes and compactions the work caused are its cost)."""
    await settle()
    await settle_cassandra(session)
    cpu0, busy0 = (_cpu_s(jvm) if jvm else 0.0), _machine_busy_s()
    start = time.perf_counter()
    await work()
    wall = time.perf_counter() - start
    await settle_cassandra(session)
    cassandra_us = (_cpu_s(jvm) - cpu0) * 1e6 / n if jvm else None
    return Figures(n / wall, cassandra_us, (_machine_busy_s() - busy0) * 1e6 / n)


def cassandra_pid(data: Path, started: bool) -> int | None:
    """The local Cassandra's pid, for its CPU time: the one we started, else the only one."""
    if started:
        return devstack.Cassandra(data / "dist").running_pid()
    found = [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if b"CassandraDaemon" in p.read_bytes()
    ]
    return found[0] if len(found) == 1 else None


async def raw_ingest(session, jvm: int | None, assets, tenant: str) -> dict[str, Figures]:
    """The figures of each raw method."""
    statements = {
        name: await asyncio.to_thread(session.prepare, cql)
        for name, cql in (
            ("asset", RAW_ASSET),
            ("entry", RAW_ENTRY),
            ("marker", RAW_MARKER),
            ("audit", RAW_AUDIT),
        )
    }

    async def run(label: str, n: int, rows: list[tuple], concurrency: int) -> Figures:
        progress(f"raw: {label} ...")
        return await measured(
            session,
            jvm,
            n,
            lambda: asyncio.to_thread(execute_concurrent, session, rows, concurrency),
        )

    n, tenth = len(assets), assets[: max(1, len(assets) // 10)]
    same = _batched(same_rows(statements, assets, tenant + "s"))
    asset_rows = _batched([(statements["asset"], r) for r in raw_rows(assets, tenant + "a")])
    singles = same_rows(statements, tenth, tenant + "c")
    return {
        "same rows, batches": await run("the same rows, batches", n, same, 64),
        "asset rows only, batches": await run("asset rows only", n, asset_rows, 64),
        "same rows, one by one": await run("the same rows, one by one", len(tenth), singles, 100),
    }


def ceiling(raw: dict[str, Figures]) -> float:
    """The best raw method's assets/s for the rows Lily stores."""
    return max(f.rate for label, f in raw.items() if label.startswith("same rows"))


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily ingest benchmark on Cassandra")
    parser.add_argument("--assets", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
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
        LILY_STORES__TYPE="distributed",
        LILY_STORES__CASSANDRA__HOSTS=endpoints["cassandra"],
        LILY_STORES__CASSANDRA__KEYSPACE=KEYSPACE,
        LILY_STORES__JANUSGRAPH_URL=endpoints["janusgraph"],
    )
    jvm = cassandra_pid(data, started_stack)
    try:
        assets = generate(args.assets)
        n = len(assets)
        rounds = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)

            async def lily() -> Figures:
                md = await new_tenant(ch, data, f"bench{uuid.uuid4().hex[:8]}")

                async def work() -> None:
                    _, _, job = await lily_ingest(stub, md, assets)
                    if job.state != metadata_pb.BULK_JOB_STATE_SUCCEEDED or job.written != n:
                        raise SystemExit(f"bulk job did not write every asset: {job}")

                return await measured(session, jvm, n, work)

            for r in range(args.rounds):
                tenant = f"benchraw{uuid.uuid4().hex[:8]}"
                if r % 2 == 0:
                    raw = await raw_ingest(session, jvm, assets, tenant)
                    ours = await lily()
                else:
                    ours = await lily()
                    raw = await raw_ingest(session, jvm, assets, tenant)
                rounds.append((raw, ours))
        print(file=sys.stderr)
        print(f"\ningest into Cassandra ({n:,} assets, {args.rounds} round(s); jobs SUCCEEDED)")
        print(
            "  assets/s; CPU per asset (Cassandra's, and the whole machine's) until Cassandra"
            " has flushed and compacted what the phase wrote"
        )

        def line(label: str, f: Figures) -> str:
            jvm_us = f"{f.cassandra_us:>5,.0f} us" if f.cassandra_us is not None else "    ?"
            return (
                f"    {label:<30} {f.rate:>7,.0f} assets/s   Cassandra {jvm_us}"
                f"   machine {f.machine_us:>5,.0f} us"
            )

        for r, (raw, ours) in enumerate(rounds):
            print(f"  round {r} ({'raw' if r % 2 == 0 else 'lily'} first):")
            for label, figures in raw.items():
                print(line(f"raw {label}", figures))
            best = ceiling(raw)
            print(line("lily IngestMetadataStream", ours) + f"   ratio {ours.rate / best:.2f}")
        ratio = statistics.median(ours.rate / ceiling(raw) for raw, ours in rounds)
        print(
            f"  lily / the best raw method for the same rows, assets/s, median of rounds"
            f" {ratio:.2f}   (target >= 0.6)"
        )
        if jvm:
            cpu = statistics.median(
                (raw["same rows, batches"].cassandra_us or 0.0) / (ours.cassandra_us or 1.0)
                for raw, ours in rounds
            )
            print(
                f"  Cassandra CPU per asset, raw batches / lily, median of rounds {cpu:.2f}"
                "   (the ratio with Cassandra on machines of its own)"
            )
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
