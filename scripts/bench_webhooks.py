"""Benchmark: Monte Carlo webhooks through the door `lily up` serves, against the same issues
attached directly over gRPC, in the same run.

    .venv/bin/python scripts/bench_webhooks.py [--rate 50] [--seconds 10] [--rounds 2] [--runs 5]
        [--events 400]

Starts an embedded Postgres and NATS and `lily up`, makes a tenant with a Monte Carlo
integration, 50 tables to receive incidents, and a root table with 1,000 tables directly
downstream of it. Then, in rounds that alternate the two ways in (the machine is shared):

1. Latency at a steady rate: a signed webhook opening an incident on one of the 50 tables,
   `--rate` a second (sent on schedule, not waiting for answers), timed from its POST until its
   `issue.attached` event arrives on NATS (published only after the issue is written, so it is
   readable then: checked on a sample). Baseline: AttachIssue over gRPC at the same rate, timed
   until its event.
2. Fan-out: an incident on the root, timed until all 1,000 downstream tables' `asset.updated`
   events saying they have an unhealthy upstream have arrived; then it is resolved and the
   clearing awaited (not timed). Baseline: the same incident attached directly over gRPC.

3. OpenLineage: `--events` RunEvents (an input, a job, an output: two edges each) sent by the
   stock openlineage-python client, 8 at a time, timed until every edge's
   `relationship.created` event has arrived; baseline: the same shape of edges (fresh names)
   sent with IngestRelationships, one call per event, 8 at a time.

Prints p50/p99 of each and their ratios, and the CPU each process used per webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import hmac
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
import nats
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedStack, free_port
from scripts.benchkit import (
    CpuMeter,
    cpu_delta,
    ingest_tables,
    lily_up,
    new_tenant,
    pct,
    progress,
    propagation_idle,
)

PREFIX = "snowflake://bench"
FANOUT = 1000


class Arrivals:
    """When each event of interest arrived on NATS."""

    def __init__(self) -> None:
        self.attached: dict[str, float] = {}  # incident id -> when its issue.attached arrived
        # downstream asset -> when its unhealthy upstreams changed (since the last clear)
        self.unhealthy: dict[str, float] = {}
        self.edges: set[tuple[str, str]] = set()  # lineage edges created
        self.changed = asyncio.Event()

    async def on_issue(self, msg) -> None:  # type: ignore[no-untyped-def]
        event = events_pb.ChangeEvent.FromString(msg.data)
        self.attached.setdefault(event.issue.external_id, time.perf_counter())
        self.changed.set()

    async def on_edge(self, msg) -> None:  # type: ignore[no-untyped-def]
        event = events_pb.ChangeEvent.FromString(msg.data)
        edge = event.relationship
        self.edges.add((edge.upstream_asset_id, edge.downstream_asset_id))
        self.changed.set()

    async def on_asset(self, msg) -> None:  # type: ignore[no-untyped-def]
        event = events_pb.ChangeEvent.FromString(msg.data)
        if "unhealthy_upstream_asset_ids" in event.changed_fields:
            self.unhealthy.setdefault(event.asset_id, time.perf_counter())
        self.changed.set()

    async def until(self, done: Callable[[], bool], timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()


def incident(incident_id: str, table: str, feedback: str = "") -> dict[str, object]:
    payload: dict[str, object] = {"incident_id": incident_id}
    if feedback:
        payload["alert_feedback"] = feedback
    else:
        payload["event_list"] = [{"event_details": "bench", "full_table_id": table}]
    kind = "incident_update" if feedback else "open_anomaly_incident"
    return {"action": "incident", "type": kind, "version": "v0.1", "payload": payload}


def signed(secret: str, body: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    sig = hmac.new(
        secret.encode(), urllib.parse.urlencode(body).encode(), hashlib.sha512
    ).hexdigest()
    return raw, {"x-mcd-signature": sig, "content-type": "application/json"}


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily Monte Carlo webhook benchmark")
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each latency phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="fan-out runs of each way")
    parser.add_argument("--events", type=int, default=400, help="OpenLineage events a phase")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lily-bench-webhooks-"))
    print(f"lily bench: Monte Carlo webhooks at {args.rate:g}/s; data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    port, http_port = free_port(), free_port()
    server = await lily_up(data, dsn, url, port, http_port)
    meter = CpuMeter(server.pid, data)
    tenant = "hook" + uuid.uuid4().hex[:8]
    nc = await nats.connect(url)
    arrivals = Arrivals()
    await nc.subscribe(f"lily.{tenant}.issue.*", cb=arrivals.on_issue)
    await nc.subscribe(f"lily.{tenant}.asset.updated", cb=arrivals.on_asset)
    await nc.subscribe(f"lily.{tenant}.relationship.created", cb=arrivals.on_edge)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}",
                timeout=30,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            ) as http,
        ):
            md = await new_tenant(ch, data, tenant)
            stub = metadata_grpc.MetadataServiceStub(ch)
            made_integration = integration_pb.Integration(type="monte_carlo")
            made_integration.settings.update({"default_prefix": PREFIX})
            made = await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
                integration_pb.CreateIntegrationRequest(integration=made_integration),
                metadata=md,
            )
            hook, secret = made.integration.webhook_path, made.webhook_secret
            tables = [f"{PREFIX}/db/s/t{i}" for i in range(50)]
            children = [f"{PREFIX}/db/down/c{i:04}" for i in range(FANOUT)]
            root = f"{PREFIX}/db/up/root"
            names = [*tables, root, *children]
            ids = await ingest_tables(stub, md, names)
            await lineage_grpc.LineageServiceStub(ch).IngestRelationships(
                lineage_pb.IngestRelationshipsRequest(
                    relationships=[
                        lineage_pb.RelationshipInput(
                            upstream=lineage_pb.AssetRef(qualified_name=root),
                            downstream=lineage_pb.AssetRef(qualified_name=c),
                        )
                        for c in children
                    ]
                ),
                metadata=md,
                timeout=60,
            )
            await propagation_idle(url)

            async def post(body: dict[str, object]) -> None:
                raw, headers = signed(secret, body)
                answer = await http.post(hook, content=raw, headers=headers)
                if answer.status_code != 200:
                    raise SystemExit(f"webhook answered {answer.status_code}: {answer.text}")

            async def attach(incident_id: str, table: str, resolved: bool = False) -> None:
                status = common_pb.ISSUE_STATUS_OPEN
                if resolved:
                    status = common_pb.ISSUE_STATUS_RESOLVED
                await stub.AttachIssue(
                    metadata_pb.AttachIssueRequest(
                        asset_id=ids[table],
                        issue=common_pb.DataQualityIssue(
                            external_id=incident_id,
                            source="monte_carlo",
                            type="anomaly",
                            title="bench",
                            status=status,
                        ),
                    ),
                    metadata=md,
                    timeout=30,
                )

            async def steady(way: str, n: int) -> tuple[list[float], dict[str, float]]:
                """n incidents at the rate, the way given; each one's latency in ms."""
                sent: dict[str, float] = {}
                tasks = []
                start = time.perf_counter()
                c0 = meter.read()
                for k in range(n):
                    due = start + k / args.rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    incident_id = f"{way}-{uuid.uuid4().hex[:12]}"
                    table = tables[k % len(tables)]
                    sent[incident_id] = time.perf_counter()
                    if way == "webhook":  # Monte Carlo names it db:s.t<k>
                        work = post(incident(incident_id, "db:s." + table.rsplit("/", 1)[1]))
                    else:
                        work = attach(incident_id, table)
                    tasks.append(asyncio.create_task(work))
                    progress(f"{way}: {k + 1}/{n}")
                await asyncio.gather(*tasks)
                try:
                    await arrivals.until(lambda: all(i in arrivals.attached for i in sent))
                except TimeoutError:
                    missing = [i for i in sent if i not in arrivals.attached]
                    raise SystemExit(
                        f"{way}: {len(missing)} of {n} incidents never showed up on NATS "
                        f"(e.g. {missing[:3]})"
                    ) from None
                cpu = cpu_delta(c0, meter.read())
                return [(arrivals.attached[i] - t) * 1000 for i, t in sent.items()], cpu

            n = max(1, int(args.rate * args.seconds))
            lat: dict[str, list[float]] = {"webhook": [], "direct": []}
            cpu_per: dict[str, dict[str, float]] = {}
            for r in range(args.rounds):
                for way in ("webhook", "direct") if r % 2 == 0 else ("direct", "webhook"):
                    got, cpu = await steady(way, n)
                    lat[way] += got
                    cpu_per[way] = {
                        k: cpu_per.get(way, {}).get(k, 0.0) + v / n / args.rounds * 1000
                        for k, v in cpu.items()
                    }
            # readable once its event is out: a sample, read back
            listed = await stub.ListIssues(
                metadata_pb.ListIssuesRequest(asset_id=ids[tables[0]]), metadata=md
            )
            assert sum(i.source == "monte_carlo" for i in listed.issues) >= 2 * args.rounds

            fan: dict[str, list[float]] = {"webhook": [], "direct": []}
            for run in range(args.runs):
                for way in ("webhook", "direct") if run % 2 == 0 else ("direct", "webhook"):
                    arrivals.unhealthy.clear()
                    incident_id = f"fan-{way}-{run}"
                    t0 = time.perf_counter()
                    if way == "webhook":
                        await post(incident(incident_id, "db:up.root"))
                    else:
                        await attach(incident_id, root)
                    await arrivals.until(lambda: len(arrivals.unhealthy) >= FANOUT)
                    fan[way].append((max(arrivals.unhealthy.values()) - t0) * 1000)
                    progress(f"fan-out {way} run {run + 1}: {fan[way][-1]:.0f} ms")
                    arrivals.unhealthy.clear()  # from here on: the clearing (not timed)
                    if way == "webhook":
                        await post(incident(incident_id, "", feedback="fixed"))
                    else:
                        await attach(incident_id, root, resolved=True)
                    await arrivals.until(lambda: len(arrivals.unhealthy) >= FANOUT)
            ol_rate = await openlineage_phases(args, ch, md, http_port, arrivals)
            progress("")
    finally:
        await nc.close()
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await stack.stop()

    def line(label: str, values: list[float]) -> str:
        return f"  {label:<28} p50 {pct(values, 50):8.1f} ms  p99 {pct(values, 99):8.1f} ms"

    print(f"\nsteady rate: {args.rate:g}/s, {n} incidents a phase, {args.rounds} rounds each way")
    print(line("webhook -> issue event", lat["webhook"]) + "   (target p99 < 50 ms)")
    print(line("direct AttachIssue -> event", lat["direct"]))
    print(f"  ratio p99 webhook/direct    {pct(lat['webhook'], 99) / pct(lat['direct'], 99):.2f}")
    print(f"  CPU ms per webhook:      {_ms(cpu_per['webhook'])}")
    print(f"  CPU ms per direct call:  {_ms(cpu_per['direct'])}")
    print(f"\nfan-out: an incident on a table with {FANOUT:,} tables downstream, {args.runs} runs")
    print(line("webhook -> all unhealthy", fan["webhook"]) + "   (target p99 < 1000 ms)")
    print(line("direct -> all unhealthy", fan["direct"]))
    print(f"  ratio p99 webhook/direct    {pct(fan['webhook'], 99) / pct(fan['direct'], 99):.2f}")
    print(f"\nOpenLineage: {args.events} RunEvents a phase (2 edges each), 8 senders")
    print(f"  stock client -> edges created   {ol_rate['openlineage']:8.0f} events/s")
    print(f"  IngestRelationships, same edges {ol_rate['direct']:8.0f} events/s")
    print(f"  ratio openlineage/direct        {ol_rate['openlineage'] / ol_rate['direct']:.2f}")
    return 0


async def openlineage_phases(
    args: argparse.Namespace,
    ch: grpc.aio.Channel,
    md: tuple[tuple[str, str], ...],
    http_port: int,
    arrivals: Arrivals,
) -> dict[str, float]:
    """Events a second, until their edges exist: through the stock OpenLineage client, and
    the same shape of edges through IngestRelationships (alternating, fresh names each)."""
    from concurrent.futures import ThreadPoolExecutor

    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    made = await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
        integration_pb.CreateIntegrationRequest(
            integration=integration_pb.Integration(type="openlineage")
        ),
        metadata=md,
    )
    config = HttpConfig.from_dict(
        {
            "url": f"http://127.0.0.1:{http_port}",
            "endpoint": made.integration.webhook_path.lstrip("/"),
            "auth": {"type": "api_key", "apiKey": made.webhook_secret},
        }
    )
    client = OpenLineageClient(transport=HttpTransport(config))
    lineage = lineage_grpc.LineageServiceStub(ch)
    pool = ThreadPoolExecutor(8)
    loop = asyncio.get_running_loop()
    rates: dict[str, list[float]] = {"openlineage": [], "direct": []}
    n = args.events
    for r in range(args.rounds):
        for way in ("openlineage", "direct") if r % 2 == 0 else ("direct", "openlineage"):
            tag = f"{way}{r}"
            before = len(arrivals.edges)
            start = time.perf_counter()
            sem = asyncio.Semaphore(8)

            async def one(k: int, way: str, tag: str, sem: asyncio.Semaphore) -> None:
                src, dst = f"db.{tag}.src{k}", f"db.{tag}.dst{k}"
                async with sem:
                    if way == "openlineage":
                        event = RunEvent(
                            eventType=RunState.COMPLETE,
                            eventTime=datetime.now(UTC).isoformat(),
                            run=Run(runId=str(uuid.uuid4())),
                            job=Job(namespace="bench", name=f"{tag}.job{k}"),
                            producer="lily-bench",
                            inputs=[InputDataset(namespace="postgres://bench:5432", name=src)],
                            outputs=[OutputDataset(namespace="postgres://bench:5432", name=dst)],
                        )
                        await loop.run_in_executor(pool, client.emit, event)
                    else:
                        base = "postgres://bench:5432/db/" + tag
                        job = f"openlineage://bench/{tag}.job{k}"
                        await lineage.IngestRelationships(
                            lineage_pb.IngestRelationshipsRequest(
                                relationships=[
                                    lineage_pb.RelationshipInput(
                                        upstream=lineage_pb.AssetRef(qualified_name=u),
                                        downstream=lineage_pb.AssetRef(qualified_name=d),
                                    )
                                    for u, d in ((f"{base}/src{k}", job), (job, f"{base}/dst{k}"))
                                ]
                            ),
                            metadata=md,
                            timeout=30,
                        )
                progress(f"{way}: {k + 1}/{n}")

            await asyncio.gather(*(one(k, way, tag, sem) for k in range(n)))
            await arrivals.until(functools.partial(_grown, arrivals.edges, before + 2 * n))
            rates[way].append(n / (time.perf_counter() - start))
    pool.shutdown()
    return {way: statistics.median(v) for way, v in rates.items()}


def _grown(found: set[tuple[str, str]], size: int) -> bool:
    return len(found) >= size


def _ms(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
