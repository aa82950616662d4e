"""Benchmark: a PII tag until the SQL engine downstream enforces it.

Starts an embedded Postgres and NATS and `lily up`, and a separate embedded Postgres as the
customer's warehouse (role `analyst`), made an enforcement target. Then, on the embedded
profile:

- 3 hops: tags s.t0.email PII (UpdateTags) and times until a real SQL connection as
  `analyst`, polling `SELECT email FROM s.t3`, is refused (t0 -> t1 -> t2 -> t3 in column
  lineage); then removes it and times until it reads again. Against it, in the same run: the
  same REVOKE/GRANT run straight on the warehouse and detected by the same polling.
- 1,000 columns: tags one upstream column whose 1,000 direct downstream columns (10 tables of
  100) are in the warehouse, and times until none of them can be read by `analyst`
  (has_column_privilege over all of them), and back; against the same statements run
  straight.

Prints p50 and p99 of each, their ratios, and the CPU each process spent per enforcement.

    .venv/bin/python scripts/bench_enforcement.py [--runs 60] [--warmup 5] [--fanout-runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import grpc
import psutil
from lily.v1 import common_pb2 as common_pb
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedPostgres, EmbeddedStack, free_port
from scripts.benchkit import (
    CpuMeter,
    cpu_delta,
    lily_up,
    new_tenant,
    pct,
    progress,
    propagation_idle,
)

PREFIX = "postgres://warehouse:5432/postgres"
CHAIN = ["t0", "t1", "t2", "t3"]
WIDE_TABLES, WIDE_COLUMNS = 10, 100


def _qn(*parts: str) -> str:
    return "/".join((PREFIX, *parts))


async def _warehouse(pg: EmbeddedPostgres) -> str:
    conn = await asyncpg.connect(await pg.start())
    wide = "; ".join(
        f"CREATE TABLE f.w{t} ({', '.join(f'c{c:03} int' for c in range(WIDE_COLUMNS))})"
        for t in range(WIDE_TABLES)
    )
    await conn.execute(
        "CREATE ROLE analyst LOGIN; CREATE SCHEMA s; CREATE SCHEMA f;"
        + "".join(f" CREATE TABLE s.{t} (id int, email text);" for t in [*CHAIN, "src"])
        + " INSERT INTO s.t3 VALUES (1, 'ann@example.com');"
        + f" {wide};"
        + " GRANT USAGE ON SCHEMA s, f TO analyst;"
        + " GRANT SELECT ON ALL TABLES IN SCHEMA s, f TO analyst;"
    )
    await conn.close()
    return str(pg.data_dir / "pgdata")


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> float:
    """Polls `check` as fast as it answers; the time it first said yes."""
    async with asyncio.timeout(timeout):
        while not await check():
            pass
    return time.perf_counter()


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily enforcement benchmark")
    parser.add_argument("--runs", type=int, default=60, help="3-hop runs of each way")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fanout-runs", type=int, default=5)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lily-bench-enforcement-"))
    print(f"lily bench: enforcement in a PostgreSQL warehouse; data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    warehouse = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="lily-bench-warehouse-")))
    socket = await _warehouse(warehouse)
    port = free_port()
    server = await lily_up(data, dsn, url, port)
    meter = CpuMeter(server.pid, data)
    meter.groups["warehouse"] = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and socket in " ".join(p.info["cmdline"] or [])
    ]
    analyst = await asyncpg.connect(host=socket, user="analyst", database="postgres")
    owner = await asyncpg.connect(host=socket, user="postgres", database="postgres")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            md = await new_tenant(ch, data, "enf" + uuid.uuid4().hex[:8])
            stub = metadata_grpc.MetadataServiceStub(ch)
            lineage = lineage_grpc.LineageServiceStub(ch)
            table, column = common_pb.ASSET_TYPE_TABLE, common_pb.ASSET_TYPE_COLUMN
            assets = [(_qn("s", t), table) for t in [*CHAIN, "src"]]
            assets += [(_qn("s", t, "email"), column) for t in [*CHAIN, "src"]]
            wide = [(f"w{t}", f"c{c:03}") for t in range(WIDE_TABLES) for c in range(WIDE_COLUMNS)]
            assets += [(_qn("f", f"w{t}"), table) for t in range(WIDE_TABLES)]
            assets += [(_qn("f", t, c), column) for t, c in wide]
            ids: dict[str, str] = {}
            for i in range(0, len(assets), 500):
                made = await stub.IngestMetadata(
                    metadata_pb.IngestMetadataRequest(
                        assets=[
                            common_pb.AssetInput(qualified_name=q, asset_type=k, name=q[-50:])
                            for q, k in assets[i : i + 500]
                        ]
                    ),
                    metadata=md,
                    timeout=60,
                )
                batch = assets[i : i + 500]
                ids.update({q: r.asset_id for (q, _), r in zip(batch, made.results, strict=True)})
            edges = [
                (_qn("s", a, "email"), _qn("s", b, "email")) for a, b in itertools.pairwise(CHAIN)
            ] + [(_qn("s", "src", "email"), _qn("f", t, c)) for t, c in wide]
            while True:  # columns are written by the ingest worker, soon after
                found = await stub.SearchMetadata(
                    metadata_pb.SearchMetadataRequest(
                        asset_type=column, qualified_name_prefix=PREFIX + "/", page_size=1
                    ),
                    metadata=md,
                )
                if found.assets:
                    await propagation_idle(url)
                    break
                await asyncio.sleep(0.2)
            for i in range(0, len(edges), 500):
                await lineage.IngestRelationships(
                    lineage_pb.IngestRelationshipsRequest(
                        relationships=[
                            lineage_pb.RelationshipInput(
                                upstream=lineage_pb.AssetRef(qualified_name=up),
                                downstream=lineage_pb.AssetRef(qualified_name=down),
                            )
                            for up, down in edges[i : i + 500]
                        ]
                    ),
                    metadata=md,
                    timeout=60,
                )
            target = integration_pb.Integration(type="postgres", display_name="warehouse")
            target.settings.update(
                {
                    "host": socket,
                    "database": "postgres",
                    "user": "postgres",
                    "prefix": PREFIX,
                    "rules": [{"tags": ["PII"], "deny": ["analyst"]}],
                }
            )
            await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
                integration_pb.CreateIntegrationRequest(integration=target), metadata=md
            )
            await propagation_idle(url)
            await asyncio.sleep(2.0)  # the runtime finds the target; its first reconciliation

            async def tag(qn: str, remove: bool = False) -> None:
                request = metadata_pb.UpdateTagsRequest(
                    asset_id=ids[qn], source=common_pb.TAG_SOURCE_USER
                )
                if remove:
                    request.remove.append("PII")
                else:
                    request.add.append(common_pb.TagAssignment(name="PII"))
                await stub.UpdateTags(request, metadata=md, timeout=10)

            async def refused() -> bool:
                try:
                    await analyst.fetch("SELECT email FROM s.t3")
                except asyncpg.InsufficientPrivilegeError:
                    return True
                return False

            async def reads() -> bool:
                return not await refused()

            async def readable_wide() -> int:
                return int(
                    await owner.fetchval(
                        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'f'"
                        " AND a.attnum > 0 AND has_column_privilege('analyst', c.oid, a.attnum,"
                        " 'SELECT')"
                    )
                )

            async def none_wide() -> bool:
                return await readable_wide() == 0

            async def all_wide() -> bool:
                return await readable_wide() == WIDE_TABLES * WIDE_COLUMNS

            chain_qn = _qn("s", "t0", "email")
            direct_close = [
                "REVOKE SELECT ON s.t3 FROM analyst",
                "GRANT SELECT (id) ON s.t3 TO analyst",
            ]
            direct_open = [
                "REVOKE SELECT (id) ON s.t3 FROM analyst",
                "GRANT SELECT ON s.t3 TO analyst",
            ]
            wide_close = [f"REVOKE SELECT ON f.w{t} FROM analyst" for t in range(WIDE_TABLES)]
            wide_open = [f"GRANT SELECT ON f.w{t} TO analyst" for t in range(WIDE_TABLES)]

            async def statements(sql: list[str]) -> None:
                async with owner.transaction():
                    for s in sql:
                        await owner.execute(s)

            results: dict[str, list[float]] = {k: [] for k in ("lily", "lily open", "direct")}
            cpu_lily: dict[str, float] = {}
            total = args.warmup + args.runs
            for n in range(total):
                progress(f"3 hops: run {n + 1}/{total}")
                before = meter.read()
                start = time.perf_counter()
                await tag(chain_qn)
                closed_at = await _until(refused)
                start_open = time.perf_counter()
                await tag(chain_qn, remove=True)
                opened_at = await _until(reads)
                spent = cpu_delta(before, meter.read())
                start_direct = time.perf_counter()
                await statements(direct_close)
                direct_at = await _until(refused)
                await statements(direct_open)
                await _until(reads)
                if n >= args.warmup:
                    results["lily"].append(closed_at - start)
                    results["lily open"].append(opened_at - start_open)
                    results["direct"].append(direct_at - start_direct)
                    for k, v in spent.items():
                        cpu_lily[k] = cpu_lily.get(k, 0.0) + v
            fan: dict[str, list[float]] = {k: [] for k in ("lily", "lily open", "direct")}
            for n in range(args.fanout_runs):
                progress(f"1,000 columns: run {n + 1}/{args.fanout_runs}")
                start = time.perf_counter()
                await tag(_qn("s", "src", "email"))
                fan["lily"].append(await _until(none_wide, 60) - start)
                start = time.perf_counter()
                await tag(_qn("s", "src", "email"), remove=True)
                fan["lily open"].append(await _until(all_wide, 60) - start)
                start = time.perf_counter()
                await statements(wide_close)
                fan["direct"].append(await _until(none_wide) - start)
                await statements(wide_open)
                await _until(all_wide)
    finally:
        await analyst.close()
        await owner.close()
        server.terminate()
        await server.wait()
        await warehouse.stop()
        await stack.stop()

    def line(name: str, values: list[float], target: str = "") -> str:
        return (
            f"  {name:<34} p50 {pct(values, 50) * 1000:8.1f} ms"
            f"  p99 {pct(values, 99) * 1000:8.1f} ms" + (f"   ({target})" if target else "")
        )

    print(f"\n3 hops: t0.email tagged PII until `analyst` is refused s.t3.email, {args.runs} runs")
    print(line("lily: tag -> refused", results["lily"], "target p99 < 1000 ms"))
    print(line("lily: untag -> reads again", results["lily open"]))
    print(line("direct: REVOKE/GRANT -> refused", results["direct"]))
    print(
        f"  ratio p99 lily/direct {pct(results['lily'], 99) / pct(results['direct'], 99):9.1f}"
        "   (Ranger's plugins poll every 60 s: 60000 ms)"
    )
    per = {k: v / args.runs * 1000 for k, v in cpu_lily.items()}
    print("  CPU ms per tag and untag: " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    print(f"\n1,000 downstream columns (10 tables of 100), {args.fanout_runs} runs")
    print(line("lily: tag -> all closed", fan["lily"], "target p99 < 3000 ms"))
    print(line("lily: untag -> all open", fan["lily open"]))
    print(line("direct: 10 REVOKEs -> all closed", fan["direct"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
