"""The `lily` command: run Lily (`lily up`) and use it (ingest, get, search, watch, job; and
policy, tenant and credential commands from policy/cli.py).

Client commands authenticate with --token (LILY_TOKEN): an API key or a bearer token; by
default the credential `lily up` saved under its data directory (`.lily/credentials`).
Output is for people; the server's logs are JSON lines on stderr."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
import pydantic
from google.protobuf import json_format
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core import logs
from core.settings import Settings

if TYPE_CHECKING:
    from api_gateway.server import Gateway

DEFAULT_ADDR = "127.0.0.1:50051"
RPC_TIMEOUT = 30.0
CREDENTIALS_FILE = "credentials"


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- lily up ---------------------------------------------------------------------------------


async def _up(args: argparse.Namespace) -> int:
    from core.server import Lily, StartupError, start
    from core.stack import EmbeddedStack, StackError

    overrides = {
        k: v
        for k, v in (
            ("data_dir", args.data_dir),
            ("grpc_port", args.grpc_port),
            ("http_port", args.http_port),
            ("profile", args.profile),
            ("janusgraph_url", args.janusgraph),
        )
        if v is not None
    }
    settings = Settings(**overrides)
    if args.cassandra is not None:
        settings.cassandra.hosts = args.cassandra
    logs.configure(settings.log_level)
    # Handle Ctrl-C/SIGTERM from the start: a signal during start-up finishes starting, then
    # shuts everything down in order (never leaving Postgres or nats-server behind).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = None
    lily: Lily | None = None
    gateway: Gateway | None = None
    dsn, url = settings.postgres_dsn, settings.nats_url
    try:
        if not dsn or not url:
            stack = EmbeddedStack(settings.data_dir)
            say(f"lily: starting embedded Postgres and NATS under {stack.data_dir} ...")
            pg_dsn, nats_url = await stack.start()
            dsn, url = dsn or pg_dsn, url or nats_url
            say(f"lily:   Postgres ready ({stack.data_dir / 'postgres'})")
            say(f"lily:   NATS JetStream ready ({url})")
        if settings.profile == "distributed":
            say(
                f"lily: distributed profile: Cassandra at {settings.cassandra.hosts} "
                f"(keyspace {settings.cassandra.keyspace}), JanusGraph at {settings.janusgraph_url}"
            )
        lily = await start(settings, postgres_dsn=dsn, nats_url=url)
        gateway = await _start_gateway(settings, lily.address)
    except (StackError, StartupError) as exc:
        say(f"lily: {exc}")
        return 1
    finally:
        if gateway is None:  # whatever failed, nothing we started stays behind
            if lily is not None:
                await lily.stop()
            if stack is not None:
                await stack.stop()
    _announce_credential(settings, lily.bootstrap_key)
    say(f"lily: gRPC listening on {lily.address} (health, reflection on)")
    say(
        f"lily: REST gateway on http://{settings.http_host}:{gateway.port}/api/v1 "
        f"(OpenAPI at /openapi.json)"
    )
    try:
        supervisors = [
            asyncio.create_task(
                _supervise_worker(n, _worker_env(settings, dsn, url), stop), name=f"worker-{n}"
            )
            for n in range(settings.worker_processes)
        ]
        if supervisors:
            say(f"lily: {len(supervisors)} ingest worker process(es) started")
        say("lily: ready. Ctrl-C to stop.")
        await stop.wait()
        say("lily: shutting down ...")
        await gateway.stop()
        await asyncio.gather(*supervisors)
        await lily.stop()
    finally:
        if stack is not None:
            await stack.stop()
    say("lily: stopped.")
    return 0


def _announce_credential(settings: Settings, key: str | None) -> None:
    """Saves (for the lily CLI) and shows, once, the admin key a first start created."""
    path = settings.data_dir / CREDENTIALS_FILE
    tenant = settings.auth.system_tenant
    if key is None:
        if path.exists():
            say(f"lily: tenant {tenant!r}: the CLI uses the admin credential in {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    say(f"lily: created tenant {tenant!r} and its admin API key (shown this once; saved to {path}")
    say("lily: for the lily CLI, which reads it from there):")
    say(f"lily:   {key}")


async def _start_gateway(settings: Settings, core: str) -> Gateway:
    # The entry point composes the layers: the gateway reaches the core only through gRPC.
    from api_gateway.app import GatewaySettings
    from api_gateway.server import serve
    from core.server import StartupError

    gateway_settings = GatewaySettings(target=core, timeout=settings.gateway_timeout)
    try:
        return await serve(gateway_settings, settings.http_host, settings.http_port)
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
        "LILY_PROFILE": settings.profile,
        "LILY_CASSANDRA": settings.cassandra.model_dump_json(),
        "LILY_JANUSGRAPH_URL": settings.janusgraph_url,
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
        logging.getLogger(__name__).warning(
            "ingest worker %d exited with %s; restarting in 1s", n, proc.returncode
        )
        await asyncio.sleep(1.0)


async def _worker(args: argparse.Namespace) -> int:
    from core.server import StartupError, start_workers

    settings = Settings()
    logs.configure(settings.log_level)
    if not settings.postgres_dsn or not settings.nats_url:
        say("lily worker: set LILY_POSTGRES_DSN and LILY_NATS_URL (`lily up` does)")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        workers = await start_workers(
            settings, postgres_dsn=settings.postgres_dsn, nats_url=settings.nats_url
        )
    except StartupError as exc:
        say(f"lily worker: {exc}")
        return 1
    parent = int(os.environ.get("LILY_PARENT_PID", "0"))
    while not stop.is_set():
        if parent and os.getppid() != parent:  # orphaned: the server that started us is gone
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    await workers.stop()
    return 0


# -- client commands -------------------------------------------------------------------------


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The call's credential: --token (LILY_TOKEN), else the one `lily up` saved."""
    token = args.token
    if not token:
        path = Settings().data_dir / CREDENTIALS_FILE
        try:
            token = path.read_text().strip()
        except OSError:
            raise SystemExit(
                f"lily: no credential: pass --token (or LILY_TOKEN), or run `lily up` here "
                f"first (it saves the admin's key to {path})"
            ) from None
    return (("authorization", f"Bearer {token}"),)


def _channel(args: argparse.Namespace) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(args.addr)


def _show(msg: Any) -> None:
    say(json_format.MessageToJson(msg, indent=2))


class _BadLine(Exception):
    pass


def _read_jsonl(path: str) -> Iterator[common_pb.AssetInput]:
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for n, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield json_format.Parse(line, common_pb.AssetInput())
                except json_format.ParseError as exc:
                    raise _BadLine(f"{path}:{n}: {exc}") from exc


async def _ingest(args: argparse.Namespace) -> int:
    bad_line: list[str] = []

    async def batches() -> AsyncIterator[metadata_pb.IngestMetadataStreamRequest]:
        # A malformed line ends the stream there: what came before it is ingested and reported.
        batch: list[common_pb.AssetInput] = []
        sent = 0
        try:
            for asset in _read_jsonl(args.file):
                batch.append(asset)
                if len(batch) == args.batch:
                    sent += len(batch)
                    yield metadata_pb.IngestMetadataStreamRequest(assets=batch)
                    print(f"\rlily: sent {sent} assets", end="", file=sys.stderr, flush=True)
                    batch = []
        except _BadLine as exc:
            bad_line.append(str(exc))
        if batch:
            sent += len(batch)
            yield metadata_pb.IngestMetadataStreamRequest(assets=batch)
        print(f"\rlily: sent {sent} assets", file=sys.stderr, flush=True)

    async with _channel(args) as channel:
        stub = metadata_grpc.MetadataServiceStub(channel)
        summary = await stub.IngestMetadataStream(
            batches(), metadata=_metadata(args), timeout=args.timeout
        )
        say(
            f"lily: job {summary.bulk_job_id}: received {summary.received}, created "
            f"{summary.created}, updated {summary.updated}, unchanged {summary.unchanged}, "
            f"stale {summary.stale}, queued {summary.accepted}, rejected {summary.rejected}"
        )
        for r in summary.rejections:
            say(f"  rejected #{r.index} {r.qualified_name!r}: {r.error.message}")
        if bad_line:
            say(f"lily: stopped at a malformed line, {bad_line[0]}")
        if args.wait:
            await _follow_job(stub, args, summary.bulk_job_id)
    return 1 if summary.rejected or bad_line else 0


async def _follow_job(
    stub: metadata_grpc.MetadataServiceStub, args: argparse.Namespace, job_id: str
) -> metadata_pb.BulkJob:
    while True:
        job = (
            await stub.GetBulkJob(
                metadata_pb.GetBulkJobRequest(job_id=job_id),
                metadata=_metadata(args),
                timeout=RPC_TIMEOUT,
            )
        ).job
        done = job.written + job.unchanged + job.stale
        print(
            f"\rlily: job {metadata_pb.BulkJobState.Name(job.state)[15:].lower()}: "
            f"{done}/{job.accepted} settled, {job.failed} failed",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if job.state in (metadata_pb.BULK_JOB_STATE_SUCCEEDED, metadata_pb.BULK_JOB_STATE_FAILED):
            print(file=sys.stderr)
            return job
        await asyncio.sleep(0.5)


async def _get(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        stub = metadata_grpc.MetadataServiceStub(channel)
        if args.id.count("://"):
            resp: Any = await stub.LookupMetadata(
                metadata_pb.LookupMetadataRequest(
                    qualified_name=args.id, include_deleted=args.deleted
                ),
                metadata=_metadata(args),
                timeout=RPC_TIMEOUT,
            )
        else:
            resp = await stub.GetMetadata(
                metadata_pb.GetMetadataRequest(asset_id=args.id, include_deleted=args.deleted),
                metadata=_metadata(args),
                timeout=RPC_TIMEOUT,
            )
        _show(resp.asset)
    return 0


async def _search(args: argparse.Namespace) -> int:
    req = metadata_pb.SearchMetadataRequest(
        asset_type=common_pb.AssetType.Value(f"ASSET_TYPE_{args.type.upper()}") if args.type else 0,
        tag=args.tag or "",
        qualified_name_prefix=args.prefix or "",
        owner=args.owner or "",
        data_source=args.source or "",
        include_deleted=args.deleted,
        page_size=min(args.limit, 1000),
    )
    shown = 0
    async with _channel(args) as channel:
        stub = metadata_grpc.MetadataServiceStub(channel)
        while shown < args.limit:
            resp = await stub.SearchMetadata(req, metadata=_metadata(args), timeout=RPC_TIMEOUT)
            for a in resp.assets[: args.limit - shown]:
                tags = ",".join(t.name for t in a.effective_tags)
                kind = common_pb.AssetType.Name(a.asset_type)[11:]
                say(
                    f"{a.asset_id}  {kind:<9} v{a.version:<3} {a.qualified_name}"
                    + (f"  [{tags}]" if tags else "")
                    + ("  (deleted)" if a.is_deleted else "")
                )
                shown += 1
            if not resp.next_page_token:
                break
            req.page_token = resp.next_page_token
    say(f"({shown} shown)")
    return 0


async def _watch(args: argparse.Namespace) -> int:
    req = metadata_pb.WatchChangesRequest(
        tags=args.tag or [],
        asset_types=[common_pb.AssetType.Value(f"ASSET_TYPE_{t.upper()}") for t in args.type or []],
    )
    async with _channel(args) as channel:
        stub = metadata_grpc.MetadataServiceStub(channel)
        print("lily: watching; Ctrl-C to stop", file=sys.stderr, flush=True)
        async for resp in stub.WatchChanges(req, metadata=_metadata(args)):
            e = resp.event
            entity = events_pb.EntityKind.Name(e.entity)[len("ENTITY_KIND_") :].lower()
            change = events_pb.ChangeKind.Name(e.change)[len("CHANGE_KIND_") :].lower()
            tags = f"  tags={','.join(e.tags)}" if e.tags else ""
            say(
                f"{e.occurred_at.ToJsonString()}  {entity}.{change:<9} {e.qualified_name}"
                f"  v{e.asset_version}  by {e.actor}"
                + (f"  fields={','.join(e.changed_fields)}" if e.changed_fields else "")
                + tags
            )
    return 0


async def _job(args: argparse.Namespace) -> int:
    async with _channel(args) as channel:
        stub = metadata_grpc.MetadataServiceStub(channel)
        if args.wait:
            _show(await _follow_job(stub, args, args.job_id))
        else:
            _show(
                (
                    await stub.GetBulkJob(
                        metadata_pb.GetBulkJobRequest(job_id=args.job_id),
                        metadata=_metadata(args),
                        timeout=RPC_TIMEOUT,
                    )
                ).job
            )
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lily", description="Lily, a near-real-time metadata plane.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up",
        help="run Lily: the embedded profile (Postgres + NATS, started here) by default, or "
        "the distributed one (assets on Cassandra, lineage on JanusGraph)",
    )
    up.add_argument(
        "--profile",
        choices=["local", "distributed"],
        help="deployment profile (LILY_PROFILE, default local)",
    )
    up.add_argument(
        "--cassandra",
        help="distributed profile: Cassandra contact points host:port[,...] "
        "(LILY_CASSANDRA__HOSTS, default 127.0.0.1:9042)",
    )
    up.add_argument(
        "--janusgraph",
        help="distributed profile: JanusGraph Gremlin URL "
        "(LILY_JANUSGRAPH_URL, default ws://127.0.0.1:8182/gremlin)",
    )
    up.add_argument("--data-dir", help="data directory (LILY_DATA_DIR, default .lily)")
    up.add_argument("--grpc-port", type=int, help="gRPC port (LILY_GRPC_PORT, default 50051)")
    up.add_argument(
        "--http-port", type=int, help="HTTP gateway port (LILY_HTTP_PORT, default 8080)"
    )
    up.set_defaults(run=_up)

    wk = sub.add_parser("worker", help="run an ingest worker process (`lily up` starts these)")
    wk.set_defaults(run=_worker)

    def client(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument(
            "--addr",
            default=os.environ.get("LILY_ADDR", DEFAULT_ADDR),
            help=f"Lily's gRPC address (LILY_ADDR, default {DEFAULT_ADDR})",
        )
        c.add_argument(
            "--token",
            default=os.environ.get("LILY_TOKEN", ""),
            help="API key or bearer token (LILY_TOKEN; default: the admin key `lily up` saved "
            "in $LILY_DATA_DIR/credentials). The tenant is the credential's.",
        )
        return c

    ing = client("ingest", "ingest a JSON-lines file of AssetInput objects ('-' for stdin)")
    ing.add_argument("file")
    ing.add_argument("--batch", type=int, default=500, help="assets per stream message (max 1000)")
    ing.add_argument("--wait", action="store_true", help="follow the bulk job until it finishes")
    ing.add_argument("--timeout", type=float, default=3600.0, help="seconds before giving up")
    ing.set_defaults(run=_ingest)

    get = client("get", "show an asset by id or qualified name")
    get.add_argument("id", help="asset id, or a qualified name (contains ://)")
    get.add_argument("--deleted", action="store_true", help="show it even if deleted")
    get.set_defaults(run=_get)

    se = client("search", "search assets")
    se.add_argument("--type", help="asset type, e.g. table, column")
    se.add_argument("--tag")
    se.add_argument("--prefix", help="qualified-name prefix")
    se.add_argument("--owner")
    se.add_argument("--source", help="data source")
    se.add_argument("--deleted", action="store_true", help="include deleted assets")
    se.add_argument("--limit", type=int, default=50)
    se.set_defaults(run=_search)

    w = client("watch", "follow changes live")
    w.add_argument("--tag", action="append", help="only changes touching this tag (repeatable)")
    w.add_argument("--type", action="append", help="only this asset type (repeatable)")
    w.set_defaults(run=_watch)

    j = client("job", "show a bulk job's progress")
    j.add_argument("job_id")
    j.add_argument("--wait", action="store_true", help="follow it until it finishes")
    j.set_defaults(run=_job)

    from policy.cli import add_commands

    add_commands(sub, client)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "batch", 1) > 1000:
        raise SystemExit("lily: --batch is at most 1000")
    if args.command == "ingest" and args.file != "-" and not os.path.isfile(args.file):
        raise SystemExit(f"lily: no such file: {args.file}")
    try:
        return asyncio.run(args.run(args))
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        say(f"lily: bad settings: {problems}")
        return 2
    except KeyboardInterrupt:
        return 130
    except grpc.aio.AioRpcError as exc:
        say(f"lily: {exc.code().name}: {exc.details()}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
