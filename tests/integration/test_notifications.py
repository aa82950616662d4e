"""Notifications (NotificationService and the adapter runtime's outbound half) against the
session's server and runtime, and local stand-ins for Slack (tests/fake_slack.py) and for a
Standard Webhooks receiver: subscriptions and their refusals, delivery records, a Slack
outage and its 429s, dead letters retried and replayed, bursts summarised, signed webhooks
across a secret's rotation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from lily.v1 import common_pb2 as common_pb
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import notification_pb2 as N
from lily.v1 import notification_pb2_grpc as notification_grpc
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.doubles import Served
from tests.fake_freshdesk import FakeFreshdesk
from tests.fake_jira import FakeJira
from tests.fake_slack import FakeSlack
from tests.helpers import Metadata, asset, eventually, status_of, violations

pytestmark = pytest.mark.usefixtures("inbound")


@pytest.fixture
def notifications(channel: grpc.aio.Channel) -> notification_grpc.NotificationServiceStub:
    return notification_grpc.NotificationServiceStub(channel)


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def _integration(
    channel: grpc.aio.Channel, md: Metadata, kind: str, settings: dict[str, Any], **secrets: str
) -> I.CreateIntegrationResponse:
    integration = I.Integration(type=kind, display_name=kind)
    integration.settings.update(settings)
    integration.secrets.update(secrets)
    return await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
        I.CreateIntegrationRequest(integration=integration), metadata=md, timeout=10
    )


async def _slack(channel, md, slack: FakeSlack, **settings: Any) -> str:
    made = await _integration(channel, md, "slack", settings, webhook_url=slack.url())
    return made.integration.integration_id


async def _subscribe(notifications, md, integration_id: str, **fields: Any) -> N.Subscription:
    event_types = fields.pop("event_types", ["asset.notice"])
    made = await notifications.CreateSubscription(
        N.CreateSubscriptionRequest(
            subscription=N.Subscription(
                integration_id=integration_id,
                filter=N.SubscriptionFilter(event_types=event_types, **fields.pop("filter", {})),
                **fields,
            )
        ),
        metadata=md,
        timeout=10,
    )
    await asyncio.sleep(0.6)  # the runtime reads subscriptions again within half a second
    return made.subscription


async def _table(stub, md: Metadata, qn: str) -> str:
    res = await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset(qn)]), metadata=md)
    return res.results[0].asset_id


async def _notify(notifications, md, asset_id: str, title: str, **fields: Any) -> str:
    sent = await notifications.Notify(
        N.NotifyRequest(asset_id=asset_id, kind="schema_drift", title=title, **fields),
        metadata=md,
        timeout=10,
    )
    return sent.event_id


async def _deliveries(notifications, md, **query: Any) -> list[N.NotificationDelivery]:
    got = await notifications.ListDeliveries(N.ListDeliveriesRequest(**query), metadata=md)
    return list(got.deliveries)


def _titles(slack: FakeSlack) -> list[str]:
    return [m["blocks"][0]["text"]["text"] for m in slack.received]


async def test_a_subscription_sends_a_notice_to_slack_as_block_kit_and_records_it(
    channel, notifications, md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    sub = await _subscribe(
        notifications,
        md,
        integration_id,
        template="{title} on {qualified_name} ({severity})",
        filter={"qualified_name_prefix": "pg://shop/"},
    )
    assert sub.subscription_id.startswith("sub_") and sub.destination_type == "slack"
    assert sub.max_attempts == 8
    orders = await _table(stub, md, "pg://shop/public/orders")
    elsewhere = await _table(stub, md, "pg://other/public/orders")
    await _notify(notifications, md, elsewhere, "not for this subscription")
    event_id = await _notify(
        notifications,
        md,
        orders,
        "Schema drift",
        severity=common_pb.ISSUE_SEVERITY_HIGH,
        url="https://scraper.example/runs/7",
    )

    async def delivered() -> list[N.NotificationDelivery]:
        found = await _deliveries(
            notifications, md, status=N.DELIVERY_STATUS_DELIVERED, asset_id=orders
        )
        assert found
        return found

    [d] = await eventually(delivered)
    assert d.subscription_id == sub.subscription_id and d.integration_id == integration_id
    assert d.event_type == "asset.notice" and list(d.event_ids) == [event_id]
    assert d.attempts == 1 and d.destination_status == 200 and d.destination_type == "slack"
    assert d.severity == common_pb.ISSUE_SEVERITY_HIGH and d.HasField("delivered_at")
    [message] = slack.received
    assert message["text"] == "Schema drift on pg://shop/public/orders (high)"
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds == ["header", "section", "context", "actions"]
    assert message["blocks"][3]["elements"][0]["url"] == "https://scraper.example/runs/7"
    # the record keeps the notification as sent
    got = await notifications.GetDelivery(
        N.GetDeliveryRequest(delivery_id=d.delivery_id), metadata=md
    )
    assert orjson.loads(got.delivery.notification)["title"] == "Schema drift"
    assert not (await _deliveries(notifications, md, asset_id=elsewhere))


async def test_a_bad_subscription_is_refused_naming_the_field(
    channel, notifications, md, http, slack
):
    integration_id = await _slack(channel, md, slack)
    cases = {
        "subscription.filter.event_types[1]": {
            "integration_id": integration_id,
            "filter": {"event_types": ["issue.opened", "issue.openned"]},
        },
        "subscription.filter.event_types": {"integration_id": integration_id, "filter": {}},
        "subscription.template": {
            "integration_id": integration_id,
            "filter": {"event_types": ["*"]},
            "template": "{title} {password}",
        },
        "subscription.max_attempts": {
            "integration_id": integration_id,
            "filter": {"event_types": ["*"]},
            "max_attempts": 51,
        },
        "subscription.integration_id": {
            "integration_id": "int_000000000000000000000000",
            "filter": {"event_types": ["*"]},
        },
        "subscription.filter.min_severity": {
            "integration_id": integration_id,
            "filter": {"event_types": ["*"], "min_severity": 9},
        },
    }
    for field, body in cases.items():
        bad = await http.post("/api/v1/subscriptions", json=body)
        assert bad.status_code == 400, (field, bad.text)
        assert field in bad.text, (field, bad.text)
    # an integration that takes no notifications
    mc = await _integration(channel, md, "monte_carlo", {"default_prefix": "snowflake://x"})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _subscribe(notifications, md, mc.integration.integration_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refused = violations(status_of(err.value))
    assert "takes no notifications" in refused["subscription.integration_id"]
    assert not (await http.get("/api/v1/subscriptions")).json().get("subscriptions")


async def test_subscriptions_are_listed_updated_paused_and_deleted(
    channel, notifications, md, other_md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    sub = await _subscribe(notifications, md, integration_id)
    listed = await notifications.ListSubscriptions(N.ListSubscriptionsRequest(), metadata=md)
    assert [s.subscription_id for s in listed.subscriptions] == [sub.subscription_id]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # another tenant does not see it
        await notifications.GetSubscription(
            N.GetSubscriptionRequest(subscription_id=sub.subscription_id), metadata=other_md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    changed = await notifications.UpdateSubscription(
        N.UpdateSubscriptionRequest(
            subscription_id=sub.subscription_id,
            subscription=N.Subscription(template="drift: {title}", max_attempts=3),
            update_mask=field_mask_pb2.FieldMask(paths=["template", "max_attempts"]),
        ),
        metadata=md,
    )
    assert changed.subscription.template == "drift: {title}"
    assert changed.subscription.max_attempts == 3
    assert list(changed.subscription.filter.event_types) == ["asset.notice"]  # untouched

    orders = await _table(stub, md, "pg://shop/public/orders")
    paused = await notifications.PauseSubscription(
        N.PauseSubscriptionRequest(subscription_id=sub.subscription_id, paused=True), metadata=md
    )
    assert paused.subscription.paused
    await asyncio.sleep(0.6)
    await _notify(notifications, md, orders, "while paused")
    await notifications.PauseSubscription(
        N.PauseSubscriptionRequest(subscription_id=sub.subscription_id, paused=False), metadata=md
    )
    await asyncio.sleep(0.6)
    await _notify(notifications, md, orders, "after")

    async def one() -> bool:
        assert [m["text"] for m in slack.received] == ["drift: after"]
        return True

    await eventually(one)
    await notifications.DeleteSubscription(
        N.DeleteSubscriptionRequest(subscription_id=sub.subscription_id), metadata=md
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await notifications.GetSubscription(
            N.GetSubscriptionRequest(subscription_id=sub.subscription_id), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
async def test_slack_down_for_30_seconds_gets_every_event_once_in_order(
    channel, notifications, md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    sub = await _subscribe(notifications, md, integration_id)
    orders = await _table(stub, md, "pg://shop/public/orders")
    slack.outage(30.0, status=503)
    started = time.monotonic()
    for n in range(6):
        await _notify(notifications, md, orders, f"event {n}")
        await asyncio.sleep(0.2)

    async def failing() -> bool:  # the record says why, and when it is tried next
        found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_FAILED)
        assert len(found) == 1, found
        assert found[0].destination_status == 503 and found[0].HasField("next_attempt_at")
        return True

    await eventually(failing)

    async def all_there() -> bool:
        assert len(slack.received) >= 6
        return True

    await eventually(all_there, timeout=120, interval=0.5)
    await asyncio.sleep(2.5)  # (nothing more comes)
    assert _titles(slack) == [f"event {n}" for n in range(6)]
    assert time.monotonic() - started >= 30
    assert all(status in (503, 200) for status, _ in slack.answered)
    gaps = [b["at"] - a["at"] for a, b in zip(slack.received, slack.received[1:], strict=False)]
    assert min(gaps) >= 0.85  # about one a second, as Slack takes them
    records = await _deliveries(notifications, md, subscription_id=sub.subscription_id)
    assert len(records) == 6
    assert all(r.status == N.DELIVERY_STATUS_DELIVERED for r in records)
    assert max(r.attempts for r in records) > 1
    health = await notifications.ListDestinationHealth(
        N.ListDestinationHealthRequest(), metadata=md
    )
    [h] = health.destinations
    assert h.integration_id == integration_id and h.healthy and h.consecutive_failures == 0


async def test_a_429_is_waited_out_as_long_as_retry_after_says(
    channel, notifications, md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    await _subscribe(notifications, md, integration_id)
    orders = await _table(stub, md, "pg://shop/public/orders")
    slack.throttle(times=2, retry_after=2)
    await _notify(notifications, md, orders, "throttled")

    async def delivered() -> bool:
        assert len(slack.received) == 1
        return True

    await eventually(delivered, timeout=20)
    assert [s for s, _ in slack.answered] == [429, 429, 200]
    (_, first), (_, second), (_, third) = slack.answered
    assert second - first >= 1.95 and third - second >= 1.95


async def test_a_refusal_is_a_dead_letter_at_once_and_is_retried_and_replayed(
    channel, notifications, md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    sub = await _subscribe(notifications, md, integration_id)
    orders = await _table(stub, md, "pg://shop/public/orders")
    slack.archived.add("T000/B000/hook1")
    for n in range(3):
        await _notify(notifications, md, orders, f"archived {n}")

    async def dead() -> list[N.NotificationDelivery]:
        found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DEAD)
        assert len(found) == 3
        return found

    found = await eventually(dead)
    assert all(d.attempts == 1 and d.destination_status == 410 for d in found)
    assert "channel_is_archived" in found[0].destination_message
    slack.archived.clear()
    newest = found[0]
    retried = await notifications.RetryDelivery(
        N.RetryDeliveryRequest(delivery_id=newest.delivery_id), metadata=md
    )
    assert retried.delivery.generation == 1
    assert retried.delivery.status == N.DELIVERY_STATUS_QUEUED

    async def one() -> bool:
        assert _titles(slack) == ["archived 2"]
        got = await notifications.GetDelivery(
            N.GetDeliveryRequest(delivery_id=newest.delivery_id), metadata=md
        )
        assert got.delivery.status == N.DELIVERY_STATUS_DELIVERED
        assert got.delivery.generation == 1 and got.delivery.attempts == 1
        return True

    await eventually(one)
    replayed = await notifications.ReplayDeadLetters(
        N.ReplayDeadLettersRequest(subscription_id=sub.subscription_id), metadata=md
    )
    assert replayed.replayed == 2

    async def all_three() -> bool:
        assert sorted(_titles(slack)) == ["archived 0", "archived 1", "archived 2"]
        assert not await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DEAD)
        return True

    await eventually(all_three, timeout=15)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # what to replay must be said
        await notifications.ReplayDeadLetters(N.ReplayDeadLettersRequest(), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_test_notification_goes_by_bot_token_with_chat_post_message(
    channel, notifications, md, slack
):
    made = await _integration(
        channel,
        md,
        "slack",
        {"channel": "C0LILY", "api_url": slack.api_url},
        bot_token="xoxb-test-token",
    )
    integration_id = made.integration.integration_id
    sent = await notifications.SendTestNotification(
        N.SendTestNotificationRequest(integration_id=integration_id, text="hello from the test"),
        metadata=md,
    )
    assert sent.delivery.test and sent.delivery.status == N.DELIVERY_STATUS_QUEUED

    async def delivered() -> N.NotificationDelivery:
        got = await notifications.GetDelivery(
            N.GetDeliveryRequest(delivery_id=sent.delivery.delivery_id), metadata=md
        )
        assert got.delivery.status == N.DELIVERY_STATUS_DELIVERED
        return got.delivery

    d = await eventually(delivered)
    [message] = slack.received
    assert message["via"] == "C0LILY" and message["text"] == "hello from the test"
    assert d.external_ref == message["ts"]  # the message's ts, as Slack answered it
    # a wrong token is Slack's invalid_auth: dead at once, the record says so
    await integration_grpc.IntegrationServiceStub(channel).UpdateIntegration(
        I.UpdateIntegrationRequest(
            integration_id=integration_id,
            integration=I.Integration(secrets={"bot_token": "xoxb-wrong"}),
            update_mask=field_mask_pb2.FieldMask(paths=["secrets"]),
        ),
        metadata=md,
    )
    await asyncio.sleep(5.5)  # (the runtime keeps a resolved integration 5 s)
    again = await notifications.SendTestNotification(
        N.SendTestNotificationRequest(integration_id=integration_id), metadata=md
    )

    async def dead() -> bool:
        got = await notifications.GetDelivery(
            N.GetDeliveryRequest(delivery_id=again.delivery.delivery_id), metadata=md
        )
        assert got.delivery.status == N.DELIVERY_STATUS_DEAD
        assert "invalid_auth" in got.delivery.destination_message
        return True

    await eventually(dead)


async def test_an_incident_on_1000_downstream_assets_is_one_slack_message(
    channel, notifications, md, stub, slack
):
    integration_id = await _slack(channel, md, slack)
    await _subscribe(
        notifications,
        md,
        integration_id,
        event_types=["asset.unhealthy"],
        template="{count} unhealthy, the worst {qualified_name}",
    )
    root = await _table(stub, md, "pg://dq/root")
    names = [f"pg://dq/down_{n:04d}" for n in range(1000)]
    for start in range(0, 1000, 250):
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset(q) for q in names[start : start + 250]]),
            metadata=md,
        )
    edges = [
        L.RelationshipInput(
            upstream=L.AssetRef(qualified_name="pg://dq/root"),
            downstream=L.AssetRef(qualified_name=q),
        )
        for q in names
    ]
    for start in range(0, 1000, 250):
        await lineage_grpc.LineageServiceStub(channel).IngestRelationships(
            L.IngestRelationshipsRequest(relationships=edges[start : start + 250]), metadata=md
        )
    await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=root,
            issue=common_pb.DataQualityIssue(
                source="monte_carlo",
                external_id="inc-1",
                type="freshness",
                title="Stale",
                severity=common_pb.ISSUE_SEVERITY_HIGH,
                status=common_pb.ISSUE_STATUS_OPEN,
            ),
        ),
        metadata=md,
    )

    async def summarised() -> bool:
        assert slack.received
        assert sum(int(m["text"].split()[0]) for m in slack.received) == 1000
        return True

    await eventually(summarised, timeout=90, interval=0.5)
    await asyncio.sleep(3)  # (nothing more comes)
    assert len(slack.received) == 1, [m["text"] for m in slack.received]
    [message] = slack.received
    assert message["text"].startswith("1000 unhealthy, the worst pg://dq/down_")
    listed = message["blocks"][2]["text"]["text"]
    assert listed.count("•") == 10 and "990 more" in listed
    [d] = await _deliveries(notifications, md, event_type="asset.unhealthy")
    assert d.event_count == 1000 and d.status == N.DELIVERY_STATUS_DELIVERED


class Receiver(Served):
    """A Standard Webhooks receiver, verifying each message with the standardwebhooks
    library and the secrets it was given (as a receiver would, with the library)."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.refused = 0

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hooks", self._take, methods=["POST"])])

    async def _take(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            self.got.append((headers, payload))
            return PlainTextResponse("", status_code=204)
        self.refused += 1
        return PlainTextResponse("bad signature", status_code=401)


async def test_signed_webhooks_verify_with_the_new_and_the_old_secret_while_rotating(
    channel, notifications, md, stub
):
    async with Receiver() as receiver:
        made = await _integration(channel, md, "webhook", {"url": f"{receiver.base}/hooks"})
        integration_id = made.integration.integration_id
        assert made.webhook_secret.startswith("whsec_")
        receiver.secrets = [made.webhook_secret]
        await _subscribe(notifications, md, integration_id)
        orders = await _table(stub, md, "pg://shop/public/orders")
        await _notify(notifications, md, orders, "before")

        async def got(n: int) -> bool:
            assert len(receiver.got) == n and not receiver.refused
            return True

        await eventually(lambda: got(1))
        headers, payload = receiver.got[0]
        assert payload["type"] == "lily.asset.notice" and payload["data"]["title"] == "before"
        assert headers["webhook-id"] == payload["data"]["delivery_id"]
        # rotation: for its grace, each message is signed with both secrets
        rotated = await integration_grpc.IntegrationServiceStub(channel).RotateIntegrationSecret(
            I.RotateIntegrationSecretRequest(integration_id=integration_id, grace_seconds=3600),
            metadata=md,
        )
        await asyncio.sleep(5.5)  # (the runtime keeps a resolved integration 5 s)
        await _notify(notifications, md, orders, "during")
        await eventually(lambda: got(2))
        assert len(receiver.got[1][0]["webhook-signature"].split(" ")) == 2
        receiver.secrets = [rotated.webhook_secret]  # the receiver moved to the new one
        await _notify(notifications, md, orders, "after")
        await eventually(lambda: got(3))
        # a receiver that refuses: 401 is given up at once, and the record says so
        receiver.secrets = []
        await _notify(notifications, md, orders, "refused")

        async def dead() -> bool:
            found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DEAD)
            assert len(found) == 1 and found[0].destination_status == 401, found
            return True

        await eventually(dead)


async def test_the_gateway_serves_notifications_over_rest(channel, md, http, slack, stub):
    integration_id = await _slack(channel, md, slack)
    made = await http.post(
        "/api/v1/subscriptions",
        json={"integration_id": integration_id, "filter": {"event_types": ["asset.notice"]}},
    )
    assert made.status_code == 200, made.text
    await asyncio.sleep(0.6)
    orders = await _table(stub, md, "pg://shop/public/orders")
    sent = await http.post(
        f"/api/v1/assets/{orders}:notify", json={"kind": "schema_drift", "title": "over REST"}
    )
    assert sent.status_code == 200, sent.text

    async def listed() -> httpx.Response:
        got = await http.get(
            "/api/v1/notifications/deliveries", params={"status": "DELIVERY_STATUS_DELIVERED"}
        )
        assert got.status_code == 200 and got.json().get("deliveries"), got.text
        return got

    got = await eventually(listed)
    assert got.json()["deliveries"][0]["title"] == "over REST"
    bad = await http.post(
        f"/api/v1/assets/{orders}:notify", json={"kind": "Bad Kind", "title": "x"}
    )
    assert bad.status_code == 400 and "kind" in bad.text


# -- JIRA Cloud


@pytest_asyncio.fixture
async def jira() -> AsyncIterator[FakeJira]:
    async with FakeJira() as fake:
        yield fake


async def _jira(channel, md, jira: FakeJira, inbound: str, **settings: Any) -> str:
    made = await _integration(
        channel,
        md,
        "jira",
        {"site_url": jira.base, "project_key": "DQ", **settings},
        email=jira.email,
        api_token=jira.api_token,
    )
    jira.webhooks.append((inbound + made.integration.webhook_path, made.webhook_secret))
    return made.integration.integration_id


async def _incident(
    stub, md, asset_id: str, status: int, **fields: Any
) -> common_pb.DataQualityIssue:
    got = await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=asset_id,
            issue=common_pb.DataQualityIssue(
                source="monte_carlo",
                external_id=fields.pop("external_id", "inc-42"),
                type="freshness",
                title=fields.pop("title", "Orders are stale"),
                severity=fields.pop("severity", common_pb.ISSUE_SEVERITY_HIGH),
                status=status,
                **fields,
            ),
        ),
        metadata=md,
    )
    return got.issue


async def _issue_status(stub, md, asset_id: str) -> int:
    listed = await stub.ListIssues(O.ListIssuesRequest(asset_id=asset_id), metadata=md)
    return listed.issues[0].status


ISSUE_EVENTS = ["issue.opened", "issue.updated", "issue.resolved"]


async def test_an_incident_is_one_jira_ticket_its_updates_comments_and_done_closes_the_loop(
    channel, notifications, md, stub, jira, inbound
):
    integration_id = await _jira(channel, md, jira, inbound)
    await _subscribe(notifications, md, integration_id, event_types=ISSUE_EVENTS)
    orders = await _table(stub, md, "pg://shop/public/orders")
    issue = await _incident(stub, md, orders, common_pb.ISSUE_STATUS_OPEN)

    async def ticketed() -> dict[str, Any]:
        assert len(jira.issues) == 1
        return next(iter(jira.issues.values()))

    ticket = await eventually(ticketed)
    f = ticket["fields"]
    assert f["summary"] == "Issue opened on pg://shop/public/orders: Orders are stale"
    assert f["priority"] == {"name": "High"} and f["issuetype"] == {"name": "Bug"}
    assert f["labels"] == ["lily", f"lily-{issue.issue_id}"]
    assert f["description"]["type"] == "doc"
    key = ticket["key"]

    await _incident(stub, md, orders, common_pb.ISSUE_STATUS_ACKNOWLEDGED)

    async def commented() -> bool:
        assert len(jira.comments.get(key, [])) == 1
        return True

    await eventually(commented)
    await _incident(stub, md, orders, common_pb.ISSUE_STATUS_RESOLVED)

    async def done() -> bool:
        assert jira.issues[key]["status"] == "Done"
        return True

    await eventually(done)

    async def told() -> bool:  # JIRA tells Lily of the move Lily made: it was resolved already
        assert jira.sent and set(jira.sent) == {200}
        return True

    await eventually(told)
    # a person reopens the ticket in JIRA: the Lily issue opens again
    await jira.move(key, "To Do")

    async def reopened() -> bool:
        assert await _issue_status(stub, md, orders) == common_pb.ISSUE_STATUS_OPEN
        return True

    await eventually(reopened)
    await jira.move(key, "Done")

    async def resolved() -> bool:
        assert await _issue_status(stub, md, orders) == common_pb.ISSUE_STATUS_RESOLVED
        return True

    await eventually(resolved)
    await asyncio.sleep(2)  # (whatever those moves sent back has come)
    assert jira.creates == 1 and len(jira.issues) == 1
    records = await _deliveries(notifications, md, integration_id=integration_id)
    assert {r.external_ref for r in records if r.status == N.DELIVERY_STATUS_DELIVERED} == {key}
    # a webhook not signed with the integration's secret is refused at the door
    async with httpx.AsyncClient() as client:
        forged = await client.post(
            jira.webhooks[0][0], content=b"{}", headers={"x-hub-signature": "sha256=00"}
        )
    assert forged.status_code == 403


async def test_jira_restarting_mid_incident_still_makes_one_ticket(
    channel, notifications, md, stub, jira, inbound
):
    integration_id = await _jira(channel, md, jira, inbound)
    await _subscribe(notifications, md, integration_id, event_types=ISSUE_EVENTS)
    orders = await _table(stub, md, "pg://shop/public/orders")
    jira.crash_on_create = True  # the ticket is made, and JIRA is gone before it answers
    jira.down = 2.0
    await _incident(stub, md, orders, common_pb.ISSUE_STATUS_OPEN)

    async def delivered() -> N.NotificationDelivery:
        found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DELIVERED)
        assert len(found) == 1
        return found[0]

    d = await eventually(delivered, timeout=60)
    assert d.attempts >= 2 and d.external_ref == "DQ-1"
    assert jira.creates == 1 and list(jira.issues) == ["DQ-1"]
    # and again, while it is resolved: one ticket, moved to done
    jira.fail(503, times=2)
    await _incident(stub, md, orders, common_pb.ISSUE_STATUS_RESOLVED)

    async def done() -> bool:
        assert jira.issues["DQ-1"]["status"] == "Done"
        return True

    await eventually(done, timeout=30)
    assert jira.creates == 1 and len(jira.comments["DQ-1"]) == 1


async def test_a_ticket_jira_refuses_is_a_dead_letter_naming_the_field(
    channel, notifications, md, stub, jira, inbound
):
    integration_id = await _jira(
        channel, md, jira, inbound, priorities={"high": "Urgent"}, issue_type="Bug"
    )
    await _subscribe(notifications, md, integration_id, event_types=ISSUE_EVENTS)
    orders = await _table(stub, md, "pg://shop/public/orders")
    await _incident(stub, md, orders, common_pb.ISSUE_STATUS_OPEN)

    async def dead() -> N.NotificationDelivery:
        found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DEAD)
        assert len(found) == 1
        return found[0]

    d = await eventually(dead)
    assert d.destination_status == 400 and "priority" in d.destination_message
    assert d.attempts == 1 and not jira.issues


# -- Freshdesk and Teams


async def test_an_incident_is_one_freshdesk_ticket_noted_and_resolved_through_429s(
    channel, notifications, md, stub
):
    async with FakeFreshdesk() as desk:
        made = await _integration(
            channel,
            md,
            "freshdesk",
            {"domain_url": desk.base, "requester_email": "dq@example.com"},
            api_key=desk.api_key,
        )
        integration_id = made.integration.integration_id
        await _subscribe(notifications, md, integration_id, event_types=ISSUE_EVENTS)
        orders = await _table(stub, md, "pg://shop/public/orders")
        desk.fail(429, times=1, **{"Retry-After": "1"})
        await _incident(stub, md, orders, common_pb.ISSUE_STATUS_OPEN)

        async def ticketed() -> dict[str, Any]:
            assert len(desk.tickets) == 1
            return desk.tickets[1]

        ticket = await eventually(ticketed)
        assert ticket["priority"] == 3 and ticket["status"] == 2  # high; open
        assert ticket["email"] == "dq@example.com" and ticket["tags"][0] == "lily"
        assert "pg://shop/public/orders" in ticket["description"]
        await _incident(stub, md, orders, common_pb.ISSUE_STATUS_ACKNOWLEDGED)
        desk.fail(503, times=2)
        await _incident(stub, md, orders, common_pb.ISSUE_STATUS_RESOLVED)

        async def resolved() -> bool:
            assert desk.tickets[1]["status"] == 4
            return True

        await eventually(resolved, timeout=30)
        assert desk.creates == 1 and len(desk.notes[1]) == 2
        assert all(n["private"] for n in desk.notes[1])

        async def recorded() -> bool:
            records = await _deliveries(notifications, md, integration_id=integration_id)
            assert len(records) == 3 and {r.external_ref for r in records} == {"1"}
            return True

        await eventually(recorded)


class Workflow(Served):
    """A Teams Workflows webhook trigger: takes a message whose attachments hold an Adaptive
    Card (202 Accepted), refuses anything else (400), as the trigger's schema does."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        path = "/workflows/{flow}/triggers/manual/paths/invoke"
        return Starlette(routes=[Route(path, self._take, methods=["POST"])])

    async def _take(self, request: Request) -> Response:
        if request.query_params.get("sig") != "s3cret":
            return PlainTextResponse("DirectApiAuthorizationRequired", status_code=401)
        body = orjson.loads(await request.body())
        attachments = body.get("attachments") or []
        card = attachments[0].get("content", {}) if attachments else {}
        if (
            body.get("type") != "message"
            or attachments[0].get("contentType") != "application/vnd.microsoft.card.adaptive"
            or card.get("type") != "AdaptiveCard"
            or not card.get("body")
        ):
            return PlainTextResponse("InvalidRequestContent", status_code=400)
        self.got.append(card)
        return PlainTextResponse("", status_code=202)


async def test_teams_gets_an_adaptive_card_through_a_workflows_webhook(
    channel, notifications, md, stub
):
    async with Workflow() as flow:
        url = f"{flow.base}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=s3cret"
        made = await _integration(channel, md, "teams", {}, workflow_url=url)
        await _subscribe(notifications, md, made.integration.integration_id)
        orders = await _table(stub, md, "pg://shop/public/orders")
        await _notify(notifications, md, orders, "Schema drift", url="https://scraper/run/1")

        async def carded() -> bool:
            assert len(flow.got) == 1
            return True

        await eventually(carded)
        card = flow.got[0]
        assert card["version"] == "1.4" and card["body"][0]["text"] == "Schema drift"
        assert card["actions"][0]["url"] == "https://scraper/run/1"

        async def recorded() -> bool:
            found = await _deliveries(notifications, md, status=N.DELIVERY_STATUS_DELIVERED)
            assert len(found) == 1 and found[0].destination_status == 202, found
            return True

        await eventually(recorded)
