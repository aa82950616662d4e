"""The outbound half's pure parts: routing (event types, filters, bursts), rendering, the
back-off, how answers are classed, Slack's Block Kit and Standard Webhooks' signatures; and
the contract between the policy service and the adapter runtime (the same event types,
placeholders and stream)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import notification_pb2 as notification_pb
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.runtime import notify, outbox, send
from adapters.slack.mapping import message
from adapters.spec import Notification, send_failed
from adapters.webhook.sink import body_of, signed
from policy import notifications
from policy.model import DeliveryRecord
from policy.stores import outbound_nats
from tests.fake_slack import block_problem


def _event(**fields) -> events_pb.ChangeEvent:
    fields.setdefault("event_id", "e1")
    fields.setdefault("tenant_id", "acme")
    fields.setdefault("asset_id", "a1")
    fields.setdefault("qualified_name", "pg://shop/public/orders")
    fields.setdefault("asset_type", common_pb.ASSET_TYPE_TABLE)
    return events_pb.ChangeEvent(**fields)


def _pb(*types: str, **fields) -> notification_pb.Subscription:
    return notification_pb.Subscription(
        subscription_id="sub_1",
        tenant_id="acme",
        integration_id="int_1",
        filter=notification_pb.SubscriptionFilter(event_types=list(types), **fields),
        max_attempts=5,
    )


def _subscription(*types: str, **fields) -> notify.Route:
    return notify.Route.of(_pb(*types, **fields))


def test_the_policy_service_and_the_runtime_speak_of_the_same_things():
    assert notifications.EVENT_TYPES == notify.EVENT_TYPES
    n = Notification("d", "t", "s", "i", "asset.notice", "T", "x")
    assert set(notifications.PLACEHOLDERS) == set(n.fields())
    assert outbound_nats.OUTBOUND_STREAM == outbox.OUTBOUND_STREAM
    assert outbound_nats.outbound_subject("t", "i") == outbox.outbound_subject("t", "i")
    now = datetime(2026, 12, 2, tzinfo=UTC)
    record = DeliveryRecord(
        "dlv_1",
        "t",
        "",
        "int_1",
        "slack",
        "test",
        (),
        0,
        "",
        "",
        0,
        "Test",
        "queued",
        0,
        0,
        now,
        now,
    )
    sent = Notification.load(notifications.test_notification(record, "hello"))
    assert sent.test and sent.text == "hello" and sent.integration_id == "int_1"
    assert sent.occurred_at == now.timestamp()


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        (
            {
                "entity": events_pb.ENTITY_KIND_ISSUE,
                "change": events_pb.CHANGE_KIND_ATTACHED,
                "issue": common_pb.DataQualityIssue(status=common_pb.ISSUE_STATUS_OPEN),
            },
            "issue.opened",
        ),
        (
            {
                "entity": events_pb.ENTITY_KIND_ISSUE,
                "change": events_pb.CHANGE_KIND_UPDATED,
                "issue": common_pb.DataQualityIssue(status=common_pb.ISSUE_STATUS_ACKNOWLEDGED),
            },
            "issue.updated",
        ),
        (
            {
                "entity": events_pb.ENTITY_KIND_ISSUE,
                "change": events_pb.CHANGE_KIND_UPDATED,
                "issue": common_pb.DataQualityIssue(status=common_pb.ISSUE_STATUS_RESOLVED),
            },
            "issue.resolved",
        ),
        (
            {
                "entity": events_pb.ENTITY_KIND_ASSET,
                "change": events_pb.CHANGE_KIND_UPDATED,
                "changed_fields": ["unhealthy_upstream_asset_ids"],
                "unhealthy_upstream_asset_ids": ["up"],
            },
            "asset.unhealthy",
        ),
        (
            {
                "entity": events_pb.ENTITY_KIND_ASSET,
                "change": events_pb.CHANGE_KIND_UPDATED,
                "changed_fields": ["unhealthy_upstream_asset_ids"],
            },
            "asset.healthy",
        ),
        (
            {"entity": events_pb.ENTITY_KIND_ASSET, "change": events_pb.CHANGE_KIND_TAGGED},
            "asset.tagged",
        ),
        (
            {"entity": events_pb.ENTITY_KIND_RELATIONSHIP, "change": events_pb.CHANGE_KIND_CREATED},
            "lineage.changed",
        ),
        (
            {"entity": events_pb.ENTITY_KIND_ENFORCEMENT, "change": events_pb.CHANGE_KIND_DRIFTED},
            "enforcement.drifted",
        ),
        (
            {"entity": events_pb.ENTITY_KIND_NOTICE, "change": events_pb.CHANGE_KIND_CREATED},
            "asset.notice",
        ),
        (
            {"entity": events_pb.ENTITY_KIND_PROPAGATION, "change": events_pb.CHANGE_KIND_CREATED},
            None,
        ),
    ],
)
def test_each_event_has_the_type_subscriptions_name_it_by(fields, kind):
    assert notify.event_type(_event(**fields)) == kind
    assert kind is None or kind in notify.EVENT_TYPES


def test_a_filter_takes_an_event_only_if_every_field_it_sets_matches():
    issue = _event(
        entity=events_pb.ENTITY_KIND_ISSUE,
        tags=["PII", "finance"],
        issue=common_pb.DataQualityIssue(severity=common_pb.ISSUE_SEVERITY_MEDIUM),
    )
    table, column = common_pb.ASSET_TYPE_TABLE, common_pb.ASSET_TYPE_COLUMN
    medium, high = common_pb.ISSUE_SEVERITY_MEDIUM, common_pb.ISSUE_SEVERITY_HIGH
    for route, takes in (
        (_subscription("issue.opened"), True),
        (_subscription("*"), True),
        (_subscription("issue.resolved"), False),
        (_subscription("*", tags=["PII"]), True),
        (_subscription("*", tags=["GDPR"]), False),
        (_subscription("*", asset_types=[table]), True),
        (_subscription("*", asset_types=[column]), False),
        (_subscription("*", qualified_name_prefix="pg://shop/"), True),
        (_subscription("*", qualified_name_prefix="pg://other/"), False),
        (_subscription("*", min_severity=medium), True),
        (_subscription("*", min_severity=high), False),
    ):
        assert route.takes("issue.opened", issue) is takes, route


def test_subscriptions_are_indexed_by_tenant_and_event_type():
    other = _pb("asset.tagged")
    other.subscription_id, other.tenant_id = "sub_3", "globex"
    routes = notify.index([_pb("*"), other, _pb("issue.opened", "asset.notice")])
    assert set(routes) == {"acme", "globex"}
    assert set(routes["acme"]) == set(notify.EVENT_TYPES)
    assert [r.subscription_id for r in routes["acme"]["issue.opened"]] == ["sub_1", "sub_1"]
    assert [r.subscription_id for r in routes["acme"]["asset.tagged"]] == ["sub_1"]
    assert list(routes["globex"]) == ["asset.tagged"]


def test_an_event_that_happened_while_a_subscription_was_paused_is_not_sent_however_late():
    def at(seconds: int) -> events_pb.ChangeEvent:
        e = _event(entity=events_pb.ENTITY_KIND_NOTICE)
        e.occurred_at.FromSeconds(seconds)
        return e

    paused = _pb("asset.notice")
    paused.paused = True
    paused.paused_at.FromSeconds(1000)
    route = notify.Route.of(paused)
    assert route.takes("asset.notice", at(999))  # (before the pause, routed late)
    assert not route.takes("asset.notice", at(1000)) and not route.takes("asset.notice", at(5000))
    resumed = _pb("asset.notice")
    resumed.paused_at.FromSeconds(1000)
    resumed.resumed_at.FromSeconds(2000)
    route = notify.Route.of(resumed)
    assert route.takes("asset.notice", at(999)) and route.takes("asset.notice", at(2000))
    assert not route.takes("asset.notice", at(1500))
    assert notify.Route.of(_pb("asset.notice")).takes("asset.notice", at(1500))


def test_a_notification_is_rendered_with_its_subscription_template():
    s = notify.Route.of(
        notification_pb.Subscription(
            subscription_id="sub_1",
            tenant_id="acme",
            integration_id="int_1",
            filter=notification_pb.SubscriptionFilter(event_types=["issue.opened"]),
            template="[{severity}] {title} | {status} | {tags} | {count}",
            max_attempts=5,
        )
    )
    e = _event(
        entity=events_pb.ENTITY_KIND_ISSUE,
        change=events_pb.CHANGE_KIND_ATTACHED,
        tags=["PII"],
        issue=common_pb.DataQualityIssue(
            issue_id="iss_1",
            title="Stale",
            severity=common_pb.ISSUE_SEVERITY_HIGH,
            status=common_pb.ISSUE_STATUS_OPEN,
            url="https://mc/1",
        ),
    )
    n = notify.notification(s, "issue.opened", e)
    assert n.text == "[high] Issue opened on pg://shop/public/orders: Stale | open | PII | 1"
    assert n.issue_id == "iss_1" and n.url == "https://mc/1" and n.max_attempts == 5
    assert n.delivery_id == notify.notification(s, "issue.opened", e).delivery_id
    assert Notification.load(n.dump()) == n


def test_a_burst_is_one_notification_naming_how_many_and_the_worst():
    s = _subscription("asset.unhealthy")
    events = [
        _event(
            event_id=f"e{n}",
            qualified_name=f"pg://dq/t{n:03d}",
            asset_type=common_pb.ASSET_TYPE_COLUMN if n % 2 else common_pb.ASSET_TYPE_TABLE,
            unhealthy_upstream_asset_ids=["up"] * (2 if n == 7 else 1),
        )
        for n in range(40)
    ]
    n = notify.summary(s, "asset.unhealthy", events)
    assert n.count == 40 and len(n.event_ids) == 40
    assert n.assets[0] == "pg://dq/t007"  # the most unhealthy upstream first
    assert n.assets[1:4] == ("pg://dq/t000", "pg://dq/t002", "pg://dq/t004")  # then tables
    assert len(n.assets) == notify.WORST
    assert n.title.startswith("40 assets unhealthy; worst: pg://dq/t007")
    assert notify.summary(s, "asset.unhealthy", events[:1]).count == 1


def test_the_back_off_doubles_with_jitter_up_to_its_ceiling():
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (4, 8.0), (20, 300.0)):
        waits = [send.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 100  # jittered


def test_answers_are_tried_again_only_where_that_can_help():
    assert not send_failed(503, "x").permanent and not send_failed(429, "x", "7").permanent
    assert send_failed(429, "x", "7").retry_after == 7.0
    assert send_failed(429, "x", "Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
    for status in (400, 401, 403, 404, 410):
        assert send_failed(status, "x").permanent
    assert not send_failed(408, "x").permanent


async def test_the_limiter_spaces_sends_to_one_destination():
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = send.Limiter(sleep)
    for _ in range(3):
        await limiter.wait("int_1", 2.0)
    await limiter.wait("int_2", 2.0)  # another destination does not wait
    await limiter.wait("int_3", None)
    assert len(slept) == 2 and slept[0] == pytest.approx(0.5, abs=0.05)
    assert slept[1] == pytest.approx(1.0, abs=0.05)


def test_slack_blocks_stay_within_block_kit_limits():
    long = Notification(
        "d",
        "t",
        "s",
        "i",
        "asset.unhealthy",
        "x" * 400,
        "y" * 5000,
        severity="critical",
        qualified_name="pg://q",
        url="https://lily/a",
        count=1000,
        assets=tuple(f"pg://dq/{n}" for n in range(10)),
    )
    text, blocks = message(long)
    assert block_problem(blocks) == "" and len(text) <= 3000
    assert len(blocks[0]["text"]["text"]) <= 150
    assert "990 more" in blocks[2]["text"]["text"]
    test = Notification("d", "t", "", "i", "test", "A test", "hi", test=True)
    assert block_problem(message(test)[1]) == ""


def test_webhooks_are_signed_so_the_library_verifies_them_with_each_secret():
    secrets = [
        "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_" + "c2VjcmV0LXR3by1zZWNyZXQtdHdv",
    ]
    n = Notification("dlv_1", "t", "s", "i", "asset.notice", "T", "x", occurred_at=1.0)
    body = body_of(n)
    at = datetime.now(UTC)
    headers = {
        "webhook-id": "dlv_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signed("dlv_1", at, body, secrets),
    }
    for secret in secrets:
        assert Webhook(secret).verify(body, headers)["data"]["delivery_id"] == "dlv_1"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==").verify(body, headers)
    assert orjson.loads(body)["type"] == "lily.asset.notice"
