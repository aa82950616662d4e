"""Benchmark: the PII classifier's cost on ingest, usage-to-issue latency, and a scheduled pass
of the orphan rule, each against a baseline measured in the same run.

    .venv/bin/python scripts/bench_quality.py [--assets 50000] [--rounds 3] [--usage 200]
                                              [--orphans 100000]

Starts its own embedded Postgres and NATS and one `lily up` whose tenants named `pii-*` have
the built-in PII classifier on (LILY_TRANSFORMS), then:
1. ingest: --assets assets (10% tables, each with 9 columns, a third of them named like
   personal data: customer_email, phone_number, first_name) streamed through
   IngestMetadataStream until the bulk job has written them all, once into a tenant with the
   classifier on and once into one with it off, alternating which goes first, for --rounds
   rounds. The figure is the median ratio of throughputs, on / off (target >= 0.9).
2. usage -> issue: a QUERY_CHANGE rule over --usage tables that each have a week of usage;
   a RecordUsage of a window ten times the week's rate, timed until the issue it raises
   arrives on WatchChanges. Baseline: AttachIssue of an issue, timed the same way
   (target p99 < 1 s).
3. orphan pass: --orphans tables, 1% of them orphaned (no usage, nothing downstream), the rest
   in use; an ORPHANED rule is created and the schedule's pass over all of them is timed
   (from the pass's start, which the rule records, to its finish). Baseline: reading the same
   assets through SearchMetadata, a page of 1,000 at a time.
Each phase prints the CPU each process used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import nats
from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import quality_pb2 as quality_pb
from lily.v1 import quality_pb2_grpc as quality_grpc

from core.events.nats import CHANGES_STREAM, QUALITY_CONSUMER
from core.stack import EmbeddedStack, free_port
from scripts.bench_ingest import lily_ingest
from scripts.benchkit import (
    CpuMeter,
    cpu_delta,
    ingest_tables,
    lily_up,
    new_tenant,
    pct,
    progress,
)

COLUMNS = [
    ("id", "bigint"),
    ("customer_email", "varchar"),
    ("created_at", "timestamp"),
    ("amount", "numeric"),
    ("phone_number", "varchar"),
    ("status", "varchar"),
    ("first_name", "varchar"),
    ("country", "varchar"),
    ("order_total", "numeric"),
]
Metadata = tuple[tuple[str, str], ...]


def _ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def estate(n: int, prefix: str) -> list[common_pb.AssetInput]:
    """n assets: 10% tables, each followed by its 9 columns."""
    out = []
    for t in range(max(1, n // 10)):
        table = f"{prefix}/schema{t % 50}/table{t}"
        out.append(
            common_pb.AssetInput(
                qualified_name=table, asset_type=common_pb.ASSET_TYPE_TABLE, name=f"table{t}"
            )
        )
        for name, data_type in COLUMNS:
            out.append(
                common_pb.AssetInput(
                    qualified_name=f"{table}/{name}",
                    asset_type=common_pb.ASSET_TYPE_COLUMN,
                    name=name,
                    parent_qualified_name=table,
                    attributes={"data_type": data_type},
                )
            )
    return out[:n]


def cpu_us(cpu: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in cpu.items())


async def quality_idle(nats_url: str) -> None:
    """Waits until the data-quality worker has nothing pending."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        while True:
            info = await js.consumer_info(CHANGES_STREAM, QUALITY_CONSUMER)
            left = info.num_pending + info.num_ack_pending
            if not left:
                return
            progress(f"data-quality worker: {left:,} events to go")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


# -- 1. ingest with the classifier on and off -------------------------------------------------


async def ingest_phase(ch, data: Path, meter: CpuMeter, url: str, args) -> None:
    stub = metadata_grpc.MetadataServiceStub(ch)
    ratios: list[float] = []
    cpu_on: dict[str, float] = {}
    cpu_off: dict[str, float] = {}
    for r in range(args.rounds):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        took = {}
        for mode in order:
            tenant = f"pii-{r}" if mode == "on" else f"plain-{r}"
            md = await new_tenant(ch, data, tenant)
            assets = estate(args.assets, f"snowflake://acct/{tenant}")
            c0 = meter.read()
            seconds, _, job = await lily_ingest(stub, md, assets, url)
            cpu = cpu_delta(c0, meter.read())
            if job.written != len(assets):
                raise SystemExit(f"bulk job did not write every asset: {job}")
            took[mode] = seconds
            into = cpu_on if mode == "on" else cpu_off
            for k, v in cpu.items():
                into[k] = into.get(k, 0.0) + v
        ratios.append(took["off"] / took["on"])  # throughput on / off
        print(
            f"  round {r + 1}: classifier on {args.assets / took['on']:,.0f} assets/s, "
            f"off {args.assets / took['off']:,.0f} assets/s, ratio {ratios[-1]:.2f}"
        )
    # the classifier really tagged: one column of the last "on" tenant
    md = await new_tenant(ch, data, "pii-check")
    sample = estate(10, "snowflake://acct/pii-check")
    await stub.IngestMetadata(metadata_pb.IngestMetadataRequest(assets=sample), metadata=md)
    for _ in range(200):  # (a column: written by the ingest worker soon after)
        try:
            got = await stub.LookupMetadata(
                metadata_pb.LookupMetadataRequest(qualified_name=sample[2].qualified_name),
                metadata=md,
            )
            break
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.05)
    else:
        raise SystemExit(f"{sample[2].qualified_name} was never written")
    tags = [(t.name, t.source, t.value) for t in got.asset.tags]
    n = args.assets * args.rounds
    print(
        f"  median throughput ratio, classifier on / off: {statistics.median(ratios):.2f}"
        f"  (target >= 0.9: {'met' if statistics.median(ratios) >= 0.9 else 'NOT met'})"
    )
    print(f"  e.g. {sample[2].qualified_name}: {tags}")
    print(f"  CPU-us per asset, on:  {cpu_us(cpu_on, n)}")
    print(f"  CPU-us per asset, off: {cpu_us(cpu_off, n)}")


# -- 2. usage -> issue ------------------------------------------------------------------------


async def usage_phase(ch, data: Path, meter: CpuMeter, url: str, args) -> None:
    stub = metadata_grpc.MetadataServiceStub(ch)
    quality = quality_grpc.DataQualityServiceStub(ch)
    md = await new_tenant(ch, data, "usage")
    n = args.usage + 5  # (the first 5 warm up)
    ids = await ingest_tables(stub, md, [f"pg://usage/t{i}" for i in range(2 * n)])
    tables = [ids[f"pg://usage/t{i}"] for i in range(n)]
    baseline = [ids[f"pg://usage/t{i}"] for i in range(n, 2 * n)]
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=8)

    def window(asset_id: str, d: int, count: int) -> quality_pb.Usage:
        start = day + timedelta(days=d)
        return quality_pb.Usage(
            asset_id=asset_id,
            window_start=_ts(start),
            window_end=_ts(start + timedelta(days=1)),
            query_count=count,
        )

    week = [window(a, d, 100) for a in tables for d in range(7)]
    for i in range(0, len(week), 1000):
        await quality.RecordUsage(
            quality_pb.RecordUsageRequest(usage=week[i : i + 1000]), metadata=md, timeout=30
        )
    await quality_idle(url)
    await quality.CreateRule(
        quality_pb.CreateRuleRequest(
            rule=quality_pb.Rule(
                type=quality_pb.RULE_TYPE_QUERY_CHANGE, qualified_name_prefix="pg://usage/"
            )
        ),
        metadata=md,
    )
    await asyncio.sleep(1.5)  # (every instance sees the new rule)
    watch = stub.WatchChanges(
        metadata_pb.WatchChangesRequest(entities=[events_pb.ENTITY_KIND_ISSUE]), metadata=md
    )
    await watch.initial_metadata()

    async def issue_of(asset_id: str) -> None:
        while True:
            got = await asyncio.wait_for(watch.read(), 10)
            if (
                got.event.asset_id == asset_id
                and got.event.change == events_pb.CHANGE_KIND_ATTACHED
            ):
                return

    usage_ms, attach_ms = [], []
    c0 = meter.read()
    for i, asset_id in enumerate(tables):
        t0 = time.perf_counter()
        await quality.RecordUsage(
            quality_pb.RecordUsageRequest(usage=[window(asset_id, 7, 1000)]),
            metadata=md,
            timeout=10,
        )
        await issue_of(asset_id)
        if i >= 5:
            usage_ms.append((time.perf_counter() - t0) * 1000)
        progress(f"usage -> issue: {i + 1}/{n}")
    c1 = meter.read()
    for i, asset_id in enumerate(baseline):
        t0 = time.perf_counter()
        await stub.AttachIssue(
            metadata_pb.AttachIssueRequest(
                asset_id=asset_id,
                issue=common_pb.DataQualityIssue(source="bench", external_id=f"b{i}", title="x"),
            ),
            metadata=md,
            timeout=10,
        )
        await issue_of(asset_id)
        if i >= 5:
            attach_ms.append((time.perf_counter() - t0) * 1000)
        progress(f"baseline AttachIssue -> event: {i + 1}/{n}")
    c2 = meter.read()
    watch.cancel()
    for name, ms in (
        ("usage window -> issue event", usage_ms),
        ("baseline AttachIssue -> event", attach_ms),
    ):
        print(
            f"  {name:32} p50 {pct(ms, 50):7.1f} ms  p99 {pct(ms, 99):7.1f} ms"
            f"  max {max(ms):7.1f} ms  (n={len(ms)})"
        )
    print(
        f"  p99 ratio (usage / baseline): {pct(usage_ms, 99) / pct(attach_ms, 99):.2f}"
        f"  (target p99 < 1 s: {'met' if pct(usage_ms, 99) < 1000 else 'NOT met'})"
    )
    print(f"  CPU-us per usage -> issue:  {cpu_us(cpu_delta(c0, c1), n)}")
    print(f"  CPU-us per AttachIssue:     {cpu_us(cpu_delta(c1, c2), n)}")


# -- 3. the orphan rule's scheduled pass ------------------------------------------------------


async def orphan_phase(ch, data: Path, meter: CpuMeter, url: str, args) -> None:
    stub = metadata_grpc.MetadataServiceStub(ch)
    quality = quality_grpc.DataQualityServiceStub(ch)
    md = await new_tenant(ch, data, "orphans")
    names = [f"pg://orphans/s{i % 100}/t{i:06}" for i in range(args.orphans)]
    ids = await ingest_tables(stub, md, names)
    born = time.monotonic()
    # 99% in use: a window ending a little ahead (within the clock skew Lily allows), so that
    # they stay in use for the minute the rule's threshold is
    now = datetime.now(UTC)
    used = [
        quality_pb.Usage(
            asset_id=ids[qn],
            window_start=_ts(now - timedelta(hours=1)),
            window_end=_ts(now + timedelta(minutes=4)),
            query_count=3,
        )
        for i, qn in enumerate(names)
        if i % 100
    ]
    for i in range(0, len(used), 1000):
        await quality.RecordUsage(
            quality_pb.RecordUsageRequest(usage=used[i : i + 1000]), metadata=md, timeout=30
        )
        progress(f"usage recorded {i + 1000:,}/{len(used):,}")
    await quality_idle(url)
    await asyncio.sleep(max(0.0, 61 - (time.monotonic() - born)))  # older than the threshold

    # baseline: the same assets read a page at a time
    c0 = meter.read()
    t0 = time.perf_counter()
    token, seen = "", 0
    while True:
        page = await stub.SearchMetadata(
            metadata_pb.SearchMetadataRequest(
                qualified_name_prefix="pg://orphans/", page_size=1000, page_token=token
            ),
            metadata=md,
            timeout=60,
        )
        seen += len(page.assets)
        token = page.next_page_token
        progress(f"search: {seen:,}")
        if not token:
            break
    search_s = time.perf_counter() - t0
    c1 = meter.read()

    made = await quality.CreateRule(
        quality_pb.CreateRuleRequest(
            rule=quality_pb.Rule(
                type=quality_pb.RULE_TYPE_ORPHANED,
                qualified_name_prefix="pg://orphans/",
                threshold=60 / 86400,
            )
        ),
        metadata=md,
    )
    while True:  # the schedule claims it within seconds and passes over it
        rule = (
            await quality.GetRule(quality_pb.GetRuleRequest(rule_id=made.rule.rule_id), metadata=md)
        ).rule
        if rule.HasField("evaluated_at"):
            finished = time.time()
            break
        progress("orphan rule: waiting for its pass")
        await asyncio.sleep(0.05)
    c2 = meter.read()
    pass_s = finished - rule.evaluated_at.ToDatetime(UTC).timestamp()
    raised = 0
    for i in range(0, len(names), 100):
        got = await stub.ListIssues(
            metadata_pb.ListIssuesRequest(asset_id=ids[names[i]]), metadata=md
        )
        raised += sum(1 for x in got.issues if x.source == "lily_dq")
    print(
        f"  {args.orphans:,} assets: scheduled pass {pass_s:.1f} s "
        f"({args.orphans / pass_s:,.0f} assets/s); baseline SearchMetadata of them "
        f"{search_s:.1f} s; ratio pass / search {pass_s / search_s:.2f}"
    )
    print(f"  orphans found among the 1% expected: {raised}/{len(names) // 100}")
    pass_cpu, search_cpu = cpu_delta(c1, c2), cpu_delta(c0, c1)
    print(f"  CPU-us per asset, pass (with the wait for it): {cpu_us(pass_cpu, args.orphans)}")
    print(f"  CPU-us per asset, search:                      {cpu_us(search_cpu, args.orphans)}")


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily data-quality benchmark")
    parser.add_argument("--assets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--usage", type=int, default=200)
    parser.add_argument("--orphans", type=int, default=100_000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lily-bench-quality-"))
    print(f"lily bench quality: data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    port = free_port()
    transforms = {f"pii-{r}": [{"name": "pii"}] for r in range(args.rounds)}
    transforms["pii-check"] = [{"name": "pii"}]
    server = await lily_up(data, dsn, url, port, LILY_TRANSFORMS=json.dumps(transforms))
    try:
        meter = CpuMeter(server.pid, data / "stack")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            print("\n1. ingest, PII classifier on vs off:")
            await ingest_phase(ch, data, meter, url, args)
            print("\n2. usage -> issue:")
            await usage_phase(ch, data, meter, url, args)
            print("\n3. orphan rule, one scheduled pass:")
            await orphan_phase(ch, data, meter, url, args)
    finally:
        server.terminate()
        await server.wait()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
