"""Benchmark: authorization decisions, and what authentication adds to a read.

    .venv/bin/python scripts/bench_policy.py [--decisions 200000] [--calls 3000] [--gets 3000]

1. In-process: CheckAccess decisions/s of Lily's Decider over a realistic policy set (10
   tenants, 100 roles, 1,000 policies, 500 users with 1-3 roles each, plus the built-in roles),
   against Casbin's own enforcer on the same set (the baseline, same run). Target >= 50,000/s.
2. Through gRPC: CheckAccess calls/s to a `lily up` (16 in flight) holding that policy set.
3. Interceptor cost: GetMetadata latency on a `lily up` with authentication on (an API key)
   against one with it off (LILY_AUTH__ENABLED=false), on the same Postgres and NATS, in
   alternating blocks. Target: on/off < 1.10 (p50).
4. Routing: GetMetadata for a DEDICATED tenant (its own schema and pool) against the SHARED
   tenant of (3), on the same server, in alternating blocks (no target; what a cell costs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import casbin
import grpc
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.stack import EmbeddedStack, free_port
from policy.rules import Decider, Effect, RoleLink, Rule, builtin_rules, model_text, render
from scripts.benchkit import lily_up, new_tenant, pct, progress

TYPES = ["TABLE", "VIEW", "COLUMN", "SCHEMA", "DASHBOARD"]


def policy_set(seed: int = 1) -> tuple[list[Rule], list[RoleLink], list[tuple[str, str, str, str]]]:
    """1,000 policies over 100 roles in 10 tenants, 500 users, and 1,000 distinct requests."""
    rnd = random.Random(seed)
    rules: list[Rule] = []
    links: list[RoleLink] = []
    for t in range(10):
        tenant = f"tenant{t}"
        for r in range(10):
            role = f"role{r}"
            for k in range(10):
                obj = (
                    f"asset:{rnd.choice(TYPES)}:snowflake://acct{t}/db{r}/s{k}/*"
                    if k < 8
                    else rnd.choice(["metadata", "lineage", "tag:PII"])
                )
                effect: Effect = "deny" if k == 7 else "allow"
                rules.append(Rule(role, tenant, obj, rnd.choice(["read", "write"]), effect))
            if r % 3 == 0:
                links.append(RoleLink(role, rnd.choice(["viewer", "editor", "scraper"]), tenant))
        for u in range(50):
            for n in rnd.sample(range(10), rnd.randint(1, 3)):
                links.append(RoleLink(f"user{u}@{tenant}", f"role{n}", tenant))
    requests = []
    for _ in range(1000):
        t, r, k = rnd.randrange(10), rnd.randrange(10), rnd.randrange(10)
        obj = rnd.choice(
            [
                f"asset:{rnd.choice(TYPES)}:snowflake://acct{t}/db{r}/s{k}/t{rnd.randrange(99)}",
                "metadata",
                "lineage",
                "tag:PII",
            ]
        )
        requests.append(
            (f"user{rnd.randrange(50)}@tenant{t}", f"tenant{t}", obj, rnd.choice(["read", "write"]))
        )
    return rules, links, requests


def in_process(n: int) -> tuple[float, float, int]:
    rules, links, requests = policy_set()
    decider = Decider((*builtin_rules(), *rules), links)
    model = casbin.model.Model()
    model.load_model_from_text(model_text())
    enforcer = casbin.Enforcer(model)
    for r in (*builtin_rules(), *rules):
        enforcer.add_policy(r.subject, r.domain, r.object, r.action, r.effect)
    for g in links:
        enforcer.add_grouping_policy(g.subject, g.role, g.domain)
    agree = sum(decider.decide(*q).allowed == enforcer.enforce(*q) for q in requests[:200])
    started = time.perf_counter()
    for i in range(n):
        decider.decide(*requests[i % len(requests)])
    ours = n / (time.perf_counter() - started)
    m = 300
    started = time.perf_counter()
    for i in range(m):
        enforcer.enforce(*requests[i % len(requests)])
    theirs = m / (time.perf_counter() - started)
    return ours, theirs, agree


async def through_grpc(channel: grpc.aio.Channel, md, n: int, subjects: list[str]) -> float:
    stub = policy_grpc.PolicyServiceStub(channel)
    rnd = random.Random(3)
    done = 0

    async def worker() -> None:
        nonlocal done
        while done < n:
            done += 1
            mine = done
            await stub.CheckAccess(
                policy_pb.CheckAccessRequest(
                    subject=rnd.choice(subjects),
                    object=f"asset:TABLE:snowflake://acct0/db{rnd.randrange(10)}/s1/t",
                    action="write",
                ),
                metadata=md,
                timeout=10,
            )
            if mine % 500 == 0:
                progress(f"CheckAccess over gRPC: {mine}/{n}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    return n / (time.perf_counter() - started)


async def tables(stub, md) -> list[str]:
    """200 tables in the caller's tenant: their ids."""
    made = await stub.IngestMetadata(
        metadata_pb.IngestMetadataRequest(
            assets=[
                common_pb.AssetInput(
                    qualified_name=f"pg://bench/db/s/t{i}",
                    asset_type=common_pb.ASSET_TYPE_TABLE,
                    description="a table",
                )
                for i in range(200)
            ]
        ),
        metadata=md,
    )
    return [r.asset_id for r in made.results]


async def get_ms(stub, md, ids: list[str], n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await stub.GetMetadata(
            metadata_pb.GetMetadataRequest(asset_id=ids[i % len(ids)]), metadata=md, timeout=5
        )
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--gets", type=int, default=3000)
    args = ap.parse_args()

    print("1. in-process decisions (Lily's Decider vs Casbin's enforcer, same policies)")
    ours, theirs, agree = in_process(args.decisions)
    print(
        f"   Decider {ours:,.0f}/s   Casbin enforcer {theirs:,.0f}/s   ratio {ours / theirs:.0f}x"
    )
    print(
        f"   (agreed on {agree}/200 sampled requests)   target >= 50,000/s: "
        f"{'met' if ours >= 50_000 else 'NOT met'}"
    )

    data = Path(tempfile.mkdtemp(prefix="lily-bench-policy-"))
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    on_port, off_port = free_port(), free_port()
    (data / "on").mkdir()
    (data / "off").mkdir()
    on = await lily_up(data / "on", dsn, url, on_port, 0, LILY_WORKER_PROCESSES="0")
    off = await lily_up(
        data / "off",
        dsn,
        url,
        off_port,
        0,
        LILY_WORKER_PROCESSES="0",
        LILY_AUTH__ENABLED="false",
        LILY_WORKERS="false",
    )
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{on_port}") as ch_on,
            grpc.aio.insecure_channel(f"127.0.0.1:{off_port}") as ch_off,
        ):
            # 2. the policy set in one tenant, then CheckAccess over gRPC
            md = await new_tenant(ch_on, data / "on", "tenant0")
            rules, links, _ = policy_set()
            own = [r for r in rules if r.domain == "tenant0"]
            mine = [g for g in links if g.domain == "tenant0"]
            await policy_grpc.PolicyServiceStub(ch_on).ImportPolicies(
                policy_pb.ImportPoliciesRequest(
                    policy_text=render(own, [*mine, RoleLink("admin@tenant0", "admin", "tenant0")])
                ),
                metadata=md,
            )
            subjects = sorted({g.subject for g in mine if g.subject.startswith("user")})
            rate = await through_grpc(ch_on, md, args.calls, subjects)
            print(f"\n2. CheckAccess through gRPC (16 in flight): {rate:,.0f}/s")

            # 3. GetMetadata with authentication on and off, same assets (tenant default)
            key = (data / "on" / "credentials").read_text().strip()
            md_on = (("authorization", f"Bearer {key}"),)
            stub_on = metadata_grpc.MetadataServiceStub(ch_on)
            stub_off = metadata_grpc.MetadataServiceStub(ch_off)
            ids = await tables(stub_on, md_on)
            md_ded = await new_tenant(ch_on, data / "on", "dedicated0", dedicated=True)
            ids_ded = await tables(stub_on, md_ded)
            await get_ms(stub_on, md_ded, ids_ded, 200)
            await get_ms(stub_on, md_on, ids, 200)  # warm both
            await get_ms(stub_off, (), ids, 200)
            lat_on: list[float] = []
            lat_off: list[float] = []
            block = 250
            for b in range(0, args.gets, block):
                pair = [(stub_on, md_on, lat_on), (stub_off, (), lat_off)]
                for stub, meta, into in pair if (b // block) % 2 else reversed(pair):
                    into.extend(await get_ms(stub, meta, ids, block))
                progress(f"GetMetadata: {len(lat_on)}/{args.gets} each")
            print(file=sys.stderr)
            p50_on, p50_off = statistics.median(lat_on), statistics.median(lat_off)
            p99_on, p99_off = pct(lat_on, 99), pct(lat_off, 99)
            print("3. GetMetadata, authentication on (API key) vs off, alternating blocks")
            print(f"   on : p50 {p50_on:.3f} ms  p99 {p99_on:.3f} ms")
            print(f"   off: p50 {p50_off:.3f} ms  p99 {p99_off:.3f} ms")
            print(
                f"   ratio on/off: p50 {p50_on / p50_off:.3f}  p99 {p99_on / p99_off:.3f}"
                f"   target p50 < 1.10: {'met' if p50_on / p50_off < 1.10 else 'NOT met'}"
            )

            # 4. a DEDICATED tenant's reads against the SHARED tenant's, same server
            lat_ded: list[float] = []
            lat_shared: list[float] = []
            for b in range(0, args.gets, block):
                runs = [(md_ded, ids_ded, lat_ded), (md_on, ids, lat_shared)]
                for meta, which, into in runs if (b // block) % 2 else reversed(runs):
                    into.extend(await get_ms(stub_on, meta, which, block))
                progress(f"GetMetadata DEDICATED vs SHARED: {len(lat_ded)}/{args.gets} each")
            print(file=sys.stderr)
            p50_d, p50_s = statistics.median(lat_ded), statistics.median(lat_shared)
            p99_d, p99_s = pct(lat_ded, 99), pct(lat_shared, 99)
            print("4. GetMetadata, a DEDICATED tenant vs a SHARED one, same server")
            print(f"   DEDICATED: p50 {p50_d:.3f} ms  p99 {p99_d:.3f} ms")
            print(f"   SHARED   : p50 {p50_s:.3f} ms  p99 {p99_s:.3f} ms")
            print(f"   ratio: p50 {p50_d / p50_s:.3f}  p99 {p99_d / p99_s:.3f}")
    finally:
        for proc in (on, off):
            proc.terminate()
            await proc.wait()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
