"""Routing Lily's events to subscriptions (the outbound half's first step): a durable consumer,
adapters-notify, on every change stream; each event is matched against its tenant's
subscriptions (ListPlatformSubscriptions, kept a moment), rendered with each one's template
and queued on the outbound stream as a delivery of that subscription, recorded as queued.

A burst is summarised: the events propagation writes (those with a cause_event_id: an
incident's or a tag's effect downstream, or an edge's) that one subscription takes are held,
by event type, while more come (until `quiet` seconds pass without one, at most `longest`
seconds) and sent as one notification naming how many and the worst of them; 1,000 assets
marked unhealthy by one incident are one message. Held events are acknowledged only once
their summary is queued, so a stop loses none. A change made directly (no cause) is sent at
once."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

import grpc
from google.protobuf.message import DecodeError
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import notification_pb2 as notification_pb
from lily.v1 import notification_pb2_grpc as notification_grpc
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters.runtime.follow import ChangeFeed, events_in, subject_tenant
from adapters.runtime.inbox import sequence
from adapters.runtime.outbox import Outbox
from adapters.runtime.record import Recorder, delivery_record, seconds
from adapters.spec import SEVERITY_NAMES, Notification
from adapters.tracing import traceparent_of

log = logging.getLogger(__name__)

CONSUMER = "adapters-notify"
# The event types subscriptions name (policy/notifications.py lists the same; a test holds
# the two to the same list).
EVENT_TYPES = (
    "issue.opened",
    "issue.updated",
    "issue.resolved",
    "asset.created",
    "asset.updated",
    "asset.deleted",
    "asset.tagged",
    "asset.untagged",
    "asset.unhealthy",
    "asset.healthy",
    "lineage.changed",
    "enforcement.applied",
    "enforcement.failed",
    "enforcement.drifted",
    "asset.notice",
)
_HEALTH = "unhealthy_upstream_asset_ids"
_ASSET_CHANGES = {
    events_pb.CHANGE_KIND_CREATED: "asset.created",
    events_pb.CHANGE_KIND_UPDATED: "asset.updated",
    events_pb.CHANGE_KIND_DELETED: "asset.deleted",
    events_pb.CHANGE_KIND_TAGGED: "asset.tagged",
    events_pb.CHANGE_KIND_UNTAGGED: "asset.untagged",
}
_ENFORCEMENT = {
    events_pb.CHANGE_KIND_APPLIED: "enforcement.applied",
    events_pb.CHANGE_KIND_FAILED: "enforcement.failed",
    events_pb.CHANGE_KIND_DRIFTED: "enforcement.drifted",
}
_ISSUE_STATUS = {
    common_pb.ISSUE_STATUS_OPEN: "open",
    common_pb.ISSUE_STATUS_ACKNOWLEDGED: "acknowledged",
    common_pb.ISSUE_STATUS_RESOLVED: "resolved",
}
# assets a summary names first: tables and views, then the rest
_RANK = {common_pb.ASSET_TYPE_TABLE: 0, common_pb.ASSET_TYPE_VIEW: 0}
WORST = 10


def event_type(e: events_pb.ChangeEvent) -> str | None:
    """An event's type, as subscriptions name it (None: one they cannot name)."""
    if e.entity == events_pb.ENTITY_KIND_ISSUE:
        if e.issue.status == common_pb.ISSUE_STATUS_RESOLVED:
            return "issue.resolved"
        return "issue.opened" if e.change == events_pb.CHANGE_KIND_ATTACHED else "issue.updated"
    if e.entity == events_pb.ENTITY_KIND_ASSET:
        if e.change == events_pb.CHANGE_KIND_UPDATED and _HEALTH in e.changed_fields:
            return "asset.unhealthy" if e.unhealthy_upstream_asset_ids else "asset.healthy"
        return _ASSET_CHANGES.get(e.change)
    if e.entity == events_pb.ENTITY_KIND_RELATIONSHIP:
        return "lineage.changed"
    if e.entity == events_pb.ENTITY_KIND_ENFORCEMENT:
        return _ENFORCEMENT.get(e.change)
    if e.entity == events_pb.ENTITY_KIND_NOTICE:
        return "asset.notice"
    return None


def severity_of(e: events_pb.ChangeEvent) -> int:
    if e.entity == events_pb.ENTITY_KIND_ISSUE:
        return int(e.issue.severity)
    if e.entity == events_pb.ENTITY_KIND_NOTICE:
        return int(e.notice.severity)
    return 0


@dataclass(frozen=True, slots=True)
class Route:
    """A subscription as routing reads it: plain values, read for every event."""

    subscription_id: str
    tenant_id: str
    integration_id: str
    template: str
    max_attempts: int
    event_types: frozenset[str]  # ("*": all)
    tags: frozenset[str]
    asset_types: frozenset[int]
    prefix: str
    min_severity: int
    # its last pause, in epoch seconds: an event of that time is not sent (until None: it
    # is paused still)
    paused_from: float | None = None
    paused_until: float | None = None

    @classmethod
    def of(cls, s: notification_pb.Subscription) -> Route:
        f = s.filter
        paused_from = paused_until = None
        if s.paused or s.HasField("resumed_at"):
            paused_from = seconds(s.paused_at)  # (unset: 0, since ever)
            if not s.paused:
                paused_until = seconds(s.resumed_at)
        return cls(
            subscription_id=s.subscription_id,
            tenant_id=s.tenant_id,
            integration_id=s.integration_id,
            template=s.template,
            max_attempts=s.max_attempts or 8,
            event_types=frozenset(f.event_types),
            tags=frozenset(f.tags),
            asset_types=frozenset(int(t) for t in f.asset_types),
            prefix=f.qualified_name_prefix,
            min_severity=int(f.min_severity),
            paused_from=paused_from,
            paused_until=paused_until,
        )

    def takes(self, kind: str, e: events_pb.ChangeEvent) -> bool:
        """Whether it takes an event of type `kind`: each field its filter sets matches, and
        it was not paused when the event happened."""
        if kind not in self.event_types and "*" not in self.event_types:
            return False
        if self.paused_from is not None:
            at = seconds(e.occurred_at) if e.HasField("occurred_at") else time.time()
            if at >= self.paused_from and (self.paused_until is None or at < self.paused_until):
                return False
        if self.prefix and not e.qualified_name.startswith(self.prefix):
            return False
        if self.tags and self.tags.isdisjoint(e.tags):
            return False
        if self.asset_types and e.asset_type not in self.asset_types:
            return False
        return not self.min_severity or severity_of(e) >= self.min_severity


Routes = dict[str, dict[str, list[Route]]]  # tenant -> event type -> its subscriptions


def index(subscriptions: Iterable[notification_pb.Subscription]) -> Routes:
    """The subscriptions by tenant and event type (a paused one too: it takes what happened
    before its pause)."""
    found: Routes = defaultdict(lambda: defaultdict(list))
    for s in subscriptions:
        route = Route.of(s)
        kinds = EVENT_TYPES if "*" in route.event_types else route.event_types
        for kind in kinds:
            found[s.tenant_id][kind].append(route)
    return {tenant: dict(kinds) for tenant, kinds in found.items()}


def title_of(kind: str, e: events_pb.ChangeEvent) -> str:
    name = e.qualified_name or e.asset_id
    if e.entity == events_pb.ENTITY_KIND_ISSUE:
        verb = {"issue.opened": "opened", "issue.resolved": "resolved"}.get(kind, "updated")
        return f"Issue {verb} on {name}: {e.issue.title or e.issue.type}"
    if e.entity == events_pb.ENTITY_KIND_NOTICE:
        return e.notice.title
    if kind == "asset.unhealthy":
        n = len(e.unhealthy_upstream_asset_ids)
        return f"{name} is unhealthy: {n} asset(s) upstream have open issues"
    if kind == "asset.healthy":
        return f"{name} is healthy again"
    if kind == "asset.tagged":
        return f"{name} tagged {', '.join(e.tags_added)}"
    if kind == "asset.untagged":
        return f"{name} no longer tagged {', '.join(e.tags_removed)}"
    if e.entity == events_pb.ENTITY_KIND_ENFORCEMENT:
        where = e.enforcement.target_object or e.enforcement.integration_id
        return f"Enforcement {kind.split('.')[1]} on {name} in {where}"
    if kind == "lineage.changed":
        r = e.relationship
        return f"Lineage {r.upstream_asset_id} -> {r.downstream_asset_id} changed"
    return f"{name}: {kind.split('.')[1]}"


def render(template: str, n: Notification) -> str:
    """The subscription's template with the notification's fields (checked when the
    subscription was made; a template that still fails gives the title)."""
    try:
        return (template or "{title}").format_map(n.fields())
    except (KeyError, ValueError, IndexError, AttributeError):
        return n.title


def delivery_id(subscription_id: str, event_ids: Sequence[str]) -> str:
    """The same events routed to the same subscription again are the same delivery."""
    key = subscription_id + "|" + "|".join(event_ids)
    return "dlv_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def notification(s: Route, kind: str, e: events_pb.ChangeEvent) -> Notification:
    """One event as a subscription sends it."""
    severity = severity_of(e)
    n = Notification(
        delivery_id=delivery_id(s.subscription_id, [e.event_id]),
        tenant_id=s.tenant_id,
        subscription_id=s.subscription_id,
        integration_id=s.integration_id,
        event_type=kind,
        title=title_of(kind, e),
        text="",
        severity=SEVERITY_NAMES[severity] if 0 <= severity < len(SEVERITY_NAMES) else "",
        asset_id=e.asset_id,
        qualified_name=e.qualified_name,
        asset_type=int(e.asset_type),
        url=e.issue.url or e.notice.url,
        occurred_at=seconds(e.occurred_at),  # (unset: 0)
        tags=tuple(e.tags),
        actor=e.actor,
        event_ids=(e.event_id,),
        issue_id=e.issue.issue_id,
        issue_status=_ISSUE_STATUS.get(e.issue.status, ""),
        issue_source=e.issue.source,
        issue_external_id=e.issue.external_id,
        max_attempts=s.max_attempts,
    )
    return _rendered(s, n)


def _rendered(s: Route, n: Notification) -> Notification:
    return replace(n, text=render(s.template, n))


def summary(s: Route, kind: str, events: Sequence[events_pb.ChangeEvent]) -> Notification:
    """A burst of events as one notification: how many, and the worst (most unhealthy
    upstream first, tables and views before columns)."""
    if len(events) == 1:
        return notification(s, kind, events[0])
    worst = sorted(
        events,
        key=lambda e: (
            -len(e.unhealthy_upstream_asset_ids),
            _RANK.get(e.asset_type, 1),
            e.qualified_name,
        ),
    )
    first = notification(s, kind, worst[0])
    verb = kind.split(".")[1]
    names = tuple(e.qualified_name for e in worst[:WORST])
    n = replace(
        first,
        delivery_id=delivery_id(s.subscription_id, [e.event_id for e in events]),
        title=f"{len(events)} assets {verb}; worst: {', '.join(names[:3])}",
        count=len(events),
        assets=names,
        event_ids=tuple(e.event_id for e in events),
    )
    return _rendered(s, n)


class Subscriptions:
    """Every tenant's subscriptions, by tenant: asked of the core again after `every`
    seconds, or a quarter of a second when an event of a tenant it has none for comes."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        *,
        every: float = 2.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = notification_grpc.NotificationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._every = every
        self._timeout = timeout
        self._clock = clock
        self._known: tuple[float, Routes] | None = None

    async def of(self, tenants: Collection[str]) -> Routes:
        if self._known is not None:
            age = self._clock() - self._known[0]
            known = all(t in self._known[1] for t in tenants)
            if age < (self._every if known else min(self._every, 0.25)):
                return self._known[1]
        found: list[notification_pb.Subscription] = []
        after = ""
        while True:
            page = await self._stub.ListPlatformSubscriptions(
                notification_pb.ListPlatformSubscriptionsRequest(
                    page_size=1000, after_subscription_id=after
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
            found += page.subscriptions
            if len(page.subscriptions) < 1000:
                break
            after = page.subscriptions[-1].subscription_id
        self._known = (self._clock(), index(found))
        return self._known[1]


@dataclass
class Burst:
    subscription: Route
    kind: str
    started: float
    last: float
    events: dict[str, events_pb.ChangeEvent] = field(default_factory=dict)  # by event id
    msgs: dict[int, Msg] = field(default_factory=dict)  # by stream sequence


class Router:
    def __init__(
        self,
        js: JetStreamContext,
        subscriptions: Subscriptions,
        outbox: Outbox,
        recorder: Recorder,
        *,
        quiet: float = 1.0,
        longest: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subscriptions = subscriptions
        self._outbox = outbox
        self._recorder = recorder
        self._quiet = quiet
        self._longest = longest
        self._clock = clock
        self._bursts: dict[tuple[str, str], Burst] = {}
        self._holds: dict[int, int] = defaultdict(int)  # a held message's bursts, by seq
        self._lock = asyncio.Lock()
        self.feed = ChangeFeed(js, CONSUMER, "lily.*.*.*", self.route)

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_loop(), name="notify-bursts")
        try:
            await self.feed.run()
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def route(self, msgs: list[Msg]) -> Collection[Msg]:
        """Queues what each subscription takes of a batch; the messages held in bursts."""
        # (only the events of tenants with subscriptions are read at all)
        subscriptions = await self._subscriptions.of({subject_tenant(m.subject) for m in msgs})
        events: list[tuple[Msg, events_pb.ChangeEvent, str]] = []
        for msg in msgs:
            if not subscriptions.get(subject_tenant(msg.subject)):
                continue
            try:
                found = events_in(msg)
            except DecodeError:
                continue
            for e in found:
                kind = event_type(e)
                if kind is not None:
                    events.append((msg, e, kind))
        if not events:
            return ()
        now = self._clock()
        held: list[Msg] = []
        lanes: dict[str, list[Notification]] = defaultdict(list)
        async with self._lock:
            for msg, e, kind in events:
                for s in subscriptions.get(e.tenant_id, {}).get(kind, ()):
                    if not s.takes(kind, e):
                        continue
                    if e.cause_event_id:
                        self._hold(s, kind, e, msg, now)
                        held.append(msg)
                    else:
                        n = notification(s, kind, e)
                        lanes[s.subscription_id].append(
                            replace(n, trace=traceparent_of(msg.headers))
                        )
        # subscriptions side by side, each one's in order (the order its lane sends them in)
        await asyncio.gather(*(self._queue_all(lane) for lane in lanes.values()))
        return held

    async def _queue_all(self, notifications: list[Notification]) -> None:
        for n in notifications:
            await self._queue(n)

    def _hold(
        self,
        s: Route,
        kind: str,
        e: events_pb.ChangeEvent,
        msg: Msg,
        now: float,
    ) -> None:
        key = (s.subscription_id, kind)
        burst = self._bursts.get(key)
        if burst is None:
            burst = self._bursts[key] = Burst(s, kind, now, now)
        burst.last = now
        burst.events[e.event_id] = e  # (an event the stream sent again is one event)
        seq = sequence(msg)
        if seq not in burst.msgs:
            self._holds[seq] += 1
        burst.msgs[seq] = msg  # (acknowledged through the newest copy)

    async def _queue(self, n: Notification) -> None:
        body = n.dump()
        self._recorder.delivery(delivery_record(n, "queued", 0, 0, notification=body))
        await self._outbox.put(n, body)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(min(0.2, self._quiet / 2))
            try:
                await self.flush()
            except Exception as exc:  # NATS away: the next round tries again
                log.warning("notify: bursts not sent yet: %s", exc)

    async def flush(self) -> int:
        """Sends the bursts that are over (quiet long enough, or held the longest); how many."""
        now = self._clock()
        sent = 0
        async with self._lock:
            for key, burst in list(self._bursts.items()):
                over = now - burst.last >= self._quiet or now - burst.started >= self._longest
                if not over:
                    continue
                events = list(burst.events.values())
                first = next(iter(burst.msgs.values()))
                n = summary(burst.subscription, burst.kind, events)
                await self._queue(replace(n, trace=traceparent_of(first.headers)))
                del self._bursts[key]
                sent += 1
                for seq, msg in burst.msgs.items():
                    self._holds[seq] -= 1
                    if self._holds[seq] <= 0:
                        del self._holds[seq]
                        await msg.ack()
        return sent
