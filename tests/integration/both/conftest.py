"""The tests in this folder run on both profiles: once on the local one (the session's Lily)
and once on the distributed one (Cassandra and JanusGraph); these fixtures override the
session's for them."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from tests.helpers import Metadata, bearer, new_tenant


@pytest.fixture(params=["local", "distributed"])
def served(request: pytest.FixtureRequest) -> tuple[grpc.aio.Channel, str, Metadata]:
    """Each test on both profiles: the server's channel, its NATS URL and its platform
    admin's credential."""
    if request.param == "local":
        return (
            request.getfixturevalue("channel"),
            request.getfixturevalue("stack")[1],
            request.getfixturevalue("admin_md"),
        )
    server, url = request.getfixturevalue("dist_lily")
    assert server.bootstrap_key
    return request.getfixturevalue("dist_channel"), url, bearer(server.bootstrap_key)


@pytest_asyncio.fixture
async def md(served: tuple[grpc.aio.Channel, str, Metadata], tenant: str) -> Metadata:
    return await new_tenant(served[0], served[2], tenant)


@pytest_asyncio.fixture
async def other_md(served: tuple[grpc.aio.Channel, str, Metadata], tenant: str) -> Metadata:
    return await new_tenant(served[0], served[2], tenant + "-o")


@pytest.fixture
def nats_url(served: tuple[grpc.aio.Channel, str, Metadata]) -> str:
    return served[1]


@pytest.fixture
def stub(served: tuple[grpc.aio.Channel, str, Metadata]) -> metadata_grpc.MetadataServiceStub:
    return metadata_grpc.MetadataServiceStub(served[0])


@pytest.fixture
def lineage(served: tuple[grpc.aio.Channel, str, Metadata]) -> lineage_grpc.LineageServiceStub:
    return lineage_grpc.LineageServiceStub(served[0])
