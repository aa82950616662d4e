"""CassandraAssetStore: the AssetStore port on Cassandra (distributed profile).

The data model and its partition arithmetic are in cassandra.md beside this file. How a
transaction is made all-or-nothing without multi-partition transactions:

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
import base64
import contextlib
import logging
import os
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
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cassandra import InvalidRequest
from cassandra.cluster import Session
from cassandra.query import BatchStatement, BatchType, PreparedStatement
from cassandra.util import max_uuid_from_time, uuid_from_time

from core import cassandra
from core.domain.errors import Unavailable
from core.domain.model import (
    Asset,
    AssetType,
    AuditEntry,
    BulkJob,
    ChangeKind,
    Issue,
    IssueSeverity,
    IssueStatus,
    JobCounts,
    PropagationJob,
    PropagationState,
    SearchQuery,
)
from core.domain.rules import Plan, asset_id_for
from core.events.codec import encode_change
from core.events.outbox import pack_events, unpack_events
from core.metadata.stores.rows import ASSET_COLUMNS, tag_from_json, tag_json
from core.ports import OutboxRecord, Snapshot, TxRequest
from core.tracing import tracer

log = logging.getLogger(__name__)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX = "\U0010ffff"
_READ_CHUNK = 100  # partition keys per IN read
_INTENT_PART = 1 << 20  # bytes per outbox row of an intent
_BUCKET_SECONDS = 10  # outbox partitions: 10 s of intents each
_DEDUPE_TTL = int(timedelta(days=1).total_seconds())
_SEQ_NONCE = int.from_bytes(os.urandom(2), "big") & 0x3FF


def _us(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _opt_us(dt: datetime | None) -> int | None:
    return None if dt is None else _us(dt)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _opt_dt(us: int | None) -> datetime | None:
    return None if us is None else _dt(us)


def _month(us: int) -> int:
    d = _dt(us)
    return d.year * 12 + d.month - 1


class _Clock:
    """Strictly increasing microseconds for this process (audit sequence numbers, intent
    timestamps): wall time, bumped past the last value handed out."""

    def __init__(self) -> None:
        self._last = 0

    def now_us(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last

    def seq(self) -> int:
        """An audit sequence number: the time in its high bits (so it also names the month),
        and 10 bits of this process, so two processes never collide."""
        return (self.now_us() << 10) | _SEQ_NONCE


def parent_dir(name: str) -> str:
    """The directory an entry lives in: the name up to its last '/', not counting a '/' that
    ends the name ('a/b/c' and 'a/b/c/' are both entries of 'a/b/')."""
    return name[: name.rfind("/", 0, len(name) - 1) + 1]


def _ancestors(name: str) -> Iterable[tuple[str, str]]:
    """(directory, entry) of every directory marker above `name`, nearest first."""
    d = parent_dir(name)
    while d:
        up = parent_dir(d)
        yield up, d
        d = up


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


_ASSET_COLUMNS = ("tenant_id", *ASSET_COLUMNS)
_ISSUE_COLUMNS = (
    "tenant_id",
    "asset_id",
    "issue_id",
    "source",
    "external_id",
    "type",
    "severity",
    "status",
    "title",
    "description",
    "url",
    "opened_at",
    "updated_at",
    "resolved_at",
)
_AUDIT_COLUMNS = (
    "tenant_id",
    "asset_id",
    "month",
    "seq",
    "principal",
    "action",
    "change",
    "changed_fields",
    "asset_version",
    "at",
    "request_id",
    "origin",
    "event_id",
)
_PROPAGATION_JOB_COLUMNS = (
    "tenant_id",
    "job_id",
    "asset_id",
    "state",
    "assets_total",
    "assets_done",
    "assets_changed",
    "requested_by",
    "error",
    "created_at",
    "updated_at",
    "finished_at",
)
_COUNT_FIELDS = ("accepted", "written", "unchanged", "stale", "rejected", "write_failed")


def _insert(table: str, columns: Sequence[str], using: str = "") -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){using}"


def _asset_row(a: Asset) -> list[Any]:
    """An asset as the values of _ASSET_COLUMNS (JSON-safe: it is also what an intent holds)."""
    return [
        a.tenant_id,
        a.asset_id,
        a.qualified_name,
        int(a.asset_type),
        a.name,
        a.description,
        list(a.owners),
        a.data_source,
        a.parent_qualified_name,
        a.parent_id,
        orjson.dumps([tag_json(t) for t in a.tags]).decode() if a.tags else "[]",
        sorted({t.name for t in a.tags}),
        list(a.business_terms),
        dict(a.attributes),
        a.external_id,
        a.version,
        a.is_deleted,
        _us(a.created_at),
        _us(a.updated_at),
        _us(a.source_event_time),
        list(a.unhealthy_upstream),
    ]


def _asset(r: Any) -> Asset:
    return Asset(
        tenant_id=r.tenant_id,
        asset_id=r.asset_id,
        qualified_name=r.qualified_name,
        asset_type=AssetType(r.asset_type),
        version=r.version,
        created_at=_dt(r.created_at),
        updated_at=_dt(r.updated_at),
        source_event_time=_dt(r.source_event_time),
        name=r.name or "",
        description=r.description or "",
        owners=tuple(r.owners or ()),
        data_source=r.data_source or "",
        parent_qualified_name=r.parent_qualified_name or "",
        parent_id=r.parent_id or "",
        tags=tuple(tag_from_json(t) for t in orjson.loads(r.tags or "[]")),
        business_terms=tuple(r.business_terms or ()),
        attributes=dict(r.attributes or {}),
        external_id=r.external_id or "",
        is_deleted=bool(r.is_deleted),
        unhealthy_upstream=tuple(r.unhealthy_upstream or ()),
    )


def _issue_row(i: Issue) -> list[Any]:
    return [
        i.tenant_id,
        i.asset_id,
        i.issue_id,
        i.source,
        i.external_id,
        i.type,
        int(i.severity),
        int(i.status),
        i.title,
        i.description,
        i.url,
        _opt_us(i.opened_at),
        _opt_us(i.updated_at),
        _opt_us(i.resolved_at),
    ]


def _issue(r: Any) -> Issue:
    return Issue(
        tenant_id=r.tenant_id,
        issue_id=r.issue_id,
        asset_id=r.asset_id,
        source=r.source or "",
        external_id=r.external_id or "",
        type=r.type or "",
        severity=IssueSeverity(r.severity),
        status=IssueStatus(r.status),
        title=r.title or "",
        description=r.description or "",
        url=r.url or "",
        opened_at=_opt_dt(r.opened_at),
        updated_at=_opt_dt(r.updated_at),
        resolved_at=_opt_dt(r.resolved_at),
    )


def _matches(a: Asset, q: SearchQuery) -> bool:
    return (
        (q.asset_type is None or a.asset_type == q.asset_type)
        and (not q.tag or any(t.name == q.tag for t in a.tags))
        and a.qualified_name.startswith(q.qualified_name_prefix)
        and (not q.data_source or a.data_source == q.data_source)
        and (not q.owner or q.owner in a.owners)
        and (q.include_deleted or not a.is_deleted)
    )


def _pack_intent(writes: Mapping[str, Any], events: bytes) -> bytes:
    body = zlib.compress(orjson.dumps(writes), 1)
    return struct.pack(">I", len(body)) + body + events


def _unpack_intent(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack_from(">I", blob)
    return orjson.loads(zlib.decompress(blob[4 : 4 + n])), blob[4 + n :]


class CassandraAssetStore:
    """The AssetStore port on Cassandra. See core.ports.AssetStore for its guarantees; the
    module docstring for how transact keeps them. Also the outbox (core.ports.Outbox) of the
    intents it writes."""

    def __init__(self, session: Session, *, timeout: float = 10.0) -> None:
        self._session = session
        self._timeout = timeout
        self._locks = _KeyLocks()
        self._clock = _Clock()
        self._known_dirs: set[tuple[str, str, str]] = set()  # markers written by this process
        self._prepared: dict[str, PreparedStatement] = {}
        self._owner = uuid.uuid4()  # this writer, in ingest_claims

    @classmethod
    async def open(cls, session: Session, *, timeout: float = 10.0) -> CassandraAssetStore:
        """The store on a session whose keyspace is migrated, with its statements prepared."""
        store = cls(session, timeout=timeout)
        await store._prepare_all()
        return store

    # -- statements -----------------------------------------------------------------------

    _STATEMENTS = {
        "read_assets": f"SELECT {', '.join(_ASSET_COLUMNS)}, WRITETIME(version) AS wt"
        " FROM assets WHERE tenant_id = ? AND asset_id IN ?",
        "write_asset": _insert("assets", _ASSET_COLUMNS, " USING TIMESTAMP ?"),
        "write_leaf": _insert(
            "assets_by_path",
            ("tenant_id", "dir", "entry", "asset_id", "asset_type", "is_deleted"),
            " USING TIMESTAMP ?",
        ),
        "write_marker": _insert("assets_by_path", ("tenant_id", "dir", "entry", "has_children")),
        "walk": "SELECT entry, asset_id, asset_type, is_deleted, has_children FROM assets_by_path"
        " WHERE tenant_id = ? AND dir = ? AND entry >= ? AND entry < ?",
        "read_issue": "SELECT * FROM issues WHERE tenant_id = ? AND asset_id = ? AND issue_id = ?",
        "read_issues": "SELECT * FROM issues WHERE tenant_id = ? AND asset_id = ?",
        "issue_states": "SELECT asset_id, status FROM issues WHERE tenant_id = ? AND asset_id IN ?",
        "write_issue": _insert("issues", _ISSUE_COLUMNS, " USING TIMESTAMP ?"),
        "write_audit": _insert("audit", _AUDIT_COLUMNS, " USING TIMESTAMP ?"),
        "read_audit": "SELECT * FROM audit WHERE tenant_id = ? AND asset_id = ? AND month = ?"
        " AND seq > ? LIMIT ?",
        "read_applied": "SELECT stream_seq FROM ingest_applied"
        " WHERE tenant_id = ? AND stream_seq IN ?",
        "write_applied": "INSERT INTO ingest_applied (tenant_id, stream_seq) VALUES (?, ?)"
        f" USING TTL {_DEDUPE_TTL}",
        "claim": "INSERT INTO ingest_claims (tenant_id, stream_seq, owner) VALUES (?, ?, ?)"
        " IF NOT EXISTS",
        "write_job": _insert(
            "bulk_jobs", ("tenant_id", "job_id", "description", "created_at", "updated_at")
        ),
        "read_job": "SELECT * FROM bulk_jobs WHERE tenant_id = ? AND job_id = ?",
        "write_propagation_job": _insert("propagation_jobs", _PROPAGATION_JOB_COLUMNS),
        "read_propagation_job": f"SELECT {', '.join(_PROPAGATION_JOB_COLUMNS)}"
        " FROM propagation_jobs WHERE tenant_id = ? AND job_id = ?",
        "close_job": "UPDATE bulk_jobs SET closed = true, updated_at = ?"
        " WHERE tenant_id = ? AND job_id = ?",
        "touch_job": "UPDATE bulk_jobs SET updated_at = ? WHERE tenant_id = ? AND job_id = ?",
        "finish_job": "UPDATE bulk_jobs SET finished_at = ? WHERE tenant_id = ? AND job_id = ?",
        "write_counts": _insert("bulk_job_counts", ("tenant_id", "job_id", "part", *_COUNT_FIELDS)),
        "read_counts": f"SELECT {', '.join(_COUNT_FIELDS)} FROM bulk_job_counts"
        " WHERE tenant_id = ? AND job_id = ?",
        "write_intent": _insert(
            "outbox", ("bucket", "batch_id", "part", "tenant_id", "parts", "data")
        ),
        "read_intents": "SELECT batch_id, part, tenant_id, parts, data FROM outbox"
        " WHERE bucket = ? AND batch_id < ?",
        "delete_intent": "DELETE FROM outbox WHERE bucket = ? AND batch_id = ?",
        "read_low_water": "SELECT bucket FROM outbox_low_water WHERE id = 0",
        "write_low_water": "INSERT INTO outbox_low_water (id, bucket) VALUES (0, ?)",
    }

    async def _prepare_all(self) -> None:
        def blocking() -> None:
            for name, cql in self._STATEMENTS.items():
                self._prepared[name] = self._session.prepare(cql)

        await asyncio.wait_for(asyncio.to_thread(blocking), self._timeout * 3)

    async def _q(
        self,
        name: str,
        params: Sequence[Any],
        *,
        fetch_size: int | None = None,
        paging_state: bytes | None = None,
    ) -> Any:
        statement = self._prepared[name].bind(params)
        if fetch_size is not None:
            statement.fetch_size = fetch_size
        return await cassandra.execute(
            self._session, statement, timeout=self._timeout, paging_state=paging_state
        )

    async def _all(self, name: str, params: Sequence[Any], fetch_size: int = 1000) -> list[Any]:
        """Every row of a (bounded) query, page by page."""
        rows: list[Any] = []
        state = None
        while True:
            page = await self._q(name, params, fetch_size=fetch_size, paging_state=state)
            rows.extend(page)
            state = page.paging_state
            if state is None:
                return rows

    async def _many(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, batched: bool = False
    ) -> None:
        """Runs the statements concurrently; `batched` sends them in unlogged batches of rows
        that share a replica (one request for many rows: the driver's cost is mostly per
        request). Only for idempotent writes: a batch refused as too large is sent again
        statement by statement."""
        bound = [self._prepared[name].bind(params) for name, params in statements]
        if batched and len(bound) > 1:
            try:
                await cassandra.execute_many(
                    self._session,
                    [(b, None) for b in cassandra.replica_batches(self._session, bound, 24)],
                    timeout=self._timeout,
                    concurrency=64,
                )
                return
            except InvalidRequest as exc:
                if "Batch too large" not in str(exc):
                    raise
        await cassandra.execute_many(
            self._session, [(b, None) for b in bound], timeout=self._timeout
        )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except cassandra.BACKEND_ERRORS as exc:
            raise Unavailable(f"asset store unavailable ({what}): {type(exc).__name__}") from exc

    # -- transactions ---------------------------------------------------------------------

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
            self._errors("transact"),
        ):
            async with self._locks.hold(f"{tenant_id}\0{i}" for i in request.asset_ids):
                return await self._transact_locked(tenant_id, request, plan)

    async def _transact_locked(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        keys = sorted(set(request.dedupe_keys))
        rows, issue_pages, applied_rows = await asyncio.gather(
            self._read_chunked("read_assets", tenant_id, sorted(set(request.asset_ids))),
            asyncio.gather(
                *(self._q("read_issue", (tenant_id, a, i)) for a, i in request.issue_ids)
            ),
            self._read_chunked("read_applied", tenant_id, keys),
        )
        existing = {r.asset_id: _asset(r) for r in rows}
        write_times: dict[str, int] = {r.asset_id: r.wt for r in rows}
        issues = {r.issue_id: _issue(r) for page in issue_pages for r in page}
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
            ts = _us(a.source_event_time)
            if a.asset_id in write_times:  # strictly after the stored write, so this one wins
                ts = max(ts, write_times[a.asset_id] + 1)
            assets.append([_asset_row(a), ts, a.asset_id not in existing])
        writes = {
            "ts": now,
            "assets": assets,
            "issues": [_issue_row(i) for i in result.issues],
            "audit": [
                [
                    tenant_id,
                    c.asset_id,
                    _month(now),
                    self._clock.seq(),
                    c.actor,
                    c.action,
                    int(c.change),
                    list(c.changed_fields),
                    c.asset_version,
                    _us(c.occurred_at),
                    c.request_id,
                    c.origin,
                    c.event_id,
                ]
                for c in result.changes
            ],
            "jobs": {job: [getattr(n, f) for f in _COUNT_FIELDS] for job, n in counts.items()},
            "applied": sorted(fresh),
        }
        events = [
            (c.event_id, c.subject, encode_change(c), c.trace_headers) for c in result.changes
        ]
        bucket = await self._write_intent(
            tenant_id, batch_id, now, writes, pack_events(events) if events else b""
        )
        await self._apply(tenant_id, batch_id, writes)
        if events:
            result.outbox = [OutboxRecord((bucket, batch_id), e, s, p, h) for e, s, p, h in events]
        else:  # nothing to publish: the intent has done its work
            await self._q("delete_intent", (bucket, batch_id))
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
            *(self._q("claim", (tenant_id, k, self._owner)) for k in ordered)
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
        await self._many(rows[1:])
        commit = [rows[0], *(("write_applied", (tenant_id, k)) for k in writes["applied"])]
        if len(commit) == 1:
            await self._q(*commit[0])
            return bucket
        batch = BatchStatement(BatchType.LOGGED)
        for name, params in commit:
            batch.add(self._prepared[name].bind(params))
        await cassandra.execute(self._session, batch, timeout=self._timeout)
        return bucket

    async def _apply(self, tenant_id: str, batch_id: uuid.UUID, writes: Mapping[str, Any]) -> None:
        """Writes what an intent holds. Idempotent: explicit timestamps, deterministic keys."""
        ts = writes["ts"]
        statements: list[tuple[str, Sequence[Any]]] = []
        markers = set()
        for row, write_ts, is_new in writes["assets"]:
            # (an intent written before migration 0003 has no unhealthy_upstream)
            pad: list[Any] = [[]] * (len(_ASSET_COLUMNS) - len(row))
            statements.append(("write_asset", (*row, *pad, write_ts)))
            qn = row[2]
            statements.append(
                ("write_leaf", (tenant_id, parent_dir(qn), qn, row[1], row[3], row[16], write_ts))
            )
            if is_new:
                for d, entry in _ancestors(qn):
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
        await self._many(statements, batched=True)
        if len(self._known_dirs) > 100_000:
            self._known_dirs.clear()
        self._known_dirs |= markers

    # -- the outbox of intents (core.ports.Outbox) ----------------------------------------

    async def delete_published(self, ids: Collection[Hashable]) -> None:
        with self._errors("outbox"):
            await self._many([("delete_intent", key) for key in ids])  # type: ignore[misc]

    async def relay_stale(
        self, older_than: float, publish: Callable[[list[OutboxRecord]], Awaitable[None]]
    ) -> int:
        """Applies again, publishes and deletes the intents older than `older_than` seconds
        that nobody published (their writer died, or the bus was down); returns how many
        events. Partitions wholly older than that (and a minute of clock skew) and empty are
        passed for good: the next poll starts after them."""
        with self._errors("outbox"):
            cutoff = time.time() - older_than
            last = int(cutoff) // _BUCKET_SECONDS
            low = await self._q("read_low_water", ())
            start = low[0].bucket if low else last - 360  # first poll: the last hour
            published, passed = 0, start
            for bucket in range(start, last + 1):
                rows = await self._all(
                    "read_intents", (bucket, max_uuid_from_time(cutoff)), fetch_size=16
                )
                published += await self._recover(bucket, rows, publish)
                settled = bucket < (cutoff - 60) // _BUCKET_SECONDS
                if passed == bucket and settled and not rows:
                    passed = bucket + 1
            if passed != start:
                await self._q("write_low_water", (passed,))
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
            await self._apply(head.tenant_id, batch_id, writes)
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
            await self._q("delete_intent", (bucket, batch_id))
            published += len(records)
        return published

    # -- reads ----------------------------------------------------------------------------

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None:
        with self._errors("get"):
            rows = await self._q("read_assets", (tenant_id, [asset_id]))
        return _asset(rows[0]) if rows else None

    async def _read_chunked(self, name: str, tenant_id: str, keys: Sequence[Any]) -> list[Any]:
        """The rows of `name` (a SELECT ... WHERE tenant_id = ? AND key IN ?) for all `keys`,
        read _READ_CHUNK partition keys per query, concurrently."""
        pages = await asyncio.gather(
            *(
                self._q(name, (tenant_id, list(keys[i : i + _READ_CHUNK])))
                for i in range(0, len(keys), _READ_CHUNK)
            )
        )
        return [r for page in pages for r in page]

    async def get_many(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, Asset]:
        with self._errors("get_many"):
            rows = await self._read_chunked("read_assets", tenant_id, sorted(set(asset_ids)))
        return {r.asset_id: _asset(r) for r in rows}

    async def open_issue_counts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        with self._errors("open_issue_counts"):
            rows = await self._read_chunked("issue_states", tenant_id, sorted(set(asset_ids)))
        counts: dict[str, int] = {}
        for r in rows:
            if r.status != IssueStatus.RESOLVED:
                counts[r.asset_id] = counts.get(r.asset_id, 0) + 1
        return counts

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None:
        asset = await self.get(tenant_id, asset_id_for(tenant_id, qualified_name))
        return asset if asset is not None and asset.qualified_name == qualified_name else None

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        with self._errors("search"):
            if query.qualified_name_prefix:
                return await self._search_path(tenant_id, query, after, limit)
            return await self._search_indexed(tenant_id, query, after, limit)

    async def _search_indexed(
        self, tenant_id: str, q: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        """Storage-attached indexes: the tenant and each filter; Cassandra's order (by token),
        resumed from the driver's paging state."""
        where, args = ["tenant_id = ?"], [tenant_id]  # type: list[str], list[Any]
        if q.asset_type is not None:
            where.append("asset_type = ?")
            args.append(int(q.asset_type))
        if q.tag:
            where.append("tag_names CONTAINS ?")
            args.append(q.tag)
        if q.data_source:
            where.append("data_source = ?")
            args.append(q.data_source)
        if q.owner:
            where.append("owners CONTAINS ?")
            args.append(q.owner)
        if not q.include_deleted:
            where.append("is_deleted = ?")
            args.append(False)
        cql = f"SELECT {', '.join(_ASSET_COLUMNS)} FROM assets WHERE {' AND '.join(where)}"
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self._prepared[cql] = await asyncio.wait_for(
                asyncio.to_thread(self._session.prepare, cql), self._timeout
            )
        bound = statement.bind(args)
        bound.fetch_size = limit
        state = base64.urlsafe_b64decode(after) if after else None
        page = await cassandra.execute(
            self._session, bound, timeout=self._timeout, paging_state=state
        )
        cursor = base64.urlsafe_b64encode(page.paging_state).decode() if page.paging_state else None
        return [_asset(r) for r in page], cursor

    async def _search_path(
        self, tenant_id: str, q: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        """A walk of the name directory from the prefix, in name order, fetching candidate
        assets to check the other filters. It looks at a bounded number of names per page;
        the cursor is the last name looked at (a page may be short yet have a next one)."""
        budget = max(10 * limit, 1000)
        found: list[Asset] = []
        pending: list[tuple[str, str]] = []

        async def check() -> None:
            assets = await self.get_many(tenant_id, [i for _, i in pending])
            for _, asset_id in pending:
                a = assets.get(asset_id)
                if a is not None and _matches(a, q):
                    found.append(a)
            pending.clear()

        walk = self._walk(
            tenant_id, parent_dir(q.qualified_name_prefix), q.qualified_name_prefix, after
        )
        cursor = None  # where the walk stopped, if it stopped before its end
        async for name, asset_id, asset_type, is_deleted in walk:
            budget -= 1
            if (q.asset_type is None or asset_type == q.asset_type) and (
                q.include_deleted or not is_deleted
            ):
                pending.append((name, asset_id))
                if len(pending) >= limit + 1 - len(found):
                    await check()
                    if len(found) > limit:
                        break
            if budget <= 0:
                cursor = name
                break
        await check()
        if len(found) > limit:
            return found[:limit], found[limit - 1].qualified_name
        return found, cursor

    async def _walk(
        self, tenant_id: str, d: str, prefix: str, after: str | None
    ) -> AsyncIterator[tuple[str, str, int, bool]]:
        """(name, asset_id, type, deleted) of the assets under directory `d` whose names start
        with `prefix` and come after `after`, in name order (depth first)."""
        low = prefix
        if after is not None:
            cut = after.find("/", len(d))
            low = max(low, after[: cut + 1] if cut >= 0 else after)
        state = None
        while True:
            page = await self._q(
                "walk", (tenant_id, d, low, prefix + _MAX), fetch_size=500, paging_state=state
            )
            for r in page:
                if r.asset_id is not None and (after is None or r.entry > after):
                    yield r.entry, r.asset_id, r.asset_type, bool(r.is_deleted)
                if r.has_children:
                    inside = after is not None and after.startswith(r.entry)
                    if after is None or inside or r.entry > after:
                        async for leaf in self._walk(
                            tenant_id, r.entry, prefix, after if inside else None
                        ):
                            yield leaf
            state = page.paging_state
            if state is None:
                return

    async def list_issues(
        self,
        tenant_id: str,
        asset_id: str,
        status: IssueStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Issue]:
        """Newest first by (opened_at, issue_id); an asset's issues are one small partition."""
        with self._errors("list_issues"):
            rows = await self._all("read_issues", (tenant_id, asset_id))
        issues = [_issue(r) for r in rows if status is None or r.status == int(status)]

        def key(i: Issue) -> tuple[int, str]:
            return (_us(i.opened_at) if i.opened_at else -1, i.issue_id)

        issues.sort(key=key, reverse=True)
        if after is not None:
            bound = (_us(datetime.fromisoformat(after[0])) if after[0] else -1, after[1])
            issues = [i for i in issues if key(i) < bound]
        return issues[:limit]

    async def audit_trail(
        self, tenant_id: str, asset_id: str, after_seq: int, limit: int
    ) -> list[AuditEntry]:
        """Month partitions in order, from `after_seq`'s month (or the asset's creation)."""
        with self._errors("audit_trail"):
            if after_seq:
                month = _month(after_seq >> 10)
            else:
                asset = await self.get(tenant_id, asset_id)
                if asset is None:
                    return []
                month = _month(_us(asset.created_at))
            entries: list[AuditEntry] = []
            now_month = _month(self._clock.now_us()) + 1  # a month of clock skew
            while month <= now_month and len(entries) < limit:
                rows = await self._q(
                    "read_audit", (tenant_id, asset_id, month, after_seq, limit - len(entries))
                )
                entries += [
                    AuditEntry(
                        sequence=r.seq,
                        asset_id=r.asset_id,
                        principal=r.principal,
                        action=r.action,
                        change=ChangeKind(r.change),
                        changed_fields=tuple(r.changed_fields or ()),
                        asset_version=r.asset_version,
                        at=_dt(r.at),
                        request_id=r.request_id or "",
                        origin=r.origin or "",
                        event_id=r.event_id or "",
                    )
                    for r in rows
                ]
                month += 1
            return entries

    async def prune_dedupe(self, older_than: timedelta) -> int:
        """Nothing to do: dedupe keys are written with a TTL of a day, and expire by
        themselves (the worker keeps them DEDUPE_KEEP = one day too)."""
        return 0

    # -- bulk jobs ------------------------------------------------------------------------

    async def create_job(self, job: BulkJob) -> None:
        with self._errors("create_job"):
            await self._q(
                "write_job",
                (
                    job.tenant_id,
                    job.job_id,
                    job.description,
                    _us(job.created_at),
                    _us(job.updated_at),
                ),
            )

    async def put_propagation_job(self, job: PropagationJob) -> None:
        with self._errors("put_propagation_job"):
            await self._q(
                "write_propagation_job",
                (
                    job.tenant_id,
                    job.job_id,
                    job.asset_id,
                    int(job.state),
                    job.assets_total,
                    job.assets_done,
                    job.assets_changed,
                    job.requested_by,
                    job.error,
                    _us(job.created_at),
                    _us(job.updated_at),
                    _us(job.finished_at) if job.finished_at else None,
                ),
            )

    async def get_propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob | None:
        with self._errors("get_propagation_job"):
            rows = await self._q("read_propagation_job", (tenant_id, job_id))
        if not rows:
            return None
        r = rows[0]
        return PropagationJob(
            tenant_id=r.tenant_id,
            job_id=r.job_id,
            asset_id=r.asset_id,
            state=PropagationState(r.state),
            created_at=_dt(r.created_at),
            updated_at=_dt(r.updated_at),
            assets_total=r.assets_total or 0,
            assets_done=r.assets_done or 0,
            assets_changed=r.assets_changed or 0,
            requested_by=r.requested_by or "",
            error=r.error or "",
            finished_at=_opt_dt(r.finished_at),
        )

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob | None:
        with self._errors("get_job"):
            rows, parts = await asyncio.gather(
                self._q("read_job", (tenant_id, job_id)),
                self._all("read_counts", (tenant_id, job_id), fetch_size=5000),
            )
            if not rows:
                return None
            r = rows[0]
            totals = dict.fromkeys(_COUNT_FIELDS, 0)
            for part in parts:
                for f in _COUNT_FIELDS:
                    totals[f] += getattr(part, f) or 0
            finished = r.finished_at
            done = (
                totals["written"] + totals["unchanged"] + totals["stale"] + totals["write_failed"]
            )
            if finished is None and r.closed and done >= totals["accepted"]:
                finished = self._clock.now_us()
                await self._q("finish_job", (finished, tenant_id, job_id))
            return BulkJob(
                tenant_id=tenant_id,
                job_id=job_id,
                created_at=_dt(r.created_at),
                updated_at=_dt(r.updated_at),
                description=r.description or "",
                closed=bool(r.closed),
                finished_at=_opt_dt(finished),
                **totals,
            )

    async def update_job(
        self, tenant_id: str, job_id: str, counts: JobCounts, *, close: bool = False
    ) -> BulkJob | None:
        with self._errors("update_job"):
            if not await self._q("read_job", (tenant_id, job_id)):
                return None
            now = self._clock.now_us()
            part = uuid_from_time(now / 1e6)
            values = [getattr(counts, f) for f in _COUNT_FIELDS]
            await self._many(
                [
                    ("write_counts", (tenant_id, job_id, part, *values)),
                    ("close_job" if close else "touch_job", (now, tenant_id, job_id)),
                ]
            )
        return await self.get_job(tenant_id, job_id)
