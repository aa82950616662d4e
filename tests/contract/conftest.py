"""The contract suite: every test here runs against every backend of the port it names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from cassandra.cluster import Session

from core import cassandra
from core.metadata.stores.cassandra import CassandraAssetStore
from core.metadata.stores.postgres import PostgresAssetStore
from core.ports import AssetStore
from core.postgres import create_pool, migrate

BACKENDS = ["postgres", "cassandra"]


@pytest_asyncio.fixture(scope="session")
async def cassandra_session(dist_stack: dict[str, str]) -> AsyncIterator[Session]:
    """A session on the dev stack's Cassandra, in a keyspace migrated for the contract suite."""
    session = await cassandra.connect(dist_stack["cassandra"])
    await cassandra.migrate(session, "lily_contract")
    yield session
    await cassandra.close(session)


@pytest_asyncio.fixture
async def postgres_asset_store(stack: tuple[str, str]) -> AsyncIterator[AssetStore]:
    pool = await create_pool(stack[0], min_size=1, max_size=20)
    await migrate(pool)
    yield PostgresAssetStore(pool)
    await pool.close()


@pytest_asyncio.fixture
async def cassandra_asset_store(cassandra_session: Session) -> AssetStore:
    return await CassandraAssetStore.open(cassandra_session)


@pytest.fixture(params=BACKENDS)
def asset_store(request: pytest.FixtureRequest) -> AssetStore:
    store: AssetStore = request.getfixturevalue(f"{request.param}_asset_store")
    return store
