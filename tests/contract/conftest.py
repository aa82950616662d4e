"""The contract suite: every test here runs against every backend of the port it names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from core.metadata.stores.postgres import PostgresAssetStore
from core.ports import AssetStore
from core.postgres import create_pool, migrate

BACKENDS = ["postgres"]  # issue 4 adds "cassandra"


@pytest_asyncio.fixture(params=BACKENDS)
async def asset_store(
    request: pytest.FixtureRequest, stack: tuple[str, str]
) -> AsyncIterator[AssetStore]:
    if request.param == "postgres":
        pool = await create_pool(stack[0], min_size=1, max_size=20)
        await migrate(pool)
        yield PostgresAssetStore(pool)
        await pool.close()
