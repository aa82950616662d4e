"""The Cassandra asset store's bulk jobs (their counts as rows a writer adds, summed on read)
and propagation jobs."""

from __future__ import annotations

import asyncio

from cassandra.util import uuid_from_time

from core.domain.model import BulkJob, JobCounts, PropagationJob
from core.metadata.stores.cassandra.rows import (
    COUNT_FIELDS,
    Clock,
    from_micros,
    micros,
    opt_from_micros,
    propagation_job_from_row,
    propagation_job_row,
)
from core.metadata.stores.cassandra.statements import Statements, unavailable


class Jobs:
    def __init__(self, db: Statements, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create_job(self, job: BulkJob) -> None:
        with unavailable("create_job"):
            await self._db.q(
                "write_job",
                (
                    job.tenant_id,
                    job.job_id,
                    job.description,
                    micros(job.created_at),
                    micros(job.updated_at),
                ),
            )

    async def put_propagation_job(self, job: PropagationJob) -> None:
        with unavailable("put_propagation_job"):
            await self._db.q("write_propagation_job", propagation_job_row(job))

    async def get_propagation_job(self, tenant_id: str, job_id: str) -> PropagationJob | None:
        with unavailable("get_propagation_job"):
            rows = await self._db.q("read_propagation_job", (tenant_id, job_id))
        return propagation_job_from_row(rows[0]) if rows else None

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob | None:
        with unavailable("get_job"):
            rows, parts = await asyncio.gather(
                self._db.q("read_job", (tenant_id, job_id)),
                self._db.all("read_counts", (tenant_id, job_id), fetch_size=5000),
            )
            if not rows:
                return None
            r = rows[0]
            totals = dict.fromkeys(COUNT_FIELDS, 0)
            for part in parts:
                for f in COUNT_FIELDS:
                    totals[f] += getattr(part, f) or 0
            finished = r.finished_at
            done = (
                totals["written"] + totals["unchanged"] + totals["stale"] + totals["write_failed"]
            )
            if finished is None and r.closed and done >= totals["accepted"]:
                finished = self._clock.now_us()
                await self._db.q("finish_job", (finished, tenant_id, job_id))
            return BulkJob(
                tenant_id=tenant_id,
                job_id=job_id,
                created_at=from_micros(r.created_at),
                updated_at=from_micros(r.updated_at),
                description=r.description or "",
                closed=bool(r.closed),
                finished_at=opt_from_micros(finished),
                **totals,
            )

    async def update_job(
        self, tenant_id: str, job_id: str, counts: JobCounts, *, close: bool = False
    ) -> BulkJob | None:
        with unavailable("update_job"):
            if not await self._db.q("read_job", (tenant_id, job_id)):
                return None
            now = self._clock.now_us()
            part = uuid_from_time(now / 1e6)
            values = [getattr(counts, f) for f in COUNT_FIELDS]
            await self._db.many(
                [
                    ("write_counts", (tenant_id, job_id, part, *values)),
                    ("close_job" if close else "touch_job", (now, tenant_id, job_id)),
                ]
            )
        return await self.get_job(tenant_id, job_id)
