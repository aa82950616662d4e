"""`lily up` (Lily itself: the embedded Postgres and NATS unless others are configured, the gRPC
core, the REST gateway and ingest worker processes) and `lily worker` (one such process)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from core import logs
from core.cli.client import ADDRESS_FILE, CREDENTIALS_FILE, GATEWAY_FILE, CliError, say
from core.settings import Settings

if TYPE_CHECKING:
    from api_gateway.server import Gateway
    from core.server import Lily

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "secret.key"  # Lily's secret key, when LILY_SECRET_KEY gives none
ADAPTER_KEY_FILE = "adapter-runtime.key"  # the adapter runtime's own credential


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from LILY_* variables, with what the flags say over them."""
    overrides: dict[str, Any] = {
        k: v
        for k, v in (
            ("data_dir", args.data_dir),
            ("grpc_port", args.grpc_port),
            ("http_port", args.http_port),
        )
        if v is not None
    }
    stores: dict[str, Any] = {}
    if args.profile is not None:
        stores["type"] = args.profile
    if args.cassandra is not None or args.janusgraph is not None:
        if args.profile == "local":
            raise CliError("--cassandra and --janusgraph are for --profile distributed")
        stores["type"] = "distributed"
        if args.cassandra is not None:
            stores["cassandra"] = {"hosts": args.cassandra}
        if args.janusgraph is not None:
            stores["janusgraph_url"] = args.janusgraph
    if stores:
        overrides["stores"] = stores
    return Settings(**overrides)


async def up(args: argparse.Namespace) -> int:
    settings = _with_secret_key(_settings(args))
    logs.configure(settings.log_level)
    await asyncio.to_thread(_count_in, settings.data_dir / "metrics")

    from core import metrics
    from core.lifecycle import StartupError
    from core.server import start
    from core.stack import EmbeddedStack, StackError

    # Handle Ctrl-C/SIGTERM from the start: a signal during start-up finishes starting, then
    # shuts everything down in order (never leaving Postgres or nats-server behind).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = None
    lily: Lily | None = None
    gateway: Gateway | None = None
    runtime: Any = None  # the adapter runtime, if one is installed (entry point lily.runtime)
    dsn, url = settings.postgres_dsn, settings.nats_url
    try:
        if not dsn or not url:
            stack = EmbeddedStack(settings.data_dir)
            say(f"lily: starting embedded Postgres and NATS under {stack.data_dir} ...")
            pg_dsn, nats_url = await stack.start()
            dsn, url = dsn or pg_dsn, url or nats_url
            say(f"lily:   Postgres ready ({stack.data_dir / 'postgres'})")
            say(f"lily:   NATS JetStream ready ({url})")
        stores = settings.stores
        if stores.type == "distributed":
            say(
                f"lily: distributed profile: Cassandra at {stores.cassandra.hosts} "
                f"(keyspace {stores.cassandra.keyspace}), JanusGraph at {stores.janusgraph_url}"
            )
        lily = await start(settings, postgres_dsn=dsn, nats_url=url)
        runtime = await _start_adapters(settings, lily, url)
        mounts: dict[str, Any] = {"/metrics": metrics.asgi}
        if runtime is not None:
            mounts[runtime.prefix] = runtime.webhooks
        gateway = await _start_gateway(settings, lily.address, mounts)
    except (StackError, StartupError) as exc:
        say(f"lily: {exc}")
        return 1
    finally:
        if gateway is None:  # whatever failed, nothing we started stays behind
            if runtime is not None:
                await runtime.stop()
            if lily is not None:
                await lily.stop()
            if stack is not None:
                await stack.stop()
    gateway_url = f"http://{settings.http_host}:{gateway.port}"
    _announce(settings, lily.address, gateway_url, lily.bootstrap_key)
    say(f"lily: gRPC listening on {lily.address} (health, reflection on)")
    say(f"lily: REST gateway on {gateway_url}/api/v1 (OpenAPI at /openapi.json)")
    if runtime is not None:
        say(f"lily: webhooks on {gateway_url}{runtime.prefix}<type>/<integration id>")
    try:
        supervisors = [
            asyncio.create_task(
                _supervise_worker(n, _worker_env(settings, dsn, url), stop), name=f"worker-{n}"
            )
            for n in range(settings.worker_processes)
        ]
        if supervisors:
            say(f"lily: {len(supervisors)} ingest worker process(es) started")
        await lily.serving()
        say("lily: ready. Ctrl-C to stop.")
        await stop.wait()
        say("lily: shutting down ...")
        await gateway.stop()
        if runtime is not None:
            await runtime.stop()
        await asyncio.gather(*supervisors)
        await lily.stop()
    finally:
        if stack is not None:
            await stack.stop()
    say("lily: stopped.")
    return 0


def _count_in(directory: Path) -> None:
    """Has this process and the ones it starts count their metrics in files under
    `directory`, emptied first, which /metrics sums (core/metrics.py); before anything
    imports prometheus_client, which reads where at import."""
    if "prometheus_client" in sys.modules:  # (`up` called inside a process that counts)
        log.warning("metrics: counted in this process only (prometheus_client came first)")
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _with_secret_key(settings: Settings) -> Settings:
    """The settings, with the secret key of the data directory (made on first use, mode 600)
    if none is given: a key kept beside the database's files, fine for one machine; give
    LILY_SECRET_KEY from a secret manager anywhere else."""
    if settings.secret_key.get_secret_value():
        return settings
    from policy.secretbox import new_key

    path = settings.data_dir / SECRET_KEY_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _write(path, new_key(), 0o600)
    return settings.model_copy(update={"secret_key": SecretStr(path.read_text().strip())})


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _announce(settings: Settings, address: str, gateway_url: str, key: str | None) -> None:
    """Writes where this Lily listens into its data directory (for the lily CLI, pointed at
    that directory), and saves and shows, once, the admin key a first start created."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    _write(data / ADDRESS_FILE, address)
    _write(data / GATEWAY_FILE, gateway_url)
    path = data / CREDENTIALS_FILE
    tenant = settings.auth.system_tenant
    if key is None:
        if path.exists():
            say(f"lily: tenant {tenant!r}: the CLI uses the admin credential in {path}")
        return
    _write(path, key, 0o600)
    say(f"lily: created tenant {tenant!r} and its admin API key (shown this once; saved to {path}")
    say(f"lily: for the lily CLI, which reads it from there with --data-dir {data}):")
    say(f"lily:   {key}")


async def _start_adapters(settings: Settings, lily: Lily, nats_url: str) -> Any:
    """The adapter runtime (found through the `lily.runtime` entry point, so core/ imports no
    adapter), started with a platform credential of its own; None if none is installed."""
    from core.lifecycle import StartupError

    found = list(entry_points(group="lily.runtime"))
    if not found or not settings.auth.enabled:
        return None
    key = await _adapter_runtime_key(settings, lily)
    try:
        return await found[0].load()(core=lily.address, token=key, nats_url=nats_url)
    except Exception as exc:
        raise StartupError(f"the adapter runtime did not start: {exc}") from exc


async def _adapter_runtime_key(settings: Settings, lily: Lily) -> str:
    """The adapter runtime's API key (role adapter_runtime in the system tenant): the one kept
    in the data directory, or one made now and kept there (mode 600)."""
    from core.requestctx import Principal

    path = settings.data_dir / ADAPTER_KEY_FILE
    if path.exists() and (key := path.read_text().strip()):
        return key
    lily_itself = Principal("lily", settings.auth.system_tenant, "lily")
    _, key = await lily.policy.credentials.create(
        lily_itself, "API_KEY", "adapter-runtime", ["adapter_runtime"], "lily up's adapter runtime"
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _write(path, key, 0o600)
    return key


async def _start_gateway(
    settings: Settings, core: str, mounts: Mapping[str, Any] | None = None
) -> Gateway:
    # The entry point composes the layers: the gateway reaches the core only through gRPC.
    from api_gateway.app import GatewaySettings
    from api_gateway.server import serve
    from core.lifecycle import StartupError

    gateway_settings = GatewaySettings(target=core, timeout=settings.gateway_timeout)
    try:
        return await serve(gateway_settings, settings.http_host, settings.http_port, mounts)
    except OSError as exc:
        raise StartupError(
            f"cannot serve the REST gateway on {settings.http_host}:{settings.http_port} "
            f"({exc.strerror or exc}); pick another --http-port"
        ) from exc


def _worker_env(settings: Settings, dsn: str, url: str) -> dict[str, str]:
    """What a `lily worker` process needs to reach the same backends as its server."""
    return {
        **os.environ,
        "LILY_POSTGRES_DSN": dsn,
        "LILY_NATS_URL": url,
        "LILY_STORES": settings.stores.model_dump_json(),
        "LILY_PARENT_PID": str(os.getpid()),
    }


async def _supervise_worker(n: int, env: dict[str, str], stop: asyncio.Event) -> None:
    """Runs `lily worker` until `stop`; restarts it if it dies; stops it with SIGTERM."""
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "core.cli", "worker", env=env, stdout=subprocess.DEVNULL
        )
        stopping = asyncio.create_task(stop.wait())
        exited = asyncio.create_task(proc.wait())
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            exited.cancel()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            return
        stopping.cancel()
        log.warning("ingest worker %d exited with %s; restarting in 1s", n, proc.returncode)
        await asyncio.sleep(1.0)


async def worker(args: argparse.Namespace) -> int:
    from core.lifecycle import StartupError
    from core.server import start_workers

    settings = Settings()
    logs.configure(settings.log_level)
    if not settings.postgres_dsn or not settings.nats_url:
        raise CliError("lily worker: set LILY_POSTGRES_DSN and LILY_NATS_URL (`lily up` does)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        workers = await start_workers(
            settings, postgres_dsn=settings.postgres_dsn, nats_url=settings.nats_url
        )
    except StartupError as exc:
        raise CliError(f"lily worker: {exc}", status=1) from None
    parent = int(os.environ.get("LILY_PARENT_PID", "0"))
    while not stop.is_set():
        if parent and os.getppid() != parent:  # orphaned: the server that started us is gone
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await workers.stop()
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    up_ = sub.add_parser(
        "up",
        help="run Lily: the embedded profile (Postgres + NATS, started here) by default, or "
        "the distributed one (assets on Cassandra, lineage on JanusGraph)",
    )
    up_.add_argument(
        "--profile",
        choices=["local", "distributed"],
        help="where metadata and lineage are kept (LILY_STORES__TYPE, default local)",
    )
    up_.add_argument(
        "--cassandra",
        help="distributed profile: Cassandra contact points host:port[,...] "
        "(LILY_STORES__CASSANDRA__HOSTS, default 127.0.0.1:9042)",
    )
    up_.add_argument(
        "--janusgraph",
        help="distributed profile: JanusGraph Gremlin URL "
        "(LILY_STORES__JANUSGRAPH_URL, default ws://127.0.0.1:8182/gremlin)",
    )
    up_.add_argument("--data-dir", help="data directory (LILY_DATA_DIR, default .lily)")
    up_.add_argument("--grpc-port", type=int, help="gRPC port (LILY_GRPC_PORT, default 50051)")
    up_.add_argument(
        "--http-port", type=int, help="HTTP gateway port (LILY_HTTP_PORT, default 8080)"
    )
    up_.set_defaults(run=up)

    wk = sub.add_parser("worker", help="run an ingest worker process (`lily up` starts these)")
    wk.set_defaults(run=worker)
