"""core/cassandra.py against the real Cassandra: the asyncio bridge and versioned migrations."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cassandra import InvalidRequest

from core import cassandra


async def test_migrations_apply_once_and_queries_run_on_the_loop(dist_stack):
    session = await cassandra.connect(dist_stack["cassandra"])
    keyspace = "lily_t" + uuid.uuid4().hex[:8]
    try:
        applied = await cassandra.migrate(session, keyspace)
        assert applied[0].startswith("0001_")
        assert await cassandra.migrate(session, keyspace) == []  # nothing pending
        await cassandra.execute(
            session,
            "INSERT INTO assets (tenant_id, asset_id, asset_type, tag_names)"
            " VALUES (%s, %s, %s, %s)",
            ("t1", "a1", 3, {"PII"}),
        )
        # the loop keeps running while the query is out (a ticker advances meanwhile)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        rows = await cassandra.execute(
            session,
            "SELECT asset_id FROM assets WHERE tenant_id = %s AND tag_names CONTAINS %s",
            ("t1", "PII"),
        )
        task.cancel()
        assert [r.asset_id for r in rows] == ["a1"] and rows.paging_state is None
        assert ticks > 0
        with pytest.raises(InvalidRequest):  # errors come back as the driver's exceptions
            await cassandra.execute(session, "SELECT nosuch FROM assets")
    finally:
        await cassandra.execute(session, f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        await cassandra.close(session)
