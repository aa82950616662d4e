"""core.events.pull.Pull against the session's real NATS: what a fetch answers when nothing is
there, when messages come while it waits, when more than a batch is there, and when the
consumer does not exist; a message is delivered once and stays delivered until acknowledged."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from core.events.pull import Pull


@pytest_asyncio.fixture
async def js(nats_url: str) -> AsyncIterator[tuple[JetStreamContext, str]]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=5.0)
    name = f"PULLTEST_{uuid.uuid4().hex[:8]}"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    await js.add_consumer(
        name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0)
    )
    yield js, name
    await js.delete_stream(name)
    await nc.close()


async def _publish(js: JetStreamContext, stream: str, n: int) -> None:
    for i in range(n):
        await js.publish(f"{stream.lower()}.x", str(i).encode())


async def test_a_fetch_of_nothing_waits_its_timeout_and_answers_none(js) -> None:
    ctx, stream = js
    pull = await Pull.bind(ctx, stream, "c")
    began = time.monotonic()
    assert await pull.fetch(10, timeout=0.3) == []
    assert 0.25 <= time.monotonic() - began < 2.0
    await pull.unsubscribe()


async def test_a_fetch_takes_what_is_there_up_to_its_batch_in_order(js) -> None:
    ctx, stream = js
    await _publish(ctx, stream, 25)
    pull = await Pull.bind(ctx, stream, "c")
    first = await pull.fetch(10, timeout=1.0)
    second = await pull.fetch(10, timeout=1.0)
    third = await pull.fetch(10, timeout=1.0)
    got = [int(m.data) for m in first + second + third]
    assert [len(first), len(second), len(third)] == [10, 10, 5]
    assert got == list(range(25))
    for m in first + second + third:
        await m.ack()
    assert await pull.fetch(10, timeout=0.2) == []
    await pull.unsubscribe()


async def test_a_waiting_fetch_answers_as_soon_as_a_message_comes(js) -> None:
    ctx, stream = js
    pull = await Pull.bind(ctx, stream, "c")

    async def later() -> None:
        await asyncio.sleep(0.2)
        await _publish(ctx, stream, 3)

    began = time.monotonic()
    sending = asyncio.create_task(later())
    msgs = await pull.fetch(10, timeout=5.0)
    await sending
    assert 1 <= len(msgs) <= 3
    assert time.monotonic() - began < 2.0  # not its 5 s timeout
    rest = await pull.fetch(10, timeout=1.0) if len(msgs) < 3 else []
    assert sorted(int(m.data) for m in msgs + rest) == [0, 1, 2]
    await pull.unsubscribe()


async def test_an_unacknowledged_message_is_not_fetched_again_before_its_ack_wait(js) -> None:
    ctx, stream = js
    await _publish(ctx, stream, 2)
    pull = await Pull.bind(ctx, stream, "c")
    [a, b] = await pull.fetch(2, timeout=1.0)
    await a.ack()
    assert await pull.fetch(2, timeout=0.2) == []  # b is still ours
    await b.nak()
    [again] = await pull.fetch(2, timeout=2.0)
    assert again.data == b.data and again.metadata.num_delivered == 2
    await pull.unsubscribe()


async def test_a_consumer_that_does_not_exist_is_an_error_not_a_hang(js) -> None:
    ctx, stream = js
    pull = await Pull.bind(ctx, stream, "missing")
    began = time.monotonic()
    with pytest.raises(nats.errors.Error):
        await pull.fetch(5, timeout=0.5)
    assert time.monotonic() - began < 5.0
    await pull.unsubscribe()
