"""Change events on the session's real NATS: a run of asset.created events of one outbox entry
travels as ChangeEventBatch messages (at most BATCH_EVENTS each), every other event alone, in
the order written; a batch published again (the outbox relay's poll after its fast path) is
stored once; and WatchChanges' source hands a watcher each event of a batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest_asyncio
from lily.v1 import events_pb2 as events_pb

from core.events.codec import BATCH_HEADER, events_of
from core.events.nats import BATCH_EVENTS, CHANGES_STREAM, NatsChangeBus
from core.events.watch import WatchFilter, changes
from core.ports import OutboxRecord


@pytest_asyncio.fixture
async def bus(nats_url: str) -> AsyncIterator[NatsChangeBus]:
    bus = await NatsChangeBus.connect(nats_url, timeout=5.0, name="test-change-batches")
    yield bus
    await bus.close()


def _record(entry: int, tenant: str, n: int, subject: str = "asset.created") -> OutboxRecord:
    """Event n of outbox entry `entry`, on lily.<tenant>.<subject>."""
    entity, change = subject.split(".")
    event = events_pb.ChangeEvent(
        event_id=f"{tenant}-{entry}-{n}",
        tenant_id=tenant,
        entity=events_pb.EntityKind.Value(f"ENTITY_KIND_{entity.upper()}"),
        change=events_pb.ChangeKind.Value(f"CHANGE_KIND_{change.upper()}"),
        asset_id=f"a{n}",
        qualified_name=f"pg://batch/t/c{n}",
        asset_version=1,
    )
    return OutboxRecord(
        entry, event.event_id, f"lily.{tenant}.{subject}", event.SerializeToString(), HEADERS
    )


HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


async def _stored(nats_url: str, tenant: str) -> list:
    """The tenant's messages on the change stream, as stored."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().subscribe(
            f"lily.{tenant}.>", stream=CHANGES_STREAM, ordered_consumer=True
        )
        found = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                found.append(await sub.next_msg(timeout=1))
        return found
    finally:
        await nc.close()


async def test_a_bulk_writes_new_assets_travel_in_batches_in_order_and_once(
    bus, nats_url, tenant
) -> None:
    many = BATCH_EVENTS * 2 + 88
    first = [_record(1, tenant, i) for i in range(many)]
    first += [
        _record(1, tenant, many, "relationship.created"),
        _record(1, tenant, many + 1, "asset.updated"),
    ]
    first += [_record(1, tenant, many + 2 + i) for i in range(2)]
    second = [_record(2, tenant, i) for i in range(3)]
    await bus.publish(first + second)

    stored = await _stored(nats_url, tenant)
    sizes = [int((m.headers or {}).get(BATCH_HEADER, 0)) for m in stored]
    assert sizes == [BATCH_EVENTS, BATCH_EVENTS, 88, 0, 0, 2, 3]
    assert [m.subject.rsplit(".", 2)[-2:] for m in stored] == [
        ["asset", "created"],
        ["asset", "created"],
        ["asset", "created"],
        ["relationship", "created"],
        ["asset", "updated"],
        ["asset", "created"],
        ["asset", "created"],
    ]
    events = [e for m in stored for e in events_of(m.data, m.headers)]
    assert [e.event_id for e in events] == [r.event_id for r in first + second]
    assert all(m.headers["traceparent"] == HEADERS["traceparent"] for m in stored)
    assert stored[0].headers["Nats-Msg-Id"] == f"{first[0].event_id}+{BATCH_EVENTS}"
    assert stored[3].headers["Nats-Msg-Id"] == first[many].event_id  # alone: its own id

    # the poll publishes the same entries again, one entry at a time: nothing is stored twice
    await bus.publish(first)
    await bus.publish(second)
    assert len(await _stored(nats_url, tenant)) == len(stored)


async def test_a_watcher_gets_each_event_of_a_batch(bus, tenant) -> None:
    records = [_record(1, tenant, i) for i in range(5)]
    got: list[str] = []

    async def watch() -> None:
        async for event in changes(bus, tenant, WatchFilter()):
            got.append(event.event_id)
            if len(got) == len(records):
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.5)  # (the watcher's consumer starts from what comes next)
    await bus.publish(records)
    await asyncio.wait_for(watcher, timeout=10)
    assert got == [r.event_id for r in records]
