"""Benchmark: notifications, from an event on NATS to the destination, against a bare path in
the same run.

    .venv/bin/python scripts/bench_notify.py [--rate 100] [--seconds 15] [--rounds 2]
        [--deliveries 2000] [--lanes 8]

Starts an embedded Postgres and NATS and `lily up`, and a local receiver in a process of its
own (it answers Slack's incoming webhooks and a generic webhook, 200 at once, and notes when
each message came). Then, in rounds that alternate the two ways (the machine is shared):

1. Latency at a steady rate: asset.notice events published on NATS (Lily's change stream)
   `--rate` a second, spread over 100 assets, each with a subscription to a Slack webhook of
   its own (Slack takes about one message a second per webhook: 100 webhooks at 1/s each),
   timed from the publish until the receiver has the message. Baseline: the same events
   published on NATS to a bare subscriber that POSTs the same Block Kit message to the
   receiver with httpx at once.
2. Throughput on one core: `--deliveries` events to `--lanes` subscriptions of one signed
   webhook destination, published at once, with `lily up` (core and adapter runtime, one
   process) held to CPU 0 and the receiver to CPU 1; deliveries a second until the receiver
   has them all. Baseline: a bare httpx POST loop (one at a time, as asked; and `--lanes` at
   a time) of the same number of bodies of the same size to the same receiver, in a process
   held to CPU 0; and, for comparison, the same loop with aiohttp (the client Lily's
   adapters use).

Prints p50/p99 and ratios, deliveries a second and ratios, and the CPU each process used per
notification.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
import nats
import orjson
from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import notification_pb2 as notification_pb
from lily.v1 import notification_pb2_grpc as notification_grpc

from core.stack import EmbeddedStack, free_port
from scripts.benchkit import CpuMeter, cpu_delta, ingest_tables, lily_up, new_tenant, pct, progress

PREFIX = "bench://notify"
WEBHOOKS = 100


# -- the receiver (its own process: --receiver PORT)


def receiver(port: int) -> None:
    """Answers every POST 200 `ok` at once and notes when each message came, by the token
    in its title; GET /arrivals gives them (and forgets them)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    arrivals: dict[str, float] = {}
    count = [0]

    async def take(request: Request) -> PlainTextResponse:
        body = orjson.loads(await request.body())
        now = time.time()
        count[0] += 1
        token = _token(body)
        if token:
            arrivals[token] = now
        return PlainTextResponse("ok")

    async def read(request: Request) -> JSONResponse:
        found = dict(arrivals)
        arrivals.clear()
        return JSONResponse({"arrivals": found, "count": count[0]})

    app = Starlette(
        routes=[
            Route("/services/{a}/{b}/{c}", take, methods=["POST"]),
            Route("/hooks", take, methods=["POST"]),
            Route("/arrivals", read, methods=["GET"]),
        ]
    )
    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _token(body: dict[str, object]) -> str:
    text = str(body.get("text") or "")
    data = body.get("data")
    if isinstance(data, dict):
        text = str(data.get("title") or "")
    return text.rsplit(" ", 1)[-1] if text.startswith("bench ") else ""


def bare_loop(url: str, n: int, size: int, concurrency: int, client: str) -> None:
    """The baseline of phase 2 (its own process): n POSTs of `size` bytes, `concurrency` at
    a time, with httpx (as the issue asks) or aiohttp (what Lily's adapters use); prints the
    seconds they took."""
    body = orjson.dumps({"type": "lily.asset.notice", "data": {"title": "x" * size}})
    headers = {"content-type": "application/json"}

    async def run() -> float:
        left = iter(range(n))
        start = time.perf_counter()
        if client == "aiohttp":
            import aiohttp

            async with aiohttp.ClientSession() as session:

                async def worker() -> None:
                    for _ in left:
                        async with session.post(url, data=body, headers=headers) as answer:
                            await answer.read()
                            answer.raise_for_status()

                await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            async with httpx.AsyncClient(timeout=30) as http:

                async def worker() -> None:
                    for _ in left:
                        answer = await http.post(url, content=body, headers=headers)
                        answer.raise_for_status()

                await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start

    print(f"{asyncio.run(run()):.6f}", flush=True)


async def _child(*args: str, cpu: int | None = None) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE
    )
    if cpu is not None:
        _pin(proc.pid, cpu)
    return proc


def _pin(pid: int, cpu: int | None) -> None:
    """Holds a process (and its threads) to one CPU (None: any)."""
    import psutil

    cpus = {cpu} if cpu is not None else set(range(os.cpu_count() or 1))
    try:
        for thread in psutil.Process(pid).threads():
            os.sched_setaffinity(thread.id, cpus)
    except (psutil.Error, OSError):
        os.sched_setaffinity(pid, cpus)


# -- the phases


def notice(tenant: str, asset_id: str, qn: str, title: str) -> bytes:
    at = Timestamp()
    at.GetCurrentTime()
    return events_pb.ChangeEvent(
        event_id="bench" + uuid.uuid4().hex,
        tenant_id=tenant,
        entity=events_pb.ENTITY_KIND_NOTICE,
        change=events_pb.CHANGE_KIND_CREATED,
        asset_id=asset_id,
        qualified_name=qn,
        asset_type=common_pb.ASSET_TYPE_TABLE,
        occurred_at=at,
        notice=events_pb.Notice(kind="bench", title=title),
    ).SerializeToString()


async def arrivals(http: httpx.AsyncClient) -> tuple[dict[str, float], int]:
    got = (await http.get("/arrivals")).json()
    return got["arrivals"], got["count"]


async def latency_round(
    js,
    nc,
    http: httpx.AsyncClient,
    tenant: str,
    assets: list[tuple[str, str]],
    way: str,
    rate: float,
    seconds: float,
    tag: str,
) -> list[float]:
    """Publishes at `rate` for `seconds`; each message's seconds from publish to receiver."""
    sent: dict[str, float] = {}
    n = int(rate * seconds)
    start = time.time()
    for k in range(n):
        due = start + k / rate
        if (wait := due - time.time()) > 0:
            await asyncio.sleep(wait)
        token = f"{tag}-{k}"
        asset_id, qn = assets[k % len(assets)]
        body = notice(tenant, asset_id, qn, f"bench {token}")
        sent[token] = time.time()
        if way == "lily":
            await js.publish(f"lily.{tenant}.notice.created", body)
        else:
            await nc.publish(f"bench.base.{k % len(assets)}", body)
        if k % 50 == 0:
            progress(f"{way}: {k}/{n}")
    got = await received(http, tag, n, 120)
    return [got[t] - sent[t] for t in sent]


async def received(http: httpx.AsyncClient, tag: str, n: int, timeout: float) -> dict[str, float]:
    """When the receiver had each of the n messages whose token starts with `tag`."""
    got: dict[str, float] = {}
    async with asyncio.timeout(timeout):
        while len(got) < n:
            await asyncio.sleep(0.25)
            found, _ = await arrivals(http)
            got.update({t: at for t, at in found.items() if t.startswith(tag + "-")})
            progress(f"delivered {len(got)}/{n}")
    return got


async def bare_subscriber(nc, url: str) -> None:
    """The baseline of phase 1: each event on NATS POSTed to the receiver as Slack's Block
    Kit message at once."""
    from adapters.slack.mapping import message
    from adapters.spec import Notification

    client = httpx.AsyncClient(timeout=10)

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        e = events_pb.ChangeEvent.FromString(msg.data)
        n = Notification("d", e.tenant_id, "s", "i", "asset.notice", e.notice.title, e.notice.title)
        text, blocks = message(n)
        hook = msg.subject.rsplit(".", 1)[-1]
        await client.post(f"{url}/services/T/B/h{hook}", json={"text": text, "blocks": blocks})

    await nc.subscribe("bench.base.*", cb=on)


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily notification benchmark")
    parser.add_argument("--rate", type=float, default=100.0, help="events a second (phase 1)")
    parser.add_argument("--seconds", type=float, default=15.0, help="of each latency round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deliveries", type=int, default=2000, help="of each throughput round")
    parser.add_argument("--lanes", type=int, default=8, help="subscriptions in phase 2")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lily-bench-notify-"))
    print(f"lily bench: notifications; data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    port = free_port()
    server = await lily_up(data, dsn, url, port)
    meter = CpuMeter(server.pid, data)
    receiver_port = free_port()
    rx = await _child("--receiver", str(receiver_port))
    assert rx.stdout is not None
    await rx.stdout.readline()
    meter.groups["receiver"] = [__import__("psutil").Process(rx.pid)]
    rx_url = f"http://127.0.0.1:{receiver_port}"
    tenant = "notify" + uuid.uuid4().hex[:8]
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
            httpx.AsyncClient(base_url=rx_url, timeout=30) as http,
        ):
            md = await new_tenant(ch, data, tenant)
            stub = metadata_grpc.MetadataServiceStub(ch)
            integrations = integration_grpc.IntegrationServiceStub(ch)
            notifications = notification_grpc.NotificationServiceStub(ch)
            names = [f"{PREFIX}/a{i:03d}" for i in range(WEBHOOKS)]
            lanes = [f"{PREFIX}/w{j:02d}" for j in range(args.lanes)]
            ids = await ingest_tables(stub, md, [*names, *lanes])

            async def subscribe(kind: str, settings: dict, secrets: dict, prefix: str) -> None:
                i = integration_pb.Integration(type=kind)
                i.settings.update(settings)
                i.secrets.update(secrets)
                made = await integrations.CreateIntegration(
                    integration_pb.CreateIntegrationRequest(integration=i), metadata=md
                )
                await notifications.CreateSubscription(
                    notification_pb.CreateSubscriptionRequest(
                        subscription=notification_pb.Subscription(
                            integration_id=made.integration.integration_id,
                            filter=notification_pb.SubscriptionFilter(
                                event_types=["asset.notice"], qualified_name_prefix=prefix
                            ),
                        )
                    ),
                    metadata=md,
                )

            for i, qn in enumerate(names):
                await subscribe(
                    "slack", {}, {"webhook_url": f"{rx_url}/services/T/B/h{i}"}, qn + "/"
                )
                progress(f"slack destinations: {i + 1}/{WEBHOOKS}")
            webhook = integration_pb.Integration(type="webhook")
            webhook.settings.update({"url": f"{rx_url}/hooks"})
            made = await integrations.CreateIntegration(
                integration_pb.CreateIntegrationRequest(integration=webhook), metadata=md
            )
            for qn in lanes:
                await notifications.CreateSubscription(
                    notification_pb.CreateSubscriptionRequest(
                        subscription=notification_pb.Subscription(
                            integration_id=made.integration.integration_id,
                            filter=notification_pb.SubscriptionFilter(
                                event_types=["asset.notice"], qualified_name_prefix=qn + "/"
                            ),
                        )
                    ),
                    metadata=md,
                )
            await asyncio.sleep(3)  # (the runtime reads subscriptions every 2 s)
            await bare_subscriber(nc, rx_url)
            # events name the asset under its prefix, as a subscription's filter asks
            slack_assets = [(ids[qn], qn + "/t") for qn in names]
            lane_assets = [(ids[qn], qn + "/t") for qn in lanes]

            # -- phase 1
            print(f"\n1. latency at {args.rate:g} events/s ({WEBHOOKS} Slack webhooks)")
            latencies: dict[str, list[float]] = {"lily": [], "bare": []}
            cpu1: dict[str, float] = {}
            for r in range(args.rounds):
                for way in ("lily", "bare") if r % 2 == 0 else ("bare", "lily"):
                    before = meter.read()
                    got = await latency_round(
                        js,
                        nc,
                        http,
                        tenant,
                        slack_assets,
                        way,
                        args.rate,
                        args.seconds,
                        f"{way}{r}",
                    )
                    if way == "lily":
                        delta = cpu_delta(before, meter.read())
                        cpu1 = {k: cpu1.get(k, 0) + v / len(got) for k, v in delta.items()}
                    latencies[way] += got
            for way, values in latencies.items():
                ms = [v * 1000 for v in values]
                p50, p99 = pct(ms, 50), pct(ms, 99)
                print(f"   {way:5} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (n={len(ms)})")
            lily, bare = latencies["lily"], latencies["bare"]
            print(
                f"   ratio lily/bare: p50 {pct(lily, 50) / pct(bare, 50):.2f}x, "
                f"p99 {pct(lily, 99) / pct(bare, 99):.2f}x; target p99 < 200 ms: "
                f"{'met' if pct(lily, 99) < 0.2 else 'NOT met'}"
            )
            print("   CPU ms per notification (lily):", _ms(cpu1, args.rounds))

            # -- phase 2
            print(f"\n2. webhook deliveries a second on one core ({args.lanes} subscriptions)")
            _pin_tree(server.pid, 0)
            _pin(rx.pid, 1)
            _pin(os.getpid(), 1)
            baselines = {
                "bare httpx loop": (1, "httpx"),
                "bare httpx x lanes": (args.lanes, "httpx"),
                "bare aiohttp loop": (1, "aiohttp"),
            }
            rates: dict[str, list[float]] = {"lily": [], **{name: [] for name in baselines}}
            size = 0
            cpu2: dict[str, float] = {}
            n = args.deliveries
            for r in range(args.rounds):
                await arrivals(http)
                before, t0 = meter.read(), time.time()
                for k in range(n):
                    asset_id, qn = lane_assets[k % len(lane_assets)]
                    await js.publish(
                        f"lily.{tenant}.notice.created",
                        notice(tenant, asset_id, qn, f"bench tp{r}-{k}"),
                    )
                    if k % 200 == 0:
                        progress(f"published {k}/{n}")
                came = await received(http, f"tp{r}", n, 300)
                rates["lily"].append(n / (max(came.values()) - t0))
                delta = cpu_delta(before, meter.read())
                cpu2 = {k: cpu2.get(k, 0) + v / n for k, v in delta.items()}
                size = size or 900  # (a notice's Standard Webhooks body is about this size)
                for name, (concurrency, client) in baselines.items():
                    proc = await _child(
                        "--bare",
                        f"{rx_url}/hooks",
                        str(n),
                        str(size),
                        str(concurrency),
                        client,
                        cpu=0,
                    )
                    out, _ = await proc.communicate()
                    rates[name].append(n / float(out.decode().strip()))
            _pin_tree(server.pid, None)
            for name, values in rates.items():
                print(f"   {name:20} {statistics.median(values):8.0f} deliveries/s")
            lily_rate = statistics.median(rates["lily"])
            for name in baselines:
                ratio = lily_rate / statistics.median(rates[name])
                print(f"   ratio lily/{name}: {ratio:.2f}")
            print("   (target: lily / bare httpx loop >= 0.5)")
            print("   CPU ms per delivery (lily):", _ms(cpu2, args.rounds))
    finally:
        await nc.close()
        rx.terminate()
        server.terminate()
        await server.wait()
        await stack.stop()
    return 0


def _pin_tree(pid: int, cpu: int | None) -> None:
    import psutil

    for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        _pin(p.pid, cpu)


def _ms(cpu: dict[str, float], rounds: int) -> str:
    return ", ".join(f"{k} {v * 1000 / rounds:.2f}" for k, v in cpu.items())


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--receiver":
        receiver(int(sys.argv[2]))
    elif len(sys.argv) > 6 and sys.argv[1] == "--bare":
        bare_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(asyncio.run(main()))
