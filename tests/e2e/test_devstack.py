"""scripts/devstack.py: Cassandra and JanusGraph from Maven Central jars, really running."""

from __future__ import annotations

import asyncio

from scripts import devstack


async def test_cassandra_and_janusgraph_answer(dist_stack: dict[str, str]):
    host, port = dist_stack["cassandra"].split(":")

    def cql() -> str:
        from cassandra.cluster import Cluster

        cluster = Cluster([host], port=int(port), connect_timeout=5)
        try:
            return cluster.connect().execute("SELECT release_version FROM system.local").one()[0]
        finally:
            cluster.shutdown()

    def gremlin() -> list:
        from gremlin_python.driver.client import Client

        client = Client(dist_stack["janusgraph"], "g")
        try:
            return client.submit("g.inject(1, 2).sum()").all().result(timeout=10)
        finally:
            client.close()

    assert (await asyncio.to_thread(cql)).startswith("5.0.")
    assert await asyncio.to_thread(gremlin) == [3]


def test_the_jars_are_cached_once_assembled():
    lib = devstack.jars("cassandra")  # the stack fixture (or an earlier run) assembled them
    assert (lib.parent / ".complete").exists()
    assert any(p.name.startswith("cassandra-all-5.0.") for p in lib.glob("*.jar"))
