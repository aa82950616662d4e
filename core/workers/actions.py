"""The post-consume actions worker: a durable JetStream consumer of every change event of
its cell, which runs each tenant's enabled actions (core/transforms) on each event.

An action that fails or runs out of time fails that event for that action only: if it is
configured `on_failure: retry`, the event comes again later (and the tenant's other actions
run on it again too: actions must be idempotent, as every consumer of at-least-once events
is), and after MAX_DELIVER tries it goes to the dead letters (lilydead.<tenant>.actions)
with the reason; `skip` logs it and lets the event go."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from lily.v1 import events_pb2 as events_pb
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from core.events.codec import events_of
from core.events.nats import NatsChangeBus, fetch, kept
from core.events.pull import Pull
from core.transforms.pipeline import Hooks

log = logging.getLogger(__name__)

CONSUMER = "actions"
ACK_WAIT = 30.0
MAX_DELIVER = 8
FETCH = 128


class ActionsWorker:
    def __init__(self, bus: NatsChangeBus, hooks: Hooks) -> None:
        self._bus = bus
        self._hooks = hooks

    async def run(self) -> None:
        await self._bus.js.add_consumer(
            self._bus.changes_stream,
            ConsumerConfig(
                durable_name=CONSUMER,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT,
                max_deliver=MAX_DELIVER + 1,  # (the last try dead-letters it and acks)
                max_ack_pending=1000,
                filter_subject=f"{self._bus.prefix}lily.*.*.*",
            ),
        )
        sub = await Pull.bind(self._bus.js, self._bus.changes_stream, CONSUMER)
        while True:
            if msgs := await fetch(sub, FETCH, "actions"):
                async with kept(msgs, ACK_WAIT / 3):
                    await self.process(msgs)

    async def process(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            try:
                events = events_of(msg.data, msg.headers)
            except DecodeError:
                log.error("actions: undecodable event on %s; dropped", msg.subject)
                await msg.term()
                continue
            await self._one(msg, events)

    async def _one(self, msg: Msg, events: Sequence[events_pb.ChangeEvent]) -> None:
        """The actions on a message's events (one, or a batch's: tried again together, and
        each event that still fails on the last try dead-lettered alone)."""
        failed: list[tuple[events_pb.ChangeEvent, str]] = []
        for event in events:
            whys = []
            for stage in self._hooks.actions(event.tenant_id):
                why = await self._hooks.act(stage, event)
                if not why:
                    continue
                extra = {"tenant_id": event.tenant_id, "event_id": event.event_id}
                if stage.skip:
                    log.warning("action %s skipped an event: %s", stage.name, why, extra=extra)
                else:
                    whys.append(why)
            if whys:
                failed.append((event, "; ".join(whys)))
        if not failed:
            await msg.ack()
            return
        tries = msg.metadata.num_delivered
        for event, reason in failed:
            eid = event.event_id
            if tries < MAX_DELIVER:
                log.warning("actions: event %s failed (try %d): %s", eid, tries, reason)
            else:
                log.error("actions: event %s dead after %d tries: %s", eid, tries, reason)
                payload = event.SerializeToString()
                await self._bus.dead_letter(event.tenant_id, CONSUMER, payload, reason)
        if tries < MAX_DELIVER:
            await msg.nak(delay=min(2.0**tries, 60.0))
        else:
            await msg.ack()
