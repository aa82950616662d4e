"""PostgresAssetStore: the AssetStore port on Postgres (embedded profile).

Writes take per-asset advisory locks in a stable order, read the locked rows, run the domain
plan, and write assets, issues, audit entries and outbox events with multi-row statements in
the same transaction."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from core.domain.errors import Unavailable
from core.domain.model import (
    Asset,
    AssetType,
    AuditEntry,
    BulkJob,
    Change,
    ChangeKind,
    Issue,
    IssueSeverity,
    IssueStatus,
    JobCounts,
    PropagationJob,
    PropagationState,
    SearchQuery,
)
from core.domain.rules import Plan
from core.events.codec import encode_change
from core.events.outbox import pack_events
from core.metadata.stores.rows import ASSET_COLUMNS, tag_from_json, tag_json
from core.ports import OutboxRecord, Snapshot, TxRequest
from core.postgres import BACKEND_ERRORS
from core.tracing import tracer

Conn = asyncpg.Connection | PoolConnectionProxy


class _Conflict(Exception):
    """Another transaction created an asset this one planned as new."""


_MAX_ATTEMPTS = 5


_ASSET_COLUMNS = (
    "asset_id, qualified_name, asset_type, name, description, owners, data_source,"
    " parent_qualified_name, parent_id, tags, business_terms, attributes, external_id, version,"
    " is_deleted, created_at, updated_at, source_event_time, unhealthy_upstream"
)

# The assets a transaction saves are first copied (binary COPY, the cheapest way in for a
# client) into the connection's assets_stage, a temporary table emptied at every commit (see
# core/migrations/postgres_session.sql), then inserted or updated from there in one statement
# each. List-valued fields travel as Postgres array literals, JSON fields as JSON text.
_STAGE_COLUMNS = ["is_new", *ASSET_COLUMNS]
_SAVED_COLUMNS = ", ".join(_STAGE_COLUMNS[1:])
_STAGED = """
SELECT asset_id, qualified_name, asset_type, name, description, owners::text[] AS owners,
    data_source, parent_qualified_name, parent_id, tags::jsonb AS tags,
    tag_names::text[] AS tag_names, business_terms::text[] AS business_terms,
    attributes::jsonb AS attributes, external_id, version, is_deleted, created_at, updated_at,
    source_event_time, unhealthy_upstream::text[] AS unhealthy_upstream
FROM assets_stage
"""
# New assets, in id order (so concurrent inserters queue rather than deadlock). An id that
# another transaction inserted meanwhile is skipped, and the count falls short: a conflict.
_INSERT_ASSETS = f"""
INSERT INTO assets (tenant_id, {_SAVED_COLUMNS})
SELECT $1, s.* FROM ({_STAGED} WHERE is_new) s ORDER BY asset_id
ON CONFLICT (tenant_id, asset_id) DO NOTHING
"""
# Existing assets, whose rows this transaction holds locked.
_UPDATE_ASSETS = f"""
UPDATE assets a SET {
    ", ".join(f"{c} = s.{c}" for c in _STAGE_COLUMNS[1:] if c not in ("asset_id", "created_at"))
}
FROM ({_STAGED} WHERE NOT is_new) s
WHERE a.tenant_id = $1 AND a.asset_id = s.asset_id
"""

_PROPAGATION_JOB_COLUMNS = (
    "tenant_id, job_id, asset_id, state, assets_total, assets_done, assets_changed,"
    " requested_by, error, created_at, updated_at, finished_at"
)

_AUDIT_COLUMNS = [
    "tenant_id",
    "asset_id",
    "principal",
    "action",
    "change",
    "changed_fields",
    "asset_version",
    "at",
    "request_id",
    "origin",
    "event_id",
]

_UPSERT_ISSUE = """
INSERT INTO issues (tenant_id, asset_id, issue_id, source, external_id, type, severity, status,
    title, description, url, opened_at, updated_at, resolved_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (tenant_id, asset_id, issue_id) DO UPDATE SET
    type = EXCLUDED.type, severity = EXCLUDED.severity, status = EXCLUDED.status,
    title = EXCLUDED.title, description = EXCLUDED.description, url = EXCLUDED.url,
    opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at,
    resolved_at = EXCLUDED.resolved_at
"""

_UPDATE_JOB = """
UPDATE bulk_jobs SET accepted = accepted + $3, written = written + $4,
    unchanged = unchanged + $5, stale = stale + $6, rejected = rejected + $7,
    write_failed = write_failed + $8, closed = closed OR $9, updated_at = now()
WHERE tenant_id = $1 AND job_id = $2
RETURNING *
"""

_FINISH_JOB = """
UPDATE bulk_jobs SET finished_at = now()
WHERE tenant_id = $1 AND job_id = $2 AND finished_at IS NULL AND closed
  AND written + unchanged + stale + write_failed >= accepted
RETURNING *
"""


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _asset_from_row(tenant_id: str, r: asyncpg.Record) -> Asset:
    return Asset(
        tenant_id=tenant_id,
        asset_id=r["asset_id"],
        qualified_name=r["qualified_name"],
        asset_type=AssetType(r["asset_type"]),
        version=r["version"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        source_event_time=r["source_event_time"],
        name=r["name"],
        description=r["description"],
        owners=tuple(r["owners"]),
        data_source=r["data_source"],
        parent_qualified_name=r["parent_qualified_name"],
        parent_id=r["parent_id"],
        tags=tuple(tag_from_json(t) for t in r["tags"]),
        business_terms=tuple(r["business_terms"]),
        attributes=dict(r["attributes"]),
        external_id=r["external_id"],
        is_deleted=r["is_deleted"],
        unhealthy_upstream=tuple(r["unhealthy_upstream"]),
    )


def _issue_from_row(tenant_id: str, r: asyncpg.Record) -> Issue:
    return Issue(
        tenant_id=tenant_id,
        issue_id=r["issue_id"],
        asset_id=r["asset_id"],
        source=r["source"],
        external_id=r["external_id"],
        type=r["type"],
        severity=IssueSeverity(r["severity"]),
        status=IssueStatus(r["status"]),
        title=r["title"],
        description=r["description"],
        url=r["url"],
        opened_at=r["opened_at"],
        updated_at=r["updated_at"],
        resolved_at=r["resolved_at"],
    )


def _job_from_row(r: asyncpg.Record) -> BulkJob:
    return BulkJob(
        tenant_id=r["tenant_id"],
        job_id=r["job_id"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        description=r["description"],
        closed=r["closed"],
        accepted=r["accepted"],
        written=r["written"],
        unchanged=r["unchanged"],
        stale=r["stale"],
        rejected=r["rejected"],
        write_failed=r["write_failed"],
        finished_at=r["finished_at"],
    )


def _stage_rows(assets: Iterable[Asset], existing: Collection[str]) -> list[tuple[Any, ...]]:
    """Rows for assets_stage (_STAGE_COLUMNS)."""
    return [
        (
            a.asset_id not in existing,
            a.asset_id,
            a.qualified_name,
            int(a.asset_type),
            a.name,
            a.description,
            _pg_array(a.owners),
            a.data_source,
            a.parent_qualified_name,
            a.parent_id,
            _json([tag_json(t) for t in a.tags]) if a.tags else "[]",
            _pg_array(sorted({t.name for t in a.tags})) if a.tags else "{}",
            _pg_array(a.business_terms),
            _json(dict(a.attributes)) if a.attributes else "{}",
            a.external_id,
            a.version,
            a.is_deleted,
            a.created_at,
            a.updated_at,
            a.source_event_time,
            _pg_array(a.unhealthy_upstream),
        )
        for a in assets
    ]


def _pg_array(values: Sequence[str]) -> str:
    """A Postgres text[] literal: every element quoted, with backslash and quote escaped."""
    if not values:
        return "{}"
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + '","'.join(quoted) + '"}'


class PostgresAssetStore:
    """The AssetStore port on Postgres. See core.ports.AssetStore for its guarantees."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        for attempt in range(_MAX_ATTEMPTS):
            try:
                with tracer.start_as_current_span(
                    "postgres.assets.transact",
                    attributes={
                        "db.system": "postgresql",
                        "lily.tenant": tenant_id,
                        "lily.assets": len(request.asset_ids),
                        "lily.attempt": attempt,
                    },
                ):
                    return await self._transact_once(tenant_id, request, plan)
            except (_Conflict, asyncpg.DeadlockDetectedError) as exc:
                if attempt == _MAX_ATTEMPTS - 1:
                    raise Unavailable("asset store: too much write contention; retry") from exc
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
            except BACKEND_ERRORS as exc:
                raise Unavailable(f"asset store unavailable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def _transact_once(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        ids = sorted(set(request.asset_ids))
        async with self._pool.acquire() as conn, conn.transaction():
            # Row locks, taken in id order: concurrent writers of the same assets queue.
            rows = await conn.fetch(
                f"SELECT {_ASSET_COLUMNS} FROM assets WHERE tenant_id = $1"
                " AND asset_id = ANY($2::text[]) ORDER BY asset_id FOR UPDATE",
                tenant_id,
                ids,
            )
            issues: dict[str, Issue] = {}
            if request.issue_ids:
                for r in await conn.fetch(
                    "SELECT * FROM issues WHERE tenant_id = $1 AND (asset_id, issue_id) IN"
                    " (SELECT * FROM unnest($2::text[], $3::text[]))",
                    tenant_id,
                    [a for a, _ in request.issue_ids],
                    [i for _, i in request.issue_ids],
                ):
                    issues[r["issue_id"]] = _issue_from_row(tenant_id, r)
            fresh: frozenset[int] = frozenset()
            if request.dedupe_keys:
                fresh = frozenset(
                    r[0]
                    for r in await conn.fetch(
                        "INSERT INTO ingest_applied (tenant_id, stream_seq) SELECT $1, k FROM"
                        " unnest($2::int8[]) k ON CONFLICT DO NOTHING RETURNING stream_seq",
                        tenant_id,
                        list(request.dedupe_keys),
                    )
                )
            existing = {r["asset_id"]: _asset_from_row(tenant_id, r) for r in rows}
            result = plan(Snapshot(existing, issues, fresh))
            await self._write(conn, tenant_id, result, existing.keys())
            if request.job_counts is not None:
                for job_id, counts in request.job_counts().items():
                    await self._bump_job(conn, tenant_id, job_id, counts, close=False)
            return result

    async def _write(
        self, conn: Conn, tenant_id: str, plan: Plan, existing: Collection[str]
    ) -> None:
        latest = {a.asset_id: a for a in plan.saves}  # one asset saved twice: keep the last
        if latest:
            rows = _stage_rows(latest.values(), existing)
            await conn.copy_records_to_table("assets_stage", columns=_STAGE_COLUMNS, records=rows)
            new = sum(1 for r in rows if r[0])
            if new:
                status = await conn.execute(_INSERT_ASSETS, tenant_id)
                if int(status.rsplit(" ", 1)[1]) < new:
                    raise _Conflict  # created meanwhile by another transaction: plan again
            if new < len(rows):
                await conn.execute(_UPDATE_ASSETS, tenant_id)
        for i in plan.issues:
            await conn.execute(
                _UPSERT_ISSUE,
                tenant_id,
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
                i.opened_at,
                i.updated_at,
                i.resolved_at,
            )
        if plan.changes:
            plan.outbox = await self._record(conn, tenant_id, plan.changes)

    async def _record(
        self, conn: Conn, tenant_id: str, changes: Sequence[Change]
    ) -> list[OutboxRecord]:
        """One audit row per change, and all the changes' events in one outbox row."""
        await conn.copy_records_to_table(
            "audit",
            columns=_AUDIT_COLUMNS,
            records=[
                (
                    tenant_id,
                    c.asset_id,
                    c.actor,
                    c.action,
                    int(c.change),
                    list(c.changed_fields),
                    c.asset_version,
                    c.occurred_at,
                    c.request_id,
                    c.origin,
                    c.event_id,
                )
                for c in changes
            ],
        )
        events = [(c.event_id, c.subject, encode_change(c), c.trace_headers) for c in changes]
        batch_id = await conn.fetchval(
            "INSERT INTO outbox_batch (tenant_id, events, count) VALUES ($1, $2, $3) RETURNING id",
            tenant_id,
            pack_events(events),
            len(events),
        )
        return [OutboxRecord(batch_id, e, s, p, h) for e, s, p, h in events]

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            with tracer.start_as_current_span(
                "postgres.query",
                attributes={"db.system": "postgresql", "db.statement": query[:200]},
            ):
                return await self._pool.fetch(query, *args)
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"asset store unavailable: {type(exc).__name__}") from exc

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None:
        rows = await self._fetch(
            f"SELECT {_ASSET_COLUMNS} FROM assets WHERE tenant_id = $1 AND asset_id = $2",
            tenant_id,
            asset_id,
        )
        return _asset_from_row(tenant_id, rows[0]) if rows else None

    async def get_many(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, Asset]:
        rows = await self._fetch(
            f"SELECT {_ASSET_COLUMNS} FROM assets WHERE tenant_id = $1"
            " AND asset_id = ANY($2::text[])",
            tenant_id,
            list(asset_ids),
        )
        return {a.asset_id: a for a in (_asset_from_row(tenant_id, r) for r in rows)}

    async def open_issue_counts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT asset_id, count(*) FROM issues WHERE tenant_id = $1"
            " AND asset_id = ANY($2::text[]) AND status <> $3 GROUP BY asset_id",
            tenant_id,
            list(asset_ids),
            int(IssueStatus.RESOLVED),
        )
        return {r[0]: r[1] for r in rows}

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None:
        rows = await self._fetch(
            f"SELECT {_ASSET_COLUMNS} FROM assets WHERE tenant_id = $1 AND qualified_name = $2",
            tenant_id,
            qualified_name,
        )
        return _asset_from_row(tenant_id, rows[0]) if rows else None

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        """Name order; the cursor is the last name of the page."""
        where, args = ["tenant_id = $1"], [tenant_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.asset_type is not None:
            where.append(f"asset_type = {arg(int(query.asset_type))}")
        if query.tag:
            where.append(f"tag_names @> ARRAY[{arg(query.tag)}]::text[]")
        if query.qualified_name_prefix:
            p = query.qualified_name_prefix
            where.append(
                f"qualified_name >= {arg(p)} AND qualified_name < {arg(p + chr(0x10FFFF))}"
            )
        if query.data_source:
            where.append(f"data_source = {arg(query.data_source)}")
        if query.owner:
            where.append(f"owners @> ARRAY[{arg(query.owner)}]::text[]")
        if not query.include_deleted:
            where.append("NOT is_deleted")
        if after is not None:
            where.append(f"qualified_name > {arg(after)}")
        rows = await self._fetch(
            f"SELECT {_ASSET_COLUMNS} FROM assets WHERE {' AND '.join(where)}"
            f" ORDER BY qualified_name LIMIT {arg(limit + 1)}",
            *args,
        )
        assets = [_asset_from_row(tenant_id, r) for r in rows[:limit]]
        return assets, assets[-1].qualified_name if len(rows) > limit else None

    async def list_issues(
        self,
        tenant_id: str,
        asset_id: str,
        status: IssueStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Issue]:
        # Newest first: ordered by (opened_at, issue_id) descending; `after` is the last seen.
        args: list[Any] = [tenant_id, asset_id, limit]
        where = "tenant_id = $1 AND asset_id = $2"
        if status is not None:
            args.append(int(status))
            where += f" AND status = ${len(args)}"
        if after is not None:
            args += [datetime.fromisoformat(after[0]), after[1]]
            where += f" AND (opened_at, issue_id) < (${len(args) - 1}, ${len(args)})"
        rows = await self._fetch(
            f"SELECT * FROM issues WHERE {where} ORDER BY opened_at DESC, issue_id DESC LIMIT $3",
            *args,
        )
        return [_issue_from_row(tenant_id, r) for r in rows]

    async def audit_trail(
        self, tenant_id: str, asset_id: str, after_seq: int, limit: int
    ) -> list[AuditEntry]:
        rows = await self._fetch(
            "SELECT * FROM audit WHERE tenant_id = $1 AND asset_id = $2 AND seq > $3"
            " ORDER BY seq LIMIT $4",
            tenant_id,
            asset_id,
            after_seq,
            limit,
        )
        return [
            AuditEntry(
                sequence=r["seq"],
                asset_id=r["asset_id"],
                principal=r["principal"],
                action=r["action"],
                change=ChangeKind(r["change"]),
                changed_fields=tuple(r["changed_fields"]),
                asset_version=r["asset_version"],
                at=r["at"],
                request_id=r["request_id"],
                origin=r["origin"],
                event_id=r["event_id"],
            )
            for r in rows
        ]

    async def prune_dedupe(self, older_than: timedelta) -> int:
        rows = await self._fetch(
            "WITH gone AS (DELETE FROM ingest_applied WHERE applied_at < now() - $1::interval"
            " RETURNING 1) SELECT count(*) FROM gone",
            older_than,
        )
        return int(rows[0][0])

    async def create_job(self, job: BulkJob) -> None:
        await self._fetch(
            "INSERT INTO bulk_jobs (tenant_id, job_id, description, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            job.tenant_id,
            job.job_id,
            job.description,
            job.created_at,
            job.updated_at,
        )

    async def put_propagation_job(self, job: PropagationJob) -> None:
        await self._fetch(
            f"INSERT INTO propagation_jobs ({_PROPAGATION_JOB_COLUMNS}) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            " ON CONFLICT (tenant_id, job_id) DO UPDATE SET"
            " asset_id = EXCLUDED.asset_id, state = EXCLUDED.state,"
            " assets_total = EXCLUDED.assets_total, assets_done = EXCLUDED.assets_done,"
            " assets_changed = EXCLUDED.assets_changed, requested_by = EXCLUDED.requested_by,"
            " error = EXCLUDED.error, created_at = EXCLUDED.created_at,"
            " updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at",
            job.tenant_id,
            job.job_id,
            job.asset_id,
            int(job.state),
            job.assets_total,
            job.assets_done,
            job.assets_changed,
            job.requested_by,
            job.error,
            job.created_at,
            job.updated_at,
            job.finished_at,
        )

    async def get_propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob | None:
        rows = await self._fetch(
            f"SELECT {_PROPAGATION_JOB_COLUMNS} FROM propagation_jobs"
            " WHERE tenant_id = $1 AND job_id = $2",
            tenant_id,
            job_id,
        )
        if not rows:
            return None
        r = rows[0]
        return PropagationJob(**{**dict(r), "state": PropagationState(r["state"])})

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob | None:
        rows = await self._fetch(
            "SELECT * FROM bulk_jobs WHERE tenant_id = $1 AND job_id = $2", tenant_id, job_id
        )
        return _job_from_row(rows[0]) if rows else None

    async def update_job(
        self, tenant_id: str, job_id: str, counts: JobCounts, *, close: bool = False
    ) -> BulkJob | None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._bump_job(conn, tenant_id, job_id, counts, close=close)
        except BACKEND_ERRORS as exc:
            raise Unavailable(f"asset store unavailable: {type(exc).__name__}") from exc

    async def _bump_job(
        self, conn: Conn, tenant_id: str, job_id: str, c: JobCounts, *, close: bool
    ) -> BulkJob | None:
        row = await conn.fetchrow(
            _UPDATE_JOB,
            tenant_id,
            job_id,
            c.accepted,
            c.written,
            c.unchanged,
            c.stale,
            c.rejected,
            c.write_failed,
            close,
        )
        if row is None:
            return None
        finished = await conn.fetchrow(_FINISH_JOB, tenant_id, job_id)
        return _job_from_row(finished or row)
