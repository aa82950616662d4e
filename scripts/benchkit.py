"""What the benchmarks share: progress lines, percentiles, a `lily up` to measure, and the CPU
its processes use."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from core.cli.progress import Progress

_progress = Progress(sys.stderr)


def progress(msg: str) -> None:
    """How far a phase is, on stderr (in place on a terminal, else a line now and then)."""
    _progress.update(f"  {msg}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def lily_up(
    data: Path, dsn: str, url: str, grpc_port: int, http_port: int = 0, **env: str
) -> asyncio.subprocess.Process:
    """`lily up` on the given Postgres and NATS, once it says it is ready (its log goes to
    data/server.log)."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        "up",
        "--data-dir",
        str(data),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        env={
            **os.environ,
            "LILY_POSTGRES_DSN": dsn,
            "LILY_NATS_URL": url,
            "LILY_LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=open(data / "server.log", "wb"),  # noqa: ASYNC230 (the child writes it)
    )
    assert server.stdout is not None
    async with asyncio.timeout(120):
        while not (line := await server.stdout.readline()).startswith(b"lily: ready"):
            if not line:
                raise SystemExit(f"lily up exited early; see {data / 'server.log'}")
    return server


async def propagation_idle(nats_url: str) -> float:
    """Waits until Lily's propagation worker has nothing pending (the events of what was just
    written: a phase that follows must not pay for them, nor a figure include a backlog);
    returns how long that took."""
    import nats

    from core.events.nats import CHANGES_STREAM, PROPAGATION_CONSUMER

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        start = time.perf_counter()
        while True:
            info = await js.consumer_info(CHANGES_STREAM, PROPAGATION_CONSUMER)
            left = info.num_pending + info.num_ack_pending
            if not left:
                return time.perf_counter() - start
            progress(f"propagation worker: {left:,} events to go")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def new_tenant(
    channel: object, data: Path, tenant_id: str, *, dedicated: bool = False
) -> tuple[tuple[str, str], ...]:
    """Creates a tenant (SHARED, or DEDICATED) as the platform admin whose key `lily up` saved
    under `data`: the call metadata of the tenant's admin."""
    from lily.v1 import policy_pb2 as policy_pb
    from lily.v1 import policy_pb2_grpc as policy_grpc

    admin = (data / "credentials").read_text().strip()
    isolation = policy_pb.TENANT_ISOLATION_UNSPECIFIED
    if dedicated:
        isolation = policy_pb.TENANT_ISOLATION_DEDICATED
    made = await policy_grpc.PolicyServiceStub(channel).CreateTenant(
        policy_pb.CreateTenantRequest(
            tenant=policy_pb.Tenant(tenant_id=tenant_id, isolation=isolation)
        ),
        metadata=(("authorization", f"Bearer {admin}"),),
        timeout=200,
    )
    return (("authorization", f"Bearer {made.admin_api_key}"),)


class CpuMeter:
    """CPU seconds used by the Lily server, Postgres and nats-server between two readings."""

    def __init__(self, server_pid: int, data: Path) -> None:
        import psutil

        self._psutil = psutil
        server = psutil.Process(server_pid)
        self.groups: dict[str, list] = {
            "lily server": [server],
            "lily workers": server.children(recursive=True),
            "postgres": [],
            "nats-server": [],
            "bench client": [psutil.Process()],
        }
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(data) in cmd and proc.info["name"] == "postgres":
                self.groups["postgres"].append(proc)
            elif str(data) in cmd and "nats-server" in cmd:
                self.groups["nats-server"].append(proc)

    def _total(self, procs: list) -> float:
        total = 0.0
        for p in procs:
            for child in [p, *(p.children(recursive=True) if p.name() == "postgres" else [])]:
                try:
                    t = child.cpu_times()
                    total += t.user + t.system
                except self._psutil.Error:
                    pass
        return total

    def read(self) -> dict[str, float]:
        return {name: self._total(procs) for name, procs in self.groups.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def cpu_line(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}s" for k, v in cpu.items())


async def ingest_tables(
    stub: Any, md: tuple[tuple[str, str], ...], names: list[str]
) -> dict[str, str]:
    """Ingests a table of each name, 500 a call (showing progress): their asset ids by name."""
    from lily.v1 import common_pb2 as common_pb
    from lily.v1 import metadata_pb2 as metadata_pb

    ids: dict[str, str] = {}
    for i in range(0, len(names), 500):
        res = await stub.IngestMetadata(
            metadata_pb.IngestMetadataRequest(
                assets=[
                    common_pb.AssetInput(qualified_name=n, asset_type=common_pb.ASSET_TYPE_TABLE)
                    for n in names[i : i + 500]
                ]
            ),
            metadata=md,
            timeout=60,
        )
        ids.update({r.qualified_name: r.asset_id for r in res.results})
        progress(f"ingested {len(ids):,} of {len(names):,} tables")
    return ids
