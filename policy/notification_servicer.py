"""NotificationService (notification.proto) over policy/notifications.py, with its messages'
conversions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import notification_pb2 as notification_pb
from lily.v1 import notification_pb2_grpc as notification_grpc

from core.domain.errors import FieldViolation, InvalidArgument
from core.domain.model import Asset
from core.domain.rules import effective_tag_names
from core.metadata.service import MetadataService
from core.wire.common import ts_pb
from core.wire.context import principal_of
from core.wire.validation import optional_timestamp, refuse, require_id
from policy.mapping import required
from policy.model import DeliveryRecord, HealthRecord, SubscriptionRecord
from policy.notifications import Encode, NoticeDraft, Notifications, SubscriptionDraft
from policy.ports import DeliveryQuery

STATUSES = {
    notification_pb.DELIVERY_STATUS_QUEUED: "queued",
    notification_pb.DELIVERY_STATUS_DELIVERED: "delivered",
    notification_pb.DELIVERY_STATUS_FAILED: "failed",
    notification_pb.DELIVERY_STATUS_DEAD: "dead",
}
_STATUSES_PB = {name: number for number, name in STATUSES.items()}


def _at(ts: Timestamp, given: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if given else None


def _set_times(pb: Message, **times: datetime | None) -> None:
    """Sets each Timestamp field given a time (an unset one stays unset)."""
    for name, value in times.items():
        if (at := ts_pb(value)) is not None:
            getattr(pb, name).CopyFrom(at)


def _range(
    request: notification_pb.ListDeliveriesRequest | notification_pb.ReplayDeadLettersRequest,
) -> tuple[datetime | None, datetime | None]:
    """A request's created_after and created_before (None: unset); refused if out of range."""
    problems: list[FieldViolation] = []
    after = optional_timestamp("created_after", request.created_after, problems)
    before = optional_timestamp("created_before", request.created_before, problems)
    refuse(problems)
    return after, before


def subscription_pb(s: SubscriptionRecord) -> notification_pb.Subscription:
    pb = notification_pb.Subscription(
        subscription_id=s.subscription_id,
        tenant_id=s.tenant_id,
        display_name=s.display_name,
        integration_id=s.integration_id,
        filter=notification_pb.SubscriptionFilter(
            event_types=list(s.event_types),
            tags=list(s.tags),
            asset_types=[common_pb.AssetType.ValueType(t) for t in s.asset_types],
            qualified_name_prefix=s.prefix,
            min_severity=common_pb.IssueSeverity.ValueType(s.min_severity),
        ),
        template=s.template,
        paused=s.paused,
        max_attempts=s.max_attempts,
        created_by=s.created_by,
        created_at=ts_pb(s.created_at),
        updated_at=ts_pb(s.updated_at),
        destination_type=s.destination_type,
    )
    _set_times(pb, paused_at=s.paused_at, resumed_at=s.resumed_at)
    return pb


def subscription_draft(pb: notification_pb.Subscription) -> SubscriptionDraft:
    f = pb.filter
    return SubscriptionDraft(
        integration_id=pb.integration_id,
        display_name=pb.display_name,
        event_types=tuple(f.event_types),
        tags=tuple(f.tags),
        asset_types=tuple(int(t) for t in f.asset_types),
        prefix=f.qualified_name_prefix,
        min_severity=int(f.min_severity),
        template=pb.template,
        paused=pb.paused,
        max_attempts=pb.max_attempts,
    )


def delivery_pb(d: DeliveryRecord, *, whole: bool = False) -> notification_pb.NotificationDelivery:
    pb = notification_pb.NotificationDelivery(
        delivery_id=d.delivery_id,
        tenant_id=d.tenant_id,
        subscription_id=d.subscription_id,
        integration_id=d.integration_id,
        destination_type=d.destination_type,
        event_type=d.event_type,
        event_ids=list(d.event_ids[:100]),
        event_count=d.event_count,
        asset_id=d.asset_id,
        qualified_name=d.qualified_name,
        severity=common_pb.IssueSeverity.ValueType(d.severity),
        title=d.title,
        status=_STATUSES_PB.get(d.status, notification_pb.DELIVERY_STATUS_UNSPECIFIED),
        attempts=d.attempts,
        generation=d.generation,
        created_at=ts_pb(d.created_at),
        updated_at=ts_pb(d.updated_at),
        destination_status=d.destination_status,
        destination_message=d.destination_message,
        external_ref=d.external_ref,
        test=d.test,
        notification=d.notification if whole else b"",
    )
    _set_times(
        pb,
        last_attempt_at=d.last_attempt_at,
        next_attempt_at=d.next_attempt_at,
        delivered_at=d.delivered_at,
    )
    return pb


def delivery_from_pb(pb: notification_pb.NotificationDelivery) -> DeliveryRecord:
    return DeliveryRecord(
        delivery_id=pb.delivery_id,
        tenant_id=pb.tenant_id,
        subscription_id=pb.subscription_id,
        integration_id=pb.integration_id,
        destination_type=pb.destination_type,
        event_type=pb.event_type,
        event_ids=tuple(pb.event_ids[:100]),
        event_count=pb.event_count,
        asset_id=pb.asset_id,
        qualified_name=pb.qualified_name,
        severity=int(pb.severity),
        title=pb.title,
        status=STATUSES.get(pb.status, ""),
        attempts=pb.attempts,
        generation=pb.generation,
        created_at=pb.created_at.ToDatetime(tzinfo=UTC),
        updated_at=pb.updated_at.ToDatetime(tzinfo=UTC),
        last_attempt_at=_at(pb.last_attempt_at, pb.HasField("last_attempt_at")),
        next_attempt_at=_at(pb.next_attempt_at, pb.HasField("next_attempt_at")),
        delivered_at=_at(pb.delivered_at, pb.HasField("delivered_at")),
        destination_status=pb.destination_status,
        destination_message=pb.destination_message,
        external_ref=pb.external_ref,
        test=pb.test,
        notification=pb.notification,
    )


def health_pb(h: HealthRecord) -> notification_pb.DestinationHealth:
    pb = notification_pb.DestinationHealth(
        integration_id=h.integration_id,
        tenant_id=h.tenant_id,
        healthy=h.healthy,
        consecutive_failures=h.consecutive_failures,
        last_error=h.last_error,
        updated_at=ts_pb(h.updated_at),
    )
    _set_times(pb, unhealthy_since=h.unhealthy_since, last_success_at=h.last_success_at)
    return pb


def health_from_pb(pb: notification_pb.DestinationHealth) -> HealthRecord:
    return HealthRecord(
        integration_id=pb.integration_id,
        tenant_id=pb.tenant_id,
        healthy=pb.healthy,
        consecutive_failures=pb.consecutive_failures,
        last_error=pb.last_error[:4000],
        updated_at=pb.updated_at.ToDatetime(tzinfo=UTC),
        unhealthy_since=_at(pb.unhealthy_since, pb.HasField("unhealthy_since")),
        last_success_at=_at(pb.last_success_at, pb.HasField("last_success_at")),
    )


def notice_event(asset: Asset, notice: NoticeDraft, actor: str) -> Encode:
    """The asset.notice event of a Notify, given its id."""

    def encode(event_id: str) -> tuple[str, str, bytes]:
        event = events_pb.ChangeEvent(
            event_id=event_id,
            tenant_id=asset.tenant_id,
            entity=events_pb.ENTITY_KIND_NOTICE,
            change=events_pb.CHANGE_KIND_CREATED,
            asset_id=asset.asset_id,
            qualified_name=asset.qualified_name,
            asset_type=common_pb.AssetType.ValueType(int(asset.asset_type)),
            asset_version=asset.version,
            actor=actor,
            occurred_at=ts_pb(datetime.now(UTC)),
            tags=list(effective_tag_names(asset.tags)),
            notice=events_pb.Notice(
                kind=notice.kind,
                title=notice.title,
                text=notice.text,
                severity=common_pb.IssueSeverity.ValueType(notice.severity),
                url=notice.url,
            ),
        )
        return f"lily.{asset.tenant_id}.notice.created", event_id, event.SerializeToString()

    return encode


class NotificationServicer(notification_grpc.NotificationServiceServicer):
    def __init__(
        self, notifications: Notifications, metadata: Callable[[], MetadataService]
    ) -> None:
        self._notifications = notifications
        self._metadata = metadata  # of the cell the call was routed to (core.cells)

    async def CreateSubscription(
        self,
        request: notification_pb.CreateSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.CreateSubscriptionResponse:
        required(request, "subscription")
        made = await self._notifications.create(
            principal_of(context), subscription_draft(request.subscription)
        )
        return notification_pb.CreateSubscriptionResponse(subscription=subscription_pb(made))

    async def GetSubscription(
        self, request: notification_pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> notification_pb.GetSubscriptionResponse:
        required(request, "subscription_id")
        found = await self._notifications.get(principal_of(context), request.subscription_id)
        return notification_pb.GetSubscriptionResponse(subscription=subscription_pb(found))

    async def ListSubscriptions(
        self,
        request: notification_pb.ListSubscriptionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.ListSubscriptionsResponse:
        found = await self._notifications.of_tenant(
            principal_of(context),
            request.integration_id,
            request.after_subscription_id,
            request.page_size,
        )
        return notification_pb.ListSubscriptionsResponse(
            subscriptions=[subscription_pb(s) for s in found]
        )

    async def UpdateSubscription(
        self,
        request: notification_pb.UpdateSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.UpdateSubscriptionResponse:
        required(request, "subscription_id", "subscription")
        changed = await self._notifications.update(
            principal_of(context),
            request.subscription_id,
            subscription_draft(request.subscription),
            list(request.update_mask.paths),
        )
        return notification_pb.UpdateSubscriptionResponse(subscription=subscription_pb(changed))

    async def PauseSubscription(
        self,
        request: notification_pb.PauseSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.PauseSubscriptionResponse:
        required(request, "subscription_id")
        changed = await self._notifications.pause(
            principal_of(context), request.subscription_id, request.paused
        )
        return notification_pb.PauseSubscriptionResponse(subscription=subscription_pb(changed))

    async def DeleteSubscription(
        self,
        request: notification_pb.DeleteSubscriptionRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.DeleteSubscriptionResponse:
        required(request, "subscription_id")
        await self._notifications.delete(principal_of(context), request.subscription_id)
        return notification_pb.DeleteSubscriptionResponse()

    async def ListDeliveries(
        self, request: notification_pb.ListDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> notification_pb.ListDeliveriesResponse:
        if request.status and request.status not in STATUSES:
            raise InvalidArgument([FieldViolation("status", "is not a DeliveryStatus")])
        after, before = _range(request)
        query = DeliveryQuery(
            subscription_id=request.subscription_id,
            integration_id=request.integration_id,
            status=STATUSES.get(request.status, ""),
            asset_id=request.asset_id,
            event_type=request.event_type,
            created_after=after,
            created_before=before,
        )
        found, token = await self._notifications.deliveries(
            principal_of(context), query, request.page_token, request.page_size
        )
        return notification_pb.ListDeliveriesResponse(
            deliveries=[delivery_pb(d) for d in found], next_page_token=token
        )

    async def GetDelivery(
        self, request: notification_pb.GetDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> notification_pb.GetDeliveryResponse:
        required(request, "delivery_id")
        found = await self._notifications.delivery(principal_of(context), request.delivery_id)
        return notification_pb.GetDeliveryResponse(delivery=delivery_pb(found, whole=True))

    async def RetryDelivery(
        self, request: notification_pb.RetryDeliveryRequest, context: grpc.aio.ServicerContext
    ) -> notification_pb.RetryDeliveryResponse:
        required(request, "delivery_id")
        again = await self._notifications.retry(principal_of(context), request.delivery_id)
        return notification_pb.RetryDeliveryResponse(delivery=delivery_pb(again))

    async def ReplayDeadLetters(
        self,
        request: notification_pb.ReplayDeadLettersRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.ReplayDeadLettersResponse:
        after, before = _range(request)
        replayed = await self._notifications.replay(
            principal_of(context), request.subscription_id, after, before
        )
        return notification_pb.ReplayDeadLettersResponse(replayed=replayed)

    async def SendTestNotification(
        self,
        request: notification_pb.SendTestNotificationRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.SendTestNotificationResponse:
        required(request, "integration_id")
        sent = await self._notifications.send_test(
            principal_of(context), request.integration_id, request.text
        )
        return notification_pb.SendTestNotificationResponse(delivery=delivery_pb(sent))

    async def Notify(
        self, request: notification_pb.NotifyRequest, context: grpc.aio.ServicerContext
    ) -> notification_pb.NotifyResponse:
        principal = principal_of(context)
        require_id("asset_id", request.asset_id)
        notice = NoticeDraft(
            kind=request.kind,
            title=request.title,
            text=request.text,
            severity=int(request.severity),
            url=request.url,
        )
        asset = await self._metadata().get(principal.tenant_id, request.asset_id)
        event_id = await self._notifications.notify(
            principal, notice, notice_event(asset, notice, principal.subject)
        )
        return notification_pb.NotifyResponse(event_id=event_id)

    async def ListDestinationHealth(
        self,
        request: notification_pb.ListDestinationHealthRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.ListDestinationHealthResponse:
        found = await self._notifications.health(principal_of(context))
        return notification_pb.ListDestinationHealthResponse(
            destinations=[health_pb(h) for h in found]
        )

    async def ListPlatformSubscriptions(
        self,
        request: notification_pb.ListPlatformSubscriptionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.ListPlatformSubscriptionsResponse:
        found = await self._notifications.of_platform(
            principal_of(context), request.after_subscription_id, request.page_size
        )
        return notification_pb.ListPlatformSubscriptionsResponse(
            subscriptions=[subscription_pb(s) for s in found]
        )

    async def RecordDeliveries(
        self,
        request: notification_pb.RecordDeliveriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> notification_pb.RecordDeliveriesResponse:
        recorded = await self._notifications.record(
            principal_of(context),
            [delivery_from_pb(d) for d in request.deliveries],
            [health_from_pb(h) for h in request.destinations],
        )
        return notification_pb.RecordDeliveriesResponse(recorded=recorded)
