"""`lily ingest`, `get`, `search`, `watch` and `job`: the MetadataService from the command line."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.cli.client import RPC_TIMEOUT, Client, CliError, channel, credentials, say, show
from core.cli.progress import Progress

MAX_BATCH = 1000
# Asset types by the names people type (table, column, bi_field, ...).
ASSET_TYPES = {
    name.removeprefix("ASSET_TYPE_").lower(): number
    for name, number in common_pb.AssetType.items()
    if number
}


def _asset_type(value: str) -> int:
    """An --type value as its AssetType (argparse refuses anything else, listing them)."""
    found = ASSET_TYPES.get(value.lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an asset type (one of: {', '.join(ASSET_TYPES)})"
        )
    return found


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def _batch_size(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}")
    return n


# -- ingest -----------------------------------------------------------------------------------


@contextmanager
def _checked(path: str) -> Iterator[tuple[Path, int]]:
    """The JSON-lines file (standard input copied to a temporary file first), checked whole:
    its path and how many assets it holds. A malformed line refuses the file before anything
    is sent (CliError naming the first one, and how many there are)."""
    with tempfile.TemporaryDirectory(prefix="lily-ingest-") as tmp:
        source = Path(path)
        if path == "-":
            source = Path(tmp) / "stdin.jsonl"
            with source.open("wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f)
        try:
            stream = source.open(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        bad: list[str] = []
        count = 0
        with stream:
            try:
                for n, line in enumerate(stream, start=1):
                    if not line.strip():
                        continue
                    try:
                        json_format.Parse(line, common_pb.AssetInput())
                        count += 1
                    except json_format.ParseError as exc:
                        bad.append(f"{path}:{n}: {exc}")
            except UnicodeDecodeError as exc:
                raise CliError(f"{path} is not UTF-8 text ({exc.reason})") from None
        if bad:
            more = f" (and {len(bad) - 1} more malformed lines)" if len(bad) > 1 else ""
            raise CliError(f"{bad[0]}{more}; nothing was ingested")
        yield source, count


def _lines(stream: IO[str], n: int) -> list[common_pb.AssetInput]:
    batch: list[common_pb.AssetInput] = []
    while len(batch) < n and (line := stream.readline()):
        if line.strip():
            batch.append(json_format.Parse(line, common_pb.AssetInput()))
    return batch


async def _ingest(args: argparse.Namespace) -> int:
    progress = Progress()
    with _checked(args.file) as (source, total):

        async def requests() -> AsyncIterator[metadata_pb.IngestMetadataStreamRequest]:
            sent = 0
            with source.open(encoding="utf-8") as stream:
                while batch := await asyncio.to_thread(_lines, stream, args.batch):
                    yield metadata_pb.IngestMetadataStreamRequest(assets=batch)
                    sent += len(batch)
                    progress.update(f"lily: sent {sent:,} of {total:,} assets")
            progress.done(f"lily: sent {sent:,} assets")

        async with channel(args) as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            summary = await stub.IngestMetadataStream(
                requests(), metadata=await credentials(args), timeout=args.timeout
            )
            say(
                f"lily: job {summary.bulk_job_id}: received {summary.received}, created "
                f"{summary.created}, updated {summary.updated}, unchanged {summary.unchanged}, "
                f"stale {summary.stale}, queued {summary.accepted}, rejected {summary.rejected}"
            )
            for r in summary.rejections:
                say(f"  rejected #{r.index} {r.qualified_name!r}: {r.error.message}")
            if args.wait:
                await _follow_job(stub, args, summary.bulk_job_id)
    return 1 if summary.rejected else 0


async def _follow_job(
    stub: metadata_grpc.MetadataServiceStub, args: argparse.Namespace, job_id: str
) -> metadata_pb.BulkJob:
    progress = Progress()
    while True:
        job = (
            await stub.GetBulkJob(
                metadata_pb.GetBulkJobRequest(job_id=job_id),
                metadata=await credentials(args),
                timeout=RPC_TIMEOUT,
            )
        ).job
        done = job.written + job.unchanged + job.stale
        state = metadata_pb.BulkJobState.Name(job.state).removeprefix("BULK_JOB_STATE_").lower()
        progress.update(
            f"lily: job {state}: {done:,}/{job.accepted:,} settled, {job.failed:,} failed"
        )
        if job.state in (metadata_pb.BULK_JOB_STATE_SUCCEEDED, metadata_pb.BULK_JOB_STATE_FAILED):
            progress.done()
            return job
        await asyncio.sleep(0.5)


# -- reads ------------------------------------------------------------------------------------


async def _get(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        stub = metadata_grpc.MetadataServiceStub(ch)
        if "://" in args.id:
            resp: Any = await stub.LookupMetadata(
                metadata_pb.LookupMetadataRequest(
                    qualified_name=args.id, include_deleted=args.deleted
                ),
                metadata=await credentials(args),
                timeout=RPC_TIMEOUT,
            )
        else:
            resp = await stub.GetMetadata(
                metadata_pb.GetMetadataRequest(asset_id=args.id, include_deleted=args.deleted),
                metadata=await credentials(args),
                timeout=RPC_TIMEOUT,
            )
        show(resp.asset)
    return 0


async def _search(args: argparse.Namespace) -> int:
    req = metadata_pb.SearchMetadataRequest(
        asset_type=common_pb.AssetType.ValueType(args.type or 0),
        tag=args.tag or "",
        qualified_name_prefix=args.prefix or "",
        owner=args.owner or "",
        data_source=args.source or "",
        include_deleted=args.deleted,
        page_token=args.after or "",
    )
    shown = 0
    more = ""  # where the next page starts, if more assets match
    async with channel(args) as ch:
        stub = metadata_grpc.MetadataServiceStub(ch)
        while shown < args.limit:
            req.page_size = min(args.limit - shown, 1000)
            resp = await stub.SearchMetadata(
                req, metadata=await credentials(args), timeout=RPC_TIMEOUT
            )
            for a in resp.assets:
                tags = ",".join(t.name for t in a.effective_tags)
                kind = common_pb.AssetType.Name(a.asset_type).removeprefix("ASSET_TYPE_")
                say(
                    f"{a.asset_id}  {kind:<9} v{a.version:<3} {a.qualified_name}"
                    + (f"  [{tags}]" if tags else "")
                    + ("  (deleted)" if a.is_deleted else "")
                )
                shown += 1
            more = resp.next_page_token
            if not more:
                break
            req.page_token = more
    if not more:
        say(f"({shown} shown)")
    else:
        say(f"({shown} shown; there may be more: raise --limit, or go on with --after={more})")
    return 0


async def _watch(args: argparse.Namespace) -> int:
    req = metadata_pb.WatchChangesRequest(tags=args.tag or [], asset_types=args.type or [])
    async with channel(args) as ch:
        stub = metadata_grpc.MetadataServiceStub(ch)
        print("lily: watching; Ctrl-C to stop", file=sys.stderr, flush=True)
        async for resp in stub.WatchChanges(req, metadata=await credentials(args)):
            e = resp.event
            entity = events_pb.EntityKind.Name(e.entity).removeprefix("ENTITY_KIND_").lower()
            change = events_pb.ChangeKind.Name(e.change).removeprefix("CHANGE_KIND_").lower()
            tags = f"  tags={','.join(e.tags)}" if e.tags else ""
            say(
                f"{e.occurred_at.ToJsonString()}  {entity}.{change:<9} {e.qualified_name}"
                f"  v{e.asset_version}  by {e.actor}"
                + (f"  fields={','.join(e.changed_fields)}" if e.changed_fields else "")
                + tags
            )
    return 0


async def _job(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        stub = metadata_grpc.MetadataServiceStub(ch)
        if args.wait:
            show(await _follow_job(stub, args, args.job_id))
        else:
            found = await stub.GetBulkJob(
                metadata_pb.GetBulkJobRequest(job_id=args.job_id),
                metadata=await credentials(args),
                timeout=RPC_TIMEOUT,
            )
            show(found.job)
    return 0


def add_commands(client: Client) -> None:
    ing = client("ingest", "ingest a JSON-lines file of AssetInput objects ('-' for stdin)")
    ing.add_argument("file")
    ing.add_argument(
        "--batch", type=_batch_size, default=500, help="assets per stream message (max 1000)"
    )
    ing.add_argument("--wait", action="store_true", help="follow the bulk job until it finishes")
    ing.add_argument("--timeout", type=float, default=3600.0, help="seconds before giving up")
    ing.set_defaults(run=_ingest)

    get = client("get", "show an asset by id or qualified name")
    get.add_argument("id", help="asset id, or a qualified name (contains ://)")
    get.add_argument("--deleted", action="store_true", help="show it even if deleted")
    get.set_defaults(run=_get)

    types = ", ".join(ASSET_TYPES)
    se = client("search", "search assets")
    se.add_argument("--type", type=_asset_type, help=f"asset type: {types}")
    se.add_argument("--tag")
    se.add_argument("--prefix", help="qualified-name prefix")
    se.add_argument("--owner")
    se.add_argument("--source", help="data source")
    se.add_argument("--deleted", action="store_true", help="include deleted assets")
    se.add_argument(
        "--limit", type=_positive, default=50, help="show at most this many (default 50)"
    )
    se.add_argument("--after", help="go on from where an earlier search stopped (its token)")
    se.set_defaults(run=_search)

    w = client("watch", "follow changes live")
    w.add_argument("--tag", action="append", help="only changes touching this tag (repeatable)")
    w.add_argument(
        "--type", type=_asset_type, action="append", help=f"only this asset type: {types}"
    )
    w.set_defaults(run=_watch)

    j = client("job", "show a bulk job's progress")
    j.add_argument("job_id")
    j.add_argument("--wait", action="store_true", help="follow it until it finishes")
    j.set_defaults(run=_job)
