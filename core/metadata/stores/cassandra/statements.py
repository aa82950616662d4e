"""The Cassandra asset store's statements, prepared once per session, and how it runs them:
one page, every page, many at once (in unlogged batches by replica where that is safe), and a
large IN read in chunks. Backend failures become core.domain.errors.Unavailable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from cassandra import InvalidRequest
from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from core import cassandra
from core.domain.errors import Unavailable
from core.metadata.stores.cassandra.rows import (
    ASSET_COLUMNS,
    AUDIT_COLUMNS,
    COUNT_FIELDS,
    ISSUE_COLUMNS,
    PROPAGATION_JOB_COLUMNS,
    insert,
)

READ_CHUNK = 100  # partition keys per IN read
_DEDUPE_TTL = int(timedelta(days=1).total_seconds())

STATEMENTS = {
    "read_assets": f"SELECT {', '.join(ASSET_COLUMNS)}, WRITETIME(version) AS wt"
    " FROM assets WHERE tenant_id = ? AND asset_id IN ?",
    "write_asset": insert("assets", ASSET_COLUMNS, " USING TIMESTAMP ?"),
    "write_leaf": insert(
        "assets_by_path",
        ("tenant_id", "dir", "entry", "asset_id", "asset_type", "is_deleted"),
        " USING TIMESTAMP ?",
    ),
    "write_marker": insert("assets_by_path", ("tenant_id", "dir", "entry", "has_children")),
    "walk": "SELECT entry, asset_id, asset_type, is_deleted, has_children FROM assets_by_path"
    " WHERE tenant_id = ? AND dir = ? AND entry >= ? AND entry < ?",
    "read_issue": "SELECT * FROM issues WHERE tenant_id = ? AND asset_id = ? AND issue_id = ?",
    "read_issues": "SELECT * FROM issues WHERE tenant_id = ? AND asset_id = ?",
    "issue_states": "SELECT asset_id, status FROM issues WHERE tenant_id = ? AND asset_id IN ?",
    "write_issue": insert("issues", ISSUE_COLUMNS, " USING TIMESTAMP ?"),
    "write_audit": insert("audit", AUDIT_COLUMNS, " USING TIMESTAMP ?"),
    "read_audit": "SELECT * FROM audit WHERE tenant_id = ? AND asset_id = ? AND month = ?"
    " AND seq > ? LIMIT ?",
    "read_applied": "SELECT stream_seq FROM ingest_applied WHERE tenant_id = ? AND stream_seq IN ?",
    "write_applied": "INSERT INTO ingest_applied (tenant_id, stream_seq) VALUES (?, ?)"
    f" USING TTL {_DEDUPE_TTL}",
    "claim": "INSERT INTO ingest_claims (tenant_id, stream_seq, owner) VALUES (?, ?, ?)"
    " IF NOT EXISTS",
    "write_job": insert(
        "bulk_jobs", ("tenant_id", "job_id", "description", "created_at", "updated_at")
    ),
    "read_job": "SELECT * FROM bulk_jobs WHERE tenant_id = ? AND job_id = ?",
    "write_propagation_job": insert("propagation_jobs", PROPAGATION_JOB_COLUMNS),
    "read_propagation_job": f"SELECT {', '.join(PROPAGATION_JOB_COLUMNS)}"
    " FROM propagation_jobs WHERE tenant_id = ? AND job_id = ?",
    "close_job": "UPDATE bulk_jobs SET closed = true, updated_at = ?"
    " WHERE tenant_id = ? AND job_id = ?",
    "touch_job": "UPDATE bulk_jobs SET updated_at = ? WHERE tenant_id = ? AND job_id = ?",
    "finish_job": "UPDATE bulk_jobs SET finished_at = ? WHERE tenant_id = ? AND job_id = ?",
    "write_counts": insert("bulk_job_counts", ("tenant_id", "job_id", "part", *COUNT_FIELDS)),
    "read_counts": f"SELECT {', '.join(COUNT_FIELDS)} FROM bulk_job_counts"
    " WHERE tenant_id = ? AND job_id = ?",
    "write_intent": insert("outbox", ("bucket", "batch_id", "part", "tenant_id", "parts", "data")),
    "read_intents": "SELECT batch_id, part, tenant_id, parts, data FROM outbox"
    " WHERE bucket = ? AND batch_id < ?",
    "delete_intent": "DELETE FROM outbox WHERE bucket = ? AND batch_id = ?",
    "read_low_water": "SELECT bucket FROM outbox_low_water WHERE id = 0",
    "write_low_water": "INSERT INTO outbox_low_water (id, bucket) VALUES (0, ?)",
}


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Turns what the driver raises when Cassandra cannot answer into Unavailable."""
    try:
        yield
    except cassandra.BACKEND_ERRORS as exc:
        raise Unavailable(f"asset store unavailable ({what}): {type(exc).__name__}") from exc


class Statements:
    """The prepared statements of one session, and the ways to run them."""

    def __init__(self, session: Session, *, timeout: float = 10.0) -> None:
        self.session = session
        self.timeout = timeout
        self._prepared: dict[str, PreparedStatement] = {}

    async def prepare_all(self) -> None:
        def blocking() -> None:
            for name, cql in STATEMENTS.items():
                self._prepared[name] = self.session.prepare(cql)

        await asyncio.wait_for(asyncio.to_thread(blocking), self.timeout * 3)

    async def prepared(self, cql: str) -> PreparedStatement:
        """A statement made at run time (a search's), prepared once."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self._prepared[cql] = await asyncio.wait_for(
                asyncio.to_thread(self.session.prepare, cql), self.timeout
            )
        return statement

    def bind(self, name: str, params: Sequence[Any]) -> Any:
        return self._prepared[name].bind(params)

    async def q(
        self,
        name: str,
        params: Sequence[Any],
        *,
        fetch_size: int | None = None,
        paging_state: bytes | None = None,
    ) -> Any:
        """One page of a statement's rows."""
        statement = self._prepared[name].bind(params)
        if fetch_size is not None:
            statement.fetch_size = fetch_size
        return await cassandra.execute(
            self.session, statement, timeout=self.timeout, paging_state=paging_state
        )

    async def all(self, name: str, params: Sequence[Any], fetch_size: int = 1000) -> list[Any]:
        """Every row of a (bounded) query, page by page."""
        rows: list[Any] = []
        state = None
        while True:
            page = await self.q(name, params, fetch_size=fetch_size, paging_state=state)
            rows.extend(page)
            state = page.paging_state
            if state is None:
                return rows

    async def read_chunked(self, name: str, tenant_id: str, keys: Sequence[Any]) -> list[Any]:
        """The rows of `name` (a SELECT ... WHERE tenant_id = ? AND key IN ?) for all `keys`,
        read READ_CHUNK partition keys per query, concurrently."""
        pages = await asyncio.gather(
            *(
                self.q(name, (tenant_id, list(keys[i : i + READ_CHUNK])))
                for i in range(0, len(keys), READ_CHUNK)
            )
        )
        return [r for page in pages for r in page]

    async def many(
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
                    self.session,
                    [(b, None) for b in cassandra.replica_batches(self.session, bound, 24)],
                    timeout=self.timeout,
                    concurrency=64,
                )
                return
            except InvalidRequest as exc:
                if "Batch too large" not in str(exc):
                    raise
        await cassandra.execute_many(self.session, [(b, None) for b in bound], timeout=self.timeout)
