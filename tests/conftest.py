"""Session fixtures: one real embedded stack (Postgres + NATS JetStream from their PyPI
packages) and one Lily server for the whole run; each test gets its own tenant."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
import httpx
import pytest
import pytest_asyncio
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from pydantic import SecretStr

from core.server import Lily, start
from core.settings import Settings
from core.stack import EmbeddedStack
from policy.secretbox import new_key
from tests.helpers import Metadata, bearer, new_tenant, runtime_key, serving_runtime


@pytest_asyncio.fixture(scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    s = EmbeddedStack(tmp_path_factory.mktemp("stack"))
    dsn, url = await s.start()
    yield dsn, url
    await s.stop()


@pytest_asyncio.fixture(scope="session")
async def lily(stack: tuple[str, str]) -> AsyncIterator[Lily]:
    dsn, url = stack
    settings = Settings(
        grpc_port=0, shutdown_grace=1.0, worker_processes=0, secret_key=SecretStr(new_key())
    )
    server = await start(settings, postgres_dsn=dsn, nats_url=url)
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="session")
async def channel(lily: Lily) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(lily.address) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> metadata_grpc.MetadataServiceStub:
    return metadata_grpc.MetadataServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def admin_md(lily: Lily) -> Metadata:
    """The platform admin's credential: the bootstrap key the session's server created."""
    assert lily.bootstrap_key
    return bearer(lily.bootstrap_key)


@pytest_asyncio.fixture
async def md(channel: grpc.aio.Channel, admin_md: Metadata, tenant: str) -> Metadata:
    """The credential of the test's own tenant's first admin (a fresh tenant per test)."""
    return await new_tenant(channel, admin_md, tenant)


@pytest_asyncio.fixture
async def other_md(channel: grpc.aio.Channel, admin_md: Metadata, tenant: str) -> Metadata:
    """The credential of another fresh tenant's admin (for isolation tests)."""
    return await new_tenant(channel, admin_md, tenant + "-o")


@pytest.fixture
def nats_url(stack: tuple[str, str]) -> str:
    """The NATS of the server under test (a module may serve another: see dist_lily)."""
    return stack[1]


class EventLog:
    """Every message published under lily.<tenant>.> (a plain NATS subscription)."""

    def __init__(self) -> None:
        self.messages: list = []

    def events(self, subject_suffix: str = ""):  # -> list[(subject, ChangeEvent, headers)]
        """Each event (a batch's each: with the batch message's headers)."""
        from core.events.codec import events_of

        return [
            (m.subject, event, dict(m.headers or {}))
            for m in self.messages
            if m.subject.endswith(subject_suffix)
            for event in events_of(m.data, m.headers)
        ]


@pytest_asyncio.fixture
async def event_log(nats_url: str, tenant: str) -> AsyncIterator[EventLog]:
    import nats

    log = EventLog()
    nc = await nats.connect(nats_url)

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        log.messages.append(msg)

    await nc.subscribe(f"lily.{tenant}.>", cb=on_msg)
    await nc.flush()
    yield log
    await nc.close()


@pytest_asyncio.fixture(scope="session")
async def gateway(lily: Lily) -> AsyncIterator[str]:
    """The REST gateway (uvicorn, in this loop) in front of the session's server, with /metrics
    mounted as `lily up` mounts it: its base URL."""
    from api_gateway.app import GatewaySettings
    from api_gateway.server import serve
    from core import metrics

    running = await serve(
        GatewaySettings(target=lily.address), "127.0.0.1", 0, {"/metrics": metrics.asgi}
    )
    yield f"http://127.0.0.1:{running.port}"
    await running.stop()


@pytest_asyncio.fixture
async def http(gateway: str, md: Metadata) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, headers=dict(md), timeout=10) as client:
        yield client


@pytest_asyncio.fixture(scope="session")
async def dist_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    """The distributed profile's servers (Cassandra 5.0 and JanusGraph 1.1, assembled from Maven
    Central by scripts/devstack.py), started once, only if a test asks: their endpoints.
    LILY_TEST_DIST_ENDPOINTS ("cassandra=host:port,janusgraph=ws://...") uses a stack that is
    already running (`scripts/devstack.py up`) instead; tests that stop it skip then."""
    import asyncio

    from scripts import devstack

    given = os.environ.get("LILY_TEST_DIST_ENDPOINTS")
    if given:
        yield dict(part.split("=", 1) for part in given.split(","))
        return

    data_dir = tmp_path_factory.mktemp("dist")
    # the scripts block (and gremlinpython runs its own loop): keep them off this loop
    endpoints = await asyncio.to_thread(devstack.up, data_dir)
    yield endpoints
    await asyncio.to_thread(devstack.down, data_dir)


@pytest_asyncio.fixture(scope="session")
async def dist_lily(
    dist_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Lily, str]]:
    """A Lily server on the distributed profile (the dev stack's Cassandra, a keyspace of its
    own, and JanusGraph) with its own Postgres and NATS, so that its workers never take the
    local server's events: the server and its NATS URL."""
    s = EmbeddedStack(tmp_path_factory.mktemp("dist-lily"))
    dsn, url = await s.start()
    settings = Settings(
        grpc_port=0,
        shutdown_grace=1.0,
        worker_processes=0,
        stores={
            "type": "distributed",
            "cassandra": {
                "hosts": dist_stack["cassandra"],
                "keyspace": "lily_it" + uuid.uuid4().hex[:8],
            },
            "janusgraph_url": dist_stack["janusgraph"],
        },
    )
    server = await start(settings, postgres_dsn=dsn, nats_url=url)
    yield server, url
    await server.stop()
    await s.stop()


@pytest_asyncio.fixture(scope="session")
async def dist_channel(dist_lily: tuple[Lily, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(dist_lily[0].address) as ch:
        yield ch


@pytest_asyncio.fixture(scope="session")
async def inbound(lily: Lily, stack: tuple[str, str], admin_md: Metadata) -> AsyncIterator[str]:
    """The adapter runtime (with a platform credential of its own) behind a gateway that
    serves its webhooks, as `lily up` runs them: the gateway's base URL."""
    async with grpc.aio.insecure_channel(lily.address) as ch:
        token = await runtime_key(ch, admin_md)
    async with serving_runtime(
        lily.address, token, stack[1], poll_tick=0.5, subscriptions_ttl=0.5
    ) as base_url:
        yield base_url
