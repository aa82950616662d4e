"""Lily's change streams as the runtime reads them (ChangeFeed: a durable consumer on the
shared stream and on each DEDICATED tenant's), and the asset changes for the adapters that
follow them (Follow, for enforcement targets): lily.*.asset.* on every change stream.
Each fetched batch is split by tenant; each integration of a following type in that tenant
gets, as one delivery in the inbox, the changes its adapter wants (adapters.spec.Follower),
so they are applied as every delivery is: in order per integration, tried again while the
engine is away, dead-lettered (visible, replayable) when they can never succeed. The events
are acknowledged only once the inbox holds their deliveries; a batch fetched again makes the
same deliveries, kept once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

import grpc
import nats.errors
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from lily.v1 import events_pb2 as events_pb
from lily.v1 import integration_pb2 as integration_pb
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.runtime.inbox import Inbox, batches, stopping
from adapters.runtime.resolver import CoreUnavailable, Resolver
from adapters.spec import AdapterType, AssetChange, Delivery, body_of
from adapters.tracing import traceparent_of
from core.events.pull import Pull

log = logging.getLogger(__name__)

CHANGES_STREAM = "LILY_CHANGES"  # the core's (core/events/nats.py)
BATCH_HEADER = "Lily-Events"  # a message of several events (a ChangeEventBatch)
CONSUMER = "adapters-follow"
_ALL_CHANGES = "lily.*.*.*"  # the change stream's subjects, behind a cell's prefix if any
DISCOVER_EVERY = 5.0  # seconds between looks for new change streams
BATCH = 512
LIST_EVERY = 5.0  # seconds the list of following integrations is kept
UNKNOWN_EVERY = 0.25  # ... when a change of a tenant it lists none for comes


def subject_tenant(subject: str) -> str:
    """The tenant of a change's subject ([<cell>.]lily.<tenant>.<entity>.<change>)."""
    return subject.rsplit(".", 3)[-3]


def events_in(msg: Msg) -> Sequence[events_pb.ChangeEvent]:
    """A change message's events: one ChangeEvent, or a ChangeEventBatch's when the message
    has the Lily-Events header (proto/lily/v1/events.proto)."""
    if msg.headers and BATCH_HEADER in msg.headers:
        return events_pb.ChangeEventBatch.FromString(msg.data).events
    return [events_pb.ChangeEvent.FromString(msg.data)]


def change_of(event: events_pb.ChangeEvent) -> AssetChange:
    return AssetChange(
        asset_id=event.asset_id,
        qualified_name=event.qualified_name,
        asset_type=int(event.asset_type),
        version=event.asset_version,
        tags=tuple(event.tags),
        deleted=event.change == events_pb.CHANGE_KIND_DELETED,
    )


class ChangeFeed:
    """A durable consumer, `consumer`, on every change stream there is (the shared one from
    now on; a DEDICATED tenant's cell's, LILY_CHANGES_<cell>, from its start, found within
    DISCOVER_EVERY seconds), of the subjects `subjects` names (behind a cell's prefix).
    Each fetched batch goes to `handle`, which answers the messages it keeps to acknowledge
    itself later; the rest are acknowledged once it returns, or all tried again after a
    growing pause if it raised that something it needs is away."""

    def __init__(
        self,
        js: JetStreamContext,
        consumer: str,
        subjects: str,
        handle: Callable[[list[Msg]], Awaitable[Collection[Msg]]],
        *,
        batch: int = BATCH,
    ) -> None:
        self._js = js
        self._consumer = consumer
        self._subjects = subjects
        self._handle = handle
        self._batch = batch

    async def streams(self) -> list[tuple[str, str]]:
        """The change streams: the shared one, and each DEDICATED tenant's cell's (named
        LILY_CHANGES_<cell>, its subjects behind `<cell>.`), with their subject prefixes."""
        found: list[tuple[str, str]] = []
        offset = 0
        while True:  # the server lists streams a page at a time
            page = await self._js.streams_info(offset)
            for info in page:
                name = info.config.name or ""
                subject = next(iter(info.config.subjects or []), "")
                if name == CHANGES_STREAM or name.startswith(CHANGES_STREAM + "_"):
                    if subject.endswith(_ALL_CHANGES):
                        found.append((name, subject[: -len(_ALL_CHANGES)]))
            if not page:
                return found
            offset += len(page)

    async def ensure(self) -> list[str]:
        """Makes the durable consumer on every change stream there is; their names."""
        made: list[str] = []
        for stream, prefix in await self.streams():
            await self._js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=self._consumer,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=30.0,
                    deliver_policy=DeliverPolicy.ALL if prefix else DeliverPolicy.NEW,
                    filter_subject=f"{prefix}{self._subjects}",
                    max_ack_pending=20000,
                ),
            )
            made.append(stream)
        return made

    async def run(self) -> None:
        """Follows every change stream, and each new one within DISCOVER_EVERY seconds."""
        following: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    for stream in await self.ensure():
                        if stream not in following or following[stream].done():
                            following[stream] = asyncio.create_task(
                                self._follow(stream), name=f"{self._consumer}-{stream}"
                            )
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("%s: change streams not listed: %s", self._consumer, exc)
                stopping()
                await asyncio.sleep(DISCOVER_EVERY)
        finally:
            for task in following.values():
                task.cancel()
            await asyncio.gather(*following.values(), return_exceptions=True)

    async def _follow(self, stream: str) -> None:
        sub = await Pull.bind(self._js, stream, self._consumer)
        try:
            await self._fetch_loop(stream, sub)
        finally:  # or a drain at shutdown waits on what a cut-short fetch left behind
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _fetch_loop(self, stream: str, sub: Pull) -> None:
        failures = 0
        async for msgs in batches(sub, self._batch, f"{self._consumer} {stream}"):
            try:
                kept = await self._handle(msgs)
                failures = 0
            except (CoreUnavailable, grpc.aio.AioRpcError, nats.errors.Error, TimeoutError) as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("%s: %d changes wait %.1f s: %s", self._consumer, len(msgs), delay, exc)
                for msg in msgs:
                    await msg.nak(delay=delay)
                continue
            for msg in msgs:
                if msg not in kept:
                    await msg.ack()


class Follow:
    def __init__(
        self,
        js: JetStreamContext,
        resolver: Resolver,
        inbox: Inbox,
        types: Mapping[str, AdapterType],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._inbox = inbox
        self._types = {n: t for n, t in types.items() if t.follower is not None}
        self._clock = clock
        self._listed: tuple[float, dict[str, list[integration_pb.Integration]]] | None = None
        self.feed = ChangeFeed(js, CONSUMER, "lily.*.asset.*", self._forwarded)

    async def run(self) -> None:
        if self._types:
            await self.feed.run()

    async def _forwarded(self, msgs: list[Msg]) -> Collection[Msg]:
        await self.forward(msgs)
        return ()

    async def forward(self, msgs: list[Msg]) -> int:
        """Files the changes each following integration wants as one delivery of it; how
        many deliveries."""
        if not msgs:
            return 0
        # (only the changes of tenants with following integrations are read at all)
        following = await self._following({subject_tenant(m.subject) for m in msgs})
        by_tenant: dict[str, list[tuple[Msg, events_pb.ChangeEvent]]] = defaultdict(list)
        for msg in msgs:
            if subject_tenant(msg.subject) not in following:
                continue
            try:
                events = events_in(msg)
            except DecodeError:
                continue
            for event in events:
                if event.entity == events_pb.ENTITY_KIND_ASSET and event.asset_id:
                    by_tenant[event.tenant_id].append((msg, event))
        filed = 0
        for tenant, found in by_tenant.items():
            changes = [(e.event_id, change_of(e)) for _, e in found]
            traces = {e.event_id: traceparent_of(m.headers) for m, e in found}
            for i in following.get(tenant, []):
                kind = self._types.get(i.type)
                resolved = await self._resolver.get(i.integration_id)
                if kind is None or kind.follower is None or resolved is None:
                    continue
                if resolved.integration.disabled:
                    continue
                settings = json_format.MessageToDict(resolved.integration.settings)
                wanted = [(e, c) for e, c in changes if kind.follower.wants(settings, c)]
                if not wanted:
                    continue
                digest = hashlib.sha256("|".join(e for e, _ in wanted).encode()).hexdigest()
                await self._inbox.put(
                    Delivery(
                        i.integration_id,
                        tenant,
                        i.type,
                        f"changes.{digest[:40]}",
                        body_of([c for _, c in wanted]),
                        time.time(),
                        trace=next((traces[e] for e, _ in wanted if traces[e]), ""),
                    )
                )
                filed += 1
        return filed

    async def _following(
        self, tenants: Collection[str]
    ) -> dict[str, list[integration_pb.Integration]]:
        """The enabled integrations of following types, by tenant: kept LIST_EVERY s, or a
        quarter of a second when the batch has a tenant it has none for (one may have just been
        made; a target's first reconciliation, at once, covers what came before)."""
        if self._listed is not None:
            age = self._clock() - self._listed[0]
            known = all(t in self._listed[1] for t in tenants)
            if age < (LIST_EVERY if known else UNKNOWN_EVERY):
                return self._listed[1]
        found: dict[str, list[integration_pb.Integration]] = defaultdict(list)
        for kind in self._types:
            async for i in self._resolver.listed(kind):
                if not i.disabled:
                    found[i.tenant_id].append(i)
        self._listed = (self._clock(), dict(found))
        return self._listed[1]
