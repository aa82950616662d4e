"""Benchmark: GetMetadata through the REST gateway vs the same call over gRPC, in one run.

    .venv/bin/python scripts/bench_gateway.py [--calls 3000] [--concurrency 16] [--seconds 5]

Starts its own embedded Postgres and NATS and a `lily up` (gRPC server and gateway in one
process, as users run it), ingests some assets, then measures for each path:
1. latency: sequential calls, p50 and p99 (the gateway's added cost is the p50 difference);
2. throughput: `--concurrency` clients calling for `--seconds`, requests/s.
Both sides are driven by the client library a user of each would take: grpc.aio for gRPC,
httpx (HTTP/1.1, keep-alive, one connection per client) for REST. The CPU of the Lily process
and of the benchmark's own client per call is printed for each path, so the server's cost
can be compared whatever the two clients weigh. Both paths are timed alternately, twice, and
the better run of each is kept (the machine is shared and noisy)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedStack, free_port
from scripts.benchkit import CpuMeter, cpu_delta, lily_up, new_tenant, pct, progress

TENANT = "bench"


Cpu = tuple[float, float]  # CPU seconds: (lily server, this client)


async def latency(call: Callable[[], Awaitable[None]], n: int, label: str) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
        if i % 500 == 0:
            progress(f"{label}: {i}/{n}")
    return out


async def throughput(
    make_call: Callable[[int], Callable[[], Awaitable[None]]],
    clients: int,
    seconds: float,
    label: str,
) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done
        call = make_call(k)
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    progress(f"{label}: {clients} clients for {seconds:.0f} s")
    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.perf_counter() - start)


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily gateway vs direct gRPC benchmark")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="lily-bench-gw-"))
    print(f"lily gateway bench: data under {data}")
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    grpc_port, http_port = free_port(), free_port()
    server = await lily_up(data, dsn, url, grpc_port, http_port, LILY_WORKER_PROCESSES="0")
    clients: list[httpx.AsyncClient] = []
    meter = CpuMeter(server.pid, data / "stack")

    def cpu_of(c0: dict[str, float], calls: int) -> Cpu:
        d = cpu_delta(c0, meter.read())
        return d["lily server"] / calls, d["bench client"] / calls

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = metadata_grpc.MetadataServiceStub(channel)
            md = await new_tenant(channel, data, TENANT)
            assets = [
                common_pb.AssetInput(
                    qualified_name=f"pg://bench/db/s/t{i}",
                    asset_type=common_pb.ASSET_TYPE_TABLE,
                    description="a table",
                    owners=["data-eng"],
                    tags=[common_pb.TagAssignment(name="PII")],
                    attributes={"rows": str(i)},
                )
                for i in range(100)
            ]
            result = await stub.IngestMetadata(
                metadata_pb.IngestMetadataRequest(assets=assets), metadata=md, timeout=30
            )
            ids = [r.asset_id for r in result.results]

            def grpc_call(k: int) -> Callable[[], Awaitable[None]]:
                counter = iter(range(10**9))

                async def call() -> None:
                    aid = ids[(next(counter) + k) % len(ids)]
                    await stub.GetMetadata(
                        metadata_pb.GetMetadataRequest(asset_id=aid), metadata=md, timeout=10
                    )

                return call

            def http_call(k: int) -> Callable[[], Awaitable[None]]:
                client = httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{http_port}",
                    headers={"authorization": dict(md)["authorization"]},
                    limits=httpx.Limits(max_connections=1),
                    timeout=10,
                )
                clients.append(client)
                counter = iter(range(10**9))

                async def call() -> None:
                    aid = ids[(next(counter) + k) % len(ids)]
                    res = await client.get(f"/api/v1/metadata/{aid}")
                    if res.status_code != 200:
                        raise SystemExit(f"gateway answered {res.status_code}: {res.text[:200]}")

                return call

            await http_call(0)()  # warm up both paths
            await grpc_call(0)()
            runs: dict[str, list[tuple[list[float], float, Cpu]]] = {"grpc": [], "gateway": []}
            for _ in range(2):
                for name, make in (("grpc", grpc_call), ("gateway", http_call)):
                    c0 = meter.read()
                    ms = await latency(make(0), args.calls, f"{name} latency")
                    cpu = cpu_of(c0, args.calls)
                    rps = await throughput(make, args.concurrency, args.seconds, f"{name} rps")
                    runs[name].append((ms, rps, cpu))
        print(file=sys.stderr)
        best = {
            name: (
                min((r[0] for r in found), key=statistics.median),
                max(r[1] for r in found),
                min((r[2] for r in found), key=sum),
            )
            for name, found in runs.items()
        }
        (g_ms, g_rps, g_cpu), (w_ms, w_rps, w_cpu) = best["grpc"], best["gateway"]
        print(f"\nGetMetadata, {args.calls} sequential calls (better of 2 runs)")
        for label, ms in (("gRPC direct", g_ms), ("REST gateway", w_ms)):
            print(f"  {label:<14} p50 {statistics.median(ms):6.2f} ms  p99 {pct(ms, 99):6.2f} ms")
        added = statistics.median(w_ms) - statistics.median(g_ms)
        print(f"  gateway adds   p50 {added:6.2f} ms   (target < 1 ms)")
        print(f"  ratio p99 gateway/gRPC {pct(w_ms, 99) / pct(g_ms, 99):6.2f}")
        print("  CPU-us per call (the lesser of 2 runs):")
        for label, (server_s, client_s) in (("gRPC direct", g_cpu), ("REST gateway", w_cpu)):
            print(
                f"    {label:<14} lily server {server_s * 1e6:6.0f}   client {client_s * 1e6:6.0f}"
            )
        print(f"  ratio server CPU per call gateway/gRPC {w_cpu[0] / g_cpu[0]:6.2f}")
        print(f"\nGetMetadata, {args.concurrency} concurrent clients for {args.seconds:.0f} s")
        print(f"  gRPC direct    {g_rps:>8,.0f} requests/s")
        print(f"  REST gateway   {w_rps:>8,.0f} requests/s")
        print(f"  ratio gateway/gRPC {w_rps / g_rps:6.2f}   (target >= 0.5)")
    finally:
        for client in clients:
            await client.aclose()
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
