"""Notifications: subscriptions that send a tenant's events to a destination (an integration
of a type that takes notifications: slack, teams, jira, freshdesk, webhook), the record of
every delivery and of each destination's health, and the ways to send one again.

The adapter runtime does the sending (adapters/runtime/notify.py): it reads every tenant's
subscriptions (ListPlatformSubscriptions), routes each event to those whose filter takes it,
and files what became of each delivery (RecordDeliveries). What this side sends itself (a
retry, a replay, a test) goes onto the runtime's outbound stream through the Outbound port.
An ad hoc notification (Notify) is an event, lily.<tenant>.notice.created, routed as any."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson

from core.domain.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.metadata.pagination import page_size
from core.requestctx import Principal
from core.wire.validation import check_mask, check_query, check_text, refuse
from policy.integrations import Integrations
from policy.model import DeliveryRecord, HealthRecord, SubscriptionRecord
from policy.ports import DeliveryQuery, EventPublisher, NotificationStore, Outbound

log = logging.getLogger(__name__)

# The event types a filter names (the adapter runtime routes by the same names:
# adapters/runtime/notify.py; a test holds the two to the same list).
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
# What a template may name (the runtime renders them: adapters.spec.Notification.fields)
PLACEHOLDERS = (
    "event_type",
    "qualified_name",
    "asset_id",
    "title",
    "severity",
    "status",
    "tags",
    "count",
    "url",
    "text",
    "actor",
)
STATUSES = ("queued", "delivered", "failed", "dead")
ASSET_TYPES = range(1, 9)  # lily.v1.AssetType, but UNSPECIFIED
SEVERITIES = range(0, 5)  # lily.v1.IssueSeverity
DEFAULT_ATTEMPTS = 8
MAX_ATTEMPTS = 50
MAX_PAGE = 500
MAX_PLATFORM_PAGE = 1000
MAX_REPLAY = 1000
UPDATABLE = frozenset(
    {"display_name", "filter", "template", "max_attempts", "paused", "integration_id"}
)
_ID = re.compile(r"^sub_[0-9a-f]{24}$")
_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


# (event id) -> (subject, event id, ChangeEvent bytes): policy/mapping.py's, given by the servicer
Encode = Callable[[str], tuple[str, str, bytes]]


@dataclass(frozen=True, slots=True)
class NoticeDraft:
    """An ad hoc notification about an asset, as a caller describes it."""

    kind: str
    title: str
    text: str = ""
    severity: int = 0
    url: str = ""


@dataclass(frozen=True, slots=True)
class SubscriptionDraft:
    """A subscription as a caller describes it."""

    integration_id: str = ""
    display_name: str = ""
    event_types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    asset_types: tuple[int, ...] = ()
    prefix: str = ""
    min_severity: int = 0
    template: str = ""
    paused: bool = False
    max_attempts: int = 0


def template_problems(template: str, where: str) -> list[FieldViolation]:
    """A template's placeholders must be names it knows, without formatting or indexing."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [FieldViolation(where, f"is not a template: {exc}")]
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            return [
                FieldViolation(
                    where, f"{{{name}}} is not a placeholder; use {', '.join(PLACEHOLDERS)}"
                )
            ]
    return []


def test_notification(d: DeliveryRecord, text: str) -> bytes:
    """The notification a test sends (adapters.spec.Notification, as JSON)."""
    return orjson.dumps(
        {
            "delivery_id": d.delivery_id,
            "tenant_id": d.tenant_id,
            "subscription_id": "",
            "integration_id": d.integration_id,
            "event_type": "test",
            "title": d.title,
            "text": text,
            "severity": "",
            "occurred_at": d.created_at.timestamp(),
            "test": True,
        }
    )


class Notifications:
    def __init__(
        self,
        store: NotificationStore,
        integrations: Integrations,
        outbound: Outbound | None,
        events: EventPublisher | None = None,
        *,
        system_tenant: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._integrations = integrations
        self._outbound = outbound
        self._events = events
        self._system = system_tenant
        self._now = now

    # -- subscriptions

    async def _check(
        self, principal: Principal, d: SubscriptionDraft, paths: frozenset[str] | None
    ) -> str:
        """Refuses a draft's problems (each field `paths` names, or all), naming the field;
        the destination's type."""
        problems: list[FieldViolation] = []

        def wanted(name: str) -> bool:
            return paths is None or name in paths

        destination = ""
        if wanted("integration_id"):
            if not d.integration_id:
                problems.append(FieldViolation("subscription.integration_id", "is required"))
            else:
                destination = await self._destination(
                    principal, d.integration_id, "subscription.integration_id", problems
                )
        if wanted("display_name"):
            check_text("subscription.display_name", d.display_name, 256, problems)
        if wanted("filter"):
            where = "subscription.filter"
            if not d.event_types:
                problems.append(
                    FieldViolation(f"{where}.event_types", "name at least one event type, or *")
                )
            for n, t in enumerate(d.event_types):
                if t != "*" and t not in EVENT_TYPES:
                    problems.append(
                        FieldViolation(
                            f"{where}.event_types[{n}]",
                            f"{t[:64]!r} is not an event type; use * or {', '.join(EVENT_TYPES)}",
                        )
                    )
            if len(d.tags) > 64:
                problems.append(FieldViolation(f"{where}.tags", "at most 64"))
            for n, tag in enumerate(d.tags):
                check_text(f"{where}.tags[{n}]", tag, 256, problems, required=True)
            for n, kind in enumerate(d.asset_types):
                if kind not in ASSET_TYPES:
                    problems.append(
                        FieldViolation(f"{where}.asset_types[{n}]", "is not an asset type")
                    )
            check_text(f"{where}.qualified_name_prefix", d.prefix, 2048, problems)
            if d.min_severity not in SEVERITIES:
                problems.append(FieldViolation(f"{where}.min_severity", "is not a severity"))
        if wanted("template"):
            check_text("subscription.template", d.template, 4000, problems)
            problems += template_problems(d.template, "subscription.template")
        if wanted("max_attempts") and not 0 <= d.max_attempts <= MAX_ATTEMPTS:
            problems.append(
                FieldViolation("subscription.max_attempts", f"must be between 0 and {MAX_ATTEMPTS}")
            )
        refuse(problems)
        return destination

    async def _destination(
        self,
        principal: Principal,
        integration_id: str,
        where: str,
        problems: list[FieldViolation],
    ) -> str:
        """The type of a destination of the tenant (else a problem of field `where`)."""
        try:
            i = await self._integrations.get(principal, integration_id)
        except NotFound:
            problems.append(FieldViolation(where, "no such integration in this tenant"))
            return ""
        kind = self._integrations.types.get(i.type)
        if kind is None or not kind.destination:
            takes = sorted(n for n, t in self._integrations.types.items() if t.destination)
            problems.append(
                FieldViolation(
                    where, f"a {i.type} integration takes no notifications ({', '.join(takes)} do)"
                )
            )
        return i.type

    async def _mine(self, principal: Principal, subscription_id: str) -> SubscriptionRecord:
        found = None
        if _ID.fullmatch(subscription_id):
            found = await self._store.subscription(principal.tenant_id, subscription_id)
        if found is None:
            raise NotFound(f"subscription {subscription_id[:64]!r} not found")
        return found

    async def create(self, principal: Principal, d: SubscriptionDraft) -> SubscriptionRecord:
        destination = await self._check(principal, d, None)
        now = self._now()
        record = SubscriptionRecord(
            subscription_id="sub_" + uuid.uuid4().hex[:24],
            tenant_id=principal.tenant_id,
            integration_id=d.integration_id,
            display_name=d.display_name,
            event_types=tuple(dict.fromkeys(d.event_types)),
            tags=tuple(dict.fromkeys(d.tags)),
            asset_types=tuple(dict.fromkeys(d.asset_types)),
            prefix=d.prefix,
            min_severity=d.min_severity,
            template=d.template,
            paused=d.paused,
            max_attempts=d.max_attempts or DEFAULT_ATTEMPTS,
            created_by=principal.subject,
            created_at=now,
            updated_at=now,
            destination_type=destination,
            paused_at=now if d.paused else None,
        )
        await self._store.create_subscription(record)
        log.info(
            "subscription created",
            extra={"subscription_id": record.subscription_id, "by": principal.subject},
        )
        return record

    async def get(self, principal: Principal, subscription_id: str) -> SubscriptionRecord:
        return await self._mine(principal, subscription_id)

    async def of_tenant(
        self, principal: Principal, integration_id: str, after: str, limit: int
    ) -> list[SubscriptionRecord]:
        limit = page_size(limit, MAX_PAGE)
        check_query(integration_id=(integration_id, 64), after_subscription_id=(after, 64))
        return await self._store.subscriptions(principal.tenant_id, integration_id, after, limit)

    async def update(
        self,
        principal: Principal,
        subscription_id: str,
        d: SubscriptionDraft,
        paths: Sequence[str],
    ) -> SubscriptionRecord:
        problems: list[FieldViolation] = []
        check_mask(paths, UPDATABLE, problems)
        refuse(problems)
        current = await self._mine(principal, subscription_id)
        destination = await self._check(principal, d, frozenset(paths))
        new = replace(current, updated_at=self._now())
        if "integration_id" in paths:
            new = replace(new, integration_id=d.integration_id, destination_type=destination)
        if "display_name" in paths:
            new = replace(new, display_name=d.display_name)
        if "filter" in paths:
            new = replace(
                new,
                event_types=tuple(dict.fromkeys(d.event_types)),
                tags=tuple(dict.fromkeys(d.tags)),
                asset_types=tuple(dict.fromkeys(d.asset_types)),
                prefix=d.prefix,
                min_severity=d.min_severity,
            )
        if "template" in paths:
            new = replace(new, template=d.template)
        if "max_attempts" in paths:
            new = replace(new, max_attempts=d.max_attempts or DEFAULT_ATTEMPTS)
        if "paused" in paths:
            new = _paused(new, d.paused)
        await self._save(new, current)
        return new

    async def _save(self, new: SubscriptionRecord, read: SubscriptionRecord) -> None:
        if not await self._store.update_subscription(new, read.updated_at):
            raise Aborted(
                f"subscription {read.subscription_id!r} was changed meanwhile; read it and try"
                " again"
            )

    async def pause(
        self, principal: Principal, subscription_id: str, paused: bool
    ) -> SubscriptionRecord:
        current = await self._mine(principal, subscription_id)
        new = _paused(replace(current, updated_at=self._now()), paused)
        await self._save(new, current)
        log.info(
            "subscription paused" if paused else "subscription resumed",
            extra={"subscription_id": subscription_id, "by": principal.subject},
        )
        return new

    async def delete(self, principal: Principal, subscription_id: str) -> None:
        current = await self._mine(principal, subscription_id)
        if not await self._store.delete_subscription(principal.tenant_id, current.subscription_id):
            raise NotFound(f"subscription {subscription_id!r} not found")

    # -- deliveries

    async def deliveries(
        self, principal: Principal, query: DeliveryQuery, page_token: str, limit: int
    ) -> tuple[list[DeliveryRecord], str]:
        limit = page_size(limit, MAX_PAGE)
        check_query(
            subscription_id=(query.subscription_id, 64),
            integration_id=(query.integration_id, 64),
            asset_id=(query.asset_id, 128),
            event_type=(query.event_type, 64),
        )
        if query.status and query.status not in STATUSES:
            raise InvalidArgument([FieldViolation("status", "is not a delivery status")])
        if page_token:
            query = replace(query, after=_cursor(page_token))
        found = await self._store.deliveries(principal.tenant_id, query, limit)
        token = ""
        if len(found) == limit:
            last = found[-1]
            token = base64.urlsafe_b64encode(
                orjson.dumps([last.created_at.isoformat(), last.delivery_id])
            ).decode()
        return found, token

    async def delivery(self, principal: Principal, delivery_id: str) -> DeliveryRecord:
        check_query(delivery_id=(delivery_id, 64))
        found = await self._store.delivery(principal.tenant_id, delivery_id)
        if found is None:
            raise NotFound(f"delivery {delivery_id!r} not found")
        return found

    def _outbox(self) -> Outbound:
        if self._outbound is None:
            raise FailedPrecondition("this server does not reach the adapter runtime's streams")
        return self._outbound

    async def _again(self, records: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
        """Sends each delivery again as its next generation, queued; the new records."""
        now = self._now()
        again = [
            replace(
                r,
                status="queued",
                generation=r.generation + 1,
                attempts=0,
                updated_at=now,
                next_attempt_at=None,
            )
            for r in records
            if r.notification
        ]
        # sent first: a record that says queued while nothing is is worse than a sent one
        # whose record still says dead for the moment (the runtime's next record says more)
        await self._outbox().send(again)
        for r in again:
            await self._store.requeue(r)
        return again

    async def retry(self, principal: Principal, delivery_id: str) -> DeliveryRecord:
        found = await self.delivery(principal, delivery_id)
        again = await self._again([found])
        if not again:
            raise FailedPrecondition(f"delivery {delivery_id!r} kept no notification to send")
        log.info("delivery retried", extra={"delivery_id": delivery_id, "by": principal.subject})
        return again[0]

    async def replay(
        self,
        principal: Principal,
        subscription_id: str,
        created_after: datetime | None,
        created_before: datetime | None,
    ) -> int:
        check_query(subscription_id=(subscription_id, 64))
        if not subscription_id and created_after is None and created_before is None:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "subscription_id",
                        "name a subscription, a time range (created_after,"
                        " created_before), or both",
                    )
                ]
            )
        dead = await self._store.dead_letters(
            principal.tenant_id, subscription_id, created_after, created_before, MAX_REPLAY
        )
        again = await self._again(dead)
        log.info(
            "dead letters replayed",
            extra={"replayed": len(again), "subscription_id": subscription_id},
        )
        return len(again)

    async def send_test(
        self, principal: Principal, integration_id: str, text: str
    ) -> DeliveryRecord:
        problems: list[FieldViolation] = []
        check_text("text", text, 4000, problems)
        destination = await self._destination(principal, integration_id, "integration_id", problems)
        refuse(problems)
        now = self._now()
        digest = hashlib.sha256(f"{integration_id}|{now.isoformat()}".encode()).hexdigest()
        record = DeliveryRecord(
            delivery_id="dlv_" + digest[:32],
            tenant_id=principal.tenant_id,
            subscription_id="",
            integration_id=integration_id,
            destination_type=destination,
            event_type="test",
            event_ids=(),
            event_count=0,
            asset_id="",
            qualified_name="",
            severity=0,
            title="A test notification from Lily",
            status="queued",
            attempts=0,
            generation=0,
            created_at=now,
            updated_at=now,
            test=True,
        )
        record = replace(
            record,
            notification=test_notification(record, text or f"Sent by {principal.subject}."),
        )
        await self._outbox().send([record])  # (first, as _again: see there)
        await self._store.record_deliveries([record])
        return record

    async def notify(self, principal: Principal, notice: NoticeDraft, encode: Encode) -> str:
        """Publishes an ad hoc notification about an asset (an asset.notice event); its id."""
        problems: list[FieldViolation] = []
        if not _KIND.fullmatch(notice.kind):
            problems.append(
                FieldViolation("kind", "is required: a lowercase word such as schema_drift")
            )
        check_text("title", notice.title, 500, problems, required=True)
        check_text("text", notice.text, 8000, problems)
        check_text("url", notice.url, 2048, problems)
        if notice.url and not notice.url.startswith(("https://", "http://")):
            problems.append(FieldViolation("url", "must be an http(s) URL"))
        if notice.severity not in SEVERITIES:
            problems.append(FieldViolation("severity", "is not a severity"))
        refuse(problems)
        if self._events is None:
            raise FailedPrecondition("this server does not publish events")
        event_id = "ntc_" + uuid.uuid4().hex
        await self._events.publish([encode(event_id)])
        log.info("notice published", extra={"event_id": event_id, "by": principal.subject})
        return event_id

    async def health(self, principal: Principal) -> list[HealthRecord]:
        return await self._store.health(principal.tenant_id)

    # -- the adapter runtime's

    def _platform_only(self, principal: Principal) -> None:
        if principal.tenant_id != self._system:
            raise PermissionDenied("only the adapter runtime of the platform routes notifications")

    async def of_platform(
        self, principal: Principal, after: str, limit: int
    ) -> list[SubscriptionRecord]:
        self._platform_only(principal)
        limit = page_size(limit, MAX_PLATFORM_PAGE, 500)
        check_query(after_subscription_id=(after, 64))
        return await self._store.subscriptions("", "", after, limit)

    async def record(
        self,
        principal: Principal,
        deliveries: Sequence[DeliveryRecord],
        destinations: Sequence[HealthRecord],
    ) -> int:
        self._platform_only(principal)
        problems: list[FieldViolation] = []
        if len(deliveries) > 1000 or len(destinations) > 1000:
            problems.append(FieldViolation("deliveries", "at most 1000 a call"))
        for n, d in enumerate(deliveries):
            where = f"deliveries[{n}]"
            for name, value, limit in (
                ("delivery_id", d.delivery_id, 64),
                ("tenant_id", d.tenant_id, 64),
                ("integration_id", d.integration_id, 64),
            ):
                check_text(f"{where}.{name}", value, limit, problems, required=True)
            check_text(f"{where}.title", d.title, 4000, problems)
            check_text(f"{where}.destination_message", d.destination_message, 4000, problems)
            if d.status not in STATUSES:
                problems.append(FieldViolation(f"{where}.status", "is required"))
        refuse(problems)
        kept = await self._store.record_deliveries(deliveries) if deliveries else 0
        if destinations:
            await self._store.record_health(destinations)
        return kept


def _paused(s: SubscriptionRecord, paused: bool) -> SubscriptionRecord:
    """`s` paused or resumed as of its updated_at (a pause begins a window, a resume ends it;
    pausing a paused one, or resuming a running one, changes nothing)."""
    if paused and not s.paused:
        return replace(s, paused=True, paused_at=s.updated_at, resumed_at=None)
    if not paused and s.paused:
        return replace(s, paused=False, resumed_at=s.updated_at)
    return s


def _cursor(token: str) -> tuple[datetime, str]:
    try:
        at, delivery_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(at), str(delivery_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidArgument([FieldViolation("page_token", "is not a page token")]) from None
