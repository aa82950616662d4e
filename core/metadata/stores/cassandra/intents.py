"""The Cassandra asset store's commit protocol, and the outbox of its intents.

How a transaction is made all-or-nothing without multi-partition transactions:

1. Under per-asset locks (this process), read the current rows and run the domain plan.
2. Write the plan as one *intent* (the asset rows with their write timestamps, issues, audit
   rows, bulk-job counts, dedupe keys, and the packed change events) into the outbox table;
   its head goes last, in one logged batch with the dedupe keys. That batch is the commit.
3. Apply the intent's writes. Every write carries an explicit timestamp and a deterministic
   key, so applying an intent again changes nothing.
4. The outbox relay publishes the events and deletes the intent (fast path); an intent left
   behind (a crash, the bus down) is applied again and published by the relay's poll.

A failure before 2 leaves nothing; after 2, everything is written eventually. Readers may see
part of a transaction while it is applied (as with a Cassandra logged batch: atomic, not
isolated)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
import zlib
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

import orjson
from cassandra.query import BatchStatement, BatchType
from cassandra.util import max_uuid_from_time, uuid_from_time

from core import cassandra
from core.domain.errors import Unavailable
from core.domain.rules import Plan
from core.events.codec import encode_change
from core.events.outbox import pack_events, unpack_events
from core.metadata.stores.cassandra.rows import (
    ASSET_COLUMNS,
    COUNT_FIELDS,
    Clock,
    ancestors,
    asset_from_row,
    asset_row,
    audit_row,
    issue_from_row,
    issue_row,
    micros,
    month,
    parent_dir,
)
from core.metadata.stores.cassandra.statements import Statements, unavailable
from core.ports import OutboxRecord, Snapshot, TxRequest
from core.tracing import tracer

_INTENT_PART = 1 << 20  # bytes per outbox row of an intent
_BUCKET_SECONDS = 10  # outbox partitions: 10 s of intents each


class _KeyLocks:
    """asyncio locks by key, made on demand and dropped when nobody holds or waits for them.
    Keys are taken in sorted order, so two holders of overlapping sets cannot deadlock."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        held: list[str] = []
        try:
            for key in sorted(set(keys)):
                lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
                users[0] += 1
                try:
                    await lock.acquire()
                except BaseException:
                    self._leave(key, users)
                    raise
                held.append(key)
            yield
        finally:
            for key in held:
                lock, users = self._locks[key]
                lock.release()
                self._leave(key, users)

    def _leave(self, key: str, users: list[int]) -> None:
        users[0] -= 1
        if users[0] == 0:
            del self._locks[key]


def _pack_intent(writes: Mapping[str, Any], events: bytes) -> bytes:
    body = zlib.compress(orjson.dumps(writes), 1)
    return struct.pack(">I", len(body)) + body + events


def _unpack_intent(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack_from(">I", blob)
    return orjson.loads(zlib.decompress(blob[4 : 4 + n])), blob[4 + n :]


class Intents:
    """Transactions as intents (see the module docstring), and the outbox
    (core.ports.Outbox) of the intents written."""

    def __init__(self, db: Statements, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._locks = _KeyLocks()
        self._known_dirs: set[tuple[str, str, str]] = set()  # markers written by this process
        self._owner = uuid.uuid4()  # this writer, in ingest_claims

    async def transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        with (
            tracer.start_as_current_span(
                "cassandra.assets.transact",
                attributes={
                    "db.system": "cassandra",
                    "lily.tenant": tenant_id,
                    "lily.assets": len(request.asset_ids),
                },
            ),
            unavailable("transact"),
        ):
            async with self._locks.hold(f"{tenant_id}\0{i}" for i in request.asset_ids):
                return await self._transact_locked(tenant_id, request, plan)

    async def _transact_locked(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        keys = sorted(set(request.dedupe_keys))
        rows, issue_pages, applied_rows = await asyncio.gather(
            self._db.read_chunked("read_assets", tenant_id, sorted(set(request.asset_ids))),
            asyncio.gather(
                *(self._db.q("read_issue", (tenant_id, a, i)) for a, i in request.issue_ids)
            ),
            self._db.read_chunked("read_applied", tenant_id, keys),
        )
        existing = {r.asset_id: asset_from_row(r) for r in rows}
        write_times: dict[str, int] = {r.asset_id: r.wt for r in rows}
        issues = {r.issue_id: issue_from_row(r) for page in issue_pages for r in page}
        applied = {r.stream_seq for r in applied_rows}
        fresh = frozenset(k for k in keys if k not in applied)
        await self._claim(tenant_id, fresh)

        result = plan(Snapshot(existing, issues, fresh))
        counts = request.job_counts() if request.job_counts is not None else {}
        if not (result.saves or result.issues or result.changes or counts or fresh):
            return result

        now = self._clock.now_us()
        batch_id = uuid_from_time(now / 1e6)
        latest = {a.asset_id: a for a in result.saves}
        assets = []
        for a in latest.values():
            ts = micros(a.source_event_time)
            if a.asset_id in write_times:  # strictly after the stored write, so this one wins
                ts = max(ts, write_times[a.asset_id] + 1)
            assets.append([asset_row(a), ts, a.asset_id not in existing])
        writes = {
            "ts": now,
            "assets": assets,
            "issues": [issue_row(i) for i in result.issues],
            "audit": [
                audit_row(tenant_id, c, month(now), self._clock.seq()) for c in result.changes
            ],
            "jobs": {job: [getattr(n, f) for f in COUNT_FIELDS] for job, n in counts.items()},
            "applied": sorted(fresh),
        }
        events = [
            (c.event_id, c.subject, encode_change(c), c.trace_headers) for c in result.changes
        ]
        bucket = await self._write_intent(
            tenant_id, batch_id, now, writes, pack_events(events) if events else b""
        )
        await self.apply(tenant_id, batch_id, writes)
        if events:
            result.outbox = [OutboxRecord((bucket, batch_id), e, s, p, h) for e, s, p, h in events]
        else:  # nothing to publish: the intent has done its work
            await self._db.q("delete_intent", (bucket, batch_id))
        return result

    async def _claim(self, tenant_id: str, keys: Collection[int]) -> None:
        """Claims the dedupe keys for this writer (a lightweight transaction each), or raises
        Unavailable if another writer holds one: it was handed the same work message and
        is applying it, and a retry will find it applied (or, if that writer died, claim it
        once its claim lapses). Claims by this writer (this process) hold again: a retry of
        its own; two of its tasks with the same message are serialized by the asset locks."""
        if not keys:
            return
        ordered = sorted(keys)
        results = await asyncio.gather(
            *(self._db.q("claim", (tenant_id, k, self._owner)) for k in ordered)
        )
        held = [
            k
            for k, rows in zip(ordered, results, strict=True)
            if not rows[0].applied and rows[0].owner != self._owner
        ]
        if held:
            raise Unavailable(f"{len(held)} work item(s) are being applied by another writer")

    async def _write_intent(
        self,
        tenant_id: str,
        batch_id: uuid.UUID,
        now: int,
        writes: Mapping[str, Any],
        events: bytes,
    ) -> int:
        """Stores the intent; returns its outbox bucket. Its parts go first; then the commit:
        the head (part 0: no data, says how many parts there are) together with the dedupe
        keys the transaction consumes, in one logged batch. So a redelivered work message is
        either seen as applied (its intent committed: applied now, or replayed by the poll) or
        was never committed, and a retry can neither lose it nor count it twice."""
        blob = _pack_intent(writes, events)
        chunks = [b"", *(blob[i : i + _INTENT_PART] for i in range(0, len(blob), _INTENT_PART))]
        bucket = now // 1_000_000 // _BUCKET_SECONDS
        rows = [
            ("write_intent", (bucket, batch_id, n, tenant_id, len(chunks), chunk))
            for n, chunk in enumerate(chunks)
        ]
        await self._db.many(rows[1:])
        commit = [rows[0], *(("write_applied", (tenant_id, k)) for k in writes["applied"])]
        if len(commit) == 1:
            await self._db.q(*commit[0])
            return bucket
        batch = BatchStatement(BatchType.LOGGED)
        for name, params in commit:
            batch.add(self._db.bind(name, params))
        await cassandra.execute(self._db.session, batch, timeout=self._db.timeout)
        return bucket

    async def apply(self, tenant_id: str, batch_id: uuid.UUID, writes: Mapping[str, Any]) -> None:
        """Writes what an intent holds. Idempotent: explicit timestamps, deterministic keys."""
        ts = writes["ts"]
        statements: list[tuple[str, Sequence[Any]]] = []
        markers = set()
        for row, write_ts, is_new in writes["assets"]:
            # (an intent written before migration 0003 has no unhealthy_upstream)
            pad: list[Any] = [[]] * (len(ASSET_COLUMNS) - len(row))
            statements.append(("write_asset", (*row, *pad, write_ts)))
            qn = row[2]
            statements.append(
                ("write_leaf", (tenant_id, parent_dir(qn), qn, row[1], row[3], row[16], write_ts))
            )
            if is_new:
                for d, entry in ancestors(qn):
                    if (tenant_id, d, entry) in self._known_dirs:
                        break
                    markers.add((tenant_id, d, entry))
        statements += [("write_marker", (*m, True)) for m in markers]
        statements += [("write_issue", (*row, ts)) for row in writes["issues"]]
        statements += [("write_audit", (*row, ts)) for row in writes["audit"]]
        statements += [
            ("write_counts", (tenant_id, job, batch_id, *counts))
            for job, counts in writes["jobs"].items()
        ]
        await self._db.many(statements, batched=True)
        if len(self._known_dirs) > 100_000:
            self._known_dirs.clear()
        self._known_dirs |= markers

    # -- the outbox of intents (core.ports.Outbox) ----------------------------------------

    async def delete_published(self, ids: Collection[Hashable]) -> None:
        with unavailable("outbox"):
            await self._db.many([("delete_intent", key) for key in ids])  # type: ignore[misc]

    async def relay_stale(
        self, older_than: float, publish: Callable[[list[OutboxRecord]], Awaitable[None]]
    ) -> int:
        """Applies again, publishes and deletes the intents older than `older_than` seconds
        that nobody published (their writer died, or the bus was down); returns how many
        events. Partitions wholly older than that (and a minute of clock skew) and empty are
        passed for good: the next poll starts after them."""
        with unavailable("outbox"):
            cutoff = time.time() - older_than
            last = int(cutoff) // _BUCKET_SECONDS
            low = await self._db.q("read_low_water", ())
            start = low[0].bucket if low else last - 360  # first poll: the last hour
            published, passed = 0, start
            for bucket in range(start, last + 1):
                rows = await self._db.all(
                    "read_intents", (bucket, max_uuid_from_time(cutoff)), fetch_size=16
                )
                published += await self._recover(bucket, rows, publish)
                settled = bucket < (cutoff - 60) // _BUCKET_SECONDS
                if passed == bucket and settled and not rows:
                    passed = bucket + 1
            if passed != start:
                await self._db.q("write_low_water", (passed,))
            return published

    async def _recover(
        self,
        bucket: int,
        rows: Sequence[Any],
        publish: Callable[[list[OutboxRecord]], Awaitable[None]],
    ) -> int:
        intents: dict[uuid.UUID, dict[int, Any]] = {}
        for r in rows:
            intents.setdefault(r.batch_id, {})[r.part] = r
        published = 0
        for batch_id, parts in intents.items():
            head = parts.get(0)
            if head is None or len(parts) != head.parts:
                continue  # its writer is still at it, or died before committing: never applied
            blob = b"".join(parts[n].data for n in range(head.parts))
            writes, events = _unpack_intent(blob)
            await self.apply(head.tenant_id, batch_id, writes)
            records = list(unpack_events(0, events)) if events else []
            if records:
                await publish(
                    [
                        OutboxRecord(
                            (bucket, batch_id), r.event_id, r.subject, r.payload, r.headers
                        )
                        for r in records
                    ]
                )
            await self._db.q("delete_intent", (bucket, batch_id))
            published += len(records)
        return published
