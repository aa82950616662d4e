"""Notifications through `lily up` in its own process, on backends of its own: Lily killed
mid-delivery (SIGKILL, while JIRA is still answering the ticket it made) and started again
tickets every incident, and none twice; a destination that keeps failing is marked unhealthy,
its notifications dead-lettered rather than tried for ever, and replayed once it is back."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import notification_pb2 as N
from lily.v1 import notification_pb2_grpc as notification_grpc

from core.stack import EmbeddedStack, free_port
from tests.e2e.test_lily_up import _gateway_url, _lily_up, _stop
from tests.fake_jira import FakeJira
from tests.fake_slack import FakeSlack
from tests.helpers import asset, bearer, eventually


async def _incident(stub, md, asset_id: str, external_id: str) -> None:
    await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=asset_id,
            issue=common_pb.DataQualityIssue(
                source="monte_carlo",
                external_id=external_id,
                type="freshness",
                title=f"Stale ({external_id})",
                severity=common_pb.ISSUE_SEVERITY_HIGH,
                status=common_pb.ISSUE_STATUS_OPEN,
            ),
        ),
        metadata=md,
    )


@pytest.mark.slow
async def test_lily_killed_mid_delivery_loses_nothing_and_tickets_each_incident_once(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")  # its own backends: no other runtime may help
    dsn, url = await stack.start()
    env = {"LILY_POSTGRES_DSN": dsn, "LILY_NATS_URL": url, "LILY_WORKER_PROCESSES": "0"}
    port = free_port()
    data = tmp_path / "data"
    lines: list[str] = []
    proc = await _lily_up(data, port, lines, **env)
    try:
        async with FakeJira(slow_create=4.0) as jira:
            md = bearer((data / "credentials").read_text().strip())
            async with httpx.AsyncClient(
                base_url=_gateway_url(lines), headers=dict(md), timeout=10
            ) as http:
                made = await http.post(
                    "/api/v1/integrations",
                    json={
                        "type": "jira",
                        "settings": {"site_url": jira.base, "project_key": "DQ"},
                        "secrets": {"email": jira.email, "api_token": jira.api_token},
                    },
                )
                assert made.status_code == 200, made.text
                integration_id = made.json()["integration"]["integrationId"]
                sub = await http.post(
                    "/api/v1/subscriptions",
                    json={
                        "integrationId": integration_id,
                        "filter": {"eventTypes": ["issue.opened", "issue.resolved"]},
                    },
                )
                assert sub.status_code == 200, sub.text
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = metadata_grpc.MetadataServiceStub(ch)
                got = await stub.IngestMetadata(
                    O.IngestMetadataRequest(assets=[asset("pg://k/a"), asset("pg://k/b")]),
                    metadata=md,
                )
                a, b = (r.asset_id for r in got.results)
                await _incident(stub, md, a, "inc-1")

                async def made_one() -> bool:
                    assert len(jira.issues) == 1  # made; its answer is on its way
                    return True

                await eventually(made_one, timeout=30)
                await _incident(stub, md, b, "inc-2")  # queued behind it
            proc.kill()  # SIGKILL mid-delivery: nothing acknowledged, nothing cleaned up
            await proc.wait()
            jira.slow_create = 0.0
            proc = await _lily_up(data, port, **env)

            async def both() -> bool:
                assert sorted(i["fields"]["summary"] for i in jira.issues.values()) == [
                    "Issue opened on pg://k/a: Stale (inc-1)",
                    "Issue opened on pg://k/b: Stale (inc-2)",
                ]
                return True

            # (what the killed runtime held comes back once its ack wait lapses)
            await eventually(both, timeout=90, interval=0.5)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                notifications = notification_grpc.NotificationServiceStub(ch)

                async def recorded() -> bool:
                    got = await notifications.ListDeliveries(
                        N.ListDeliveriesRequest(status=N.DELIVERY_STATUS_DELIVERED), metadata=md
                    )
                    assert len(got.deliveries) == 2
                    return True

                # (inc-2 may be made before inc-1, whose message the killed runtime held,
                # comes back: its ack wait lapses first)
                await eventually(recorded, timeout=90, interval=0.5)
            assert jira.creates == 2 and not jira.comments  # no second ticket, no copy
    finally:
        await _stop(proc)
        await stack.stop()


@pytest.mark.slow
async def test_a_destination_that_keeps_failing_is_unhealthy_and_not_tried_for_ever(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")
    dsn, url = await stack.start()
    env = {
        "LILY_POSTGRES_DSN": dsn,
        "LILY_NATS_URL": url,
        "LILY_WORKER_PROCESSES": "0",
        # (minutes in production: seconds here)
        "LILY_ADAPTERS_UNHEALTHY_AFTER": "3",
        "LILY_ADAPTERS_PROBE_EVERY": "4",
    }
    data = tmp_path / "data"
    lines: list[str] = []
    proc = await _lily_up(data, free_port(), lines, **env)
    try:
        async with FakeSlack() as slack:
            slack.outage(3600, status=503)
            md = bearer((data / "credentials").read_text().strip())
            async with httpx.AsyncClient(
                base_url=_gateway_url(lines), headers=dict(md), timeout=10
            ) as http:
                made = await http.post(
                    "/api/v1/integrations",
                    json={"type": "slack", "secrets": {"webhook_url": slack.url()}},
                )
                integration_id = made.json()["integration"]["integrationId"]
                sub = await http.post(
                    "/api/v1/subscriptions",
                    json={
                        "integrationId": integration_id,
                        "maxAttempts": 3,
                        "filter": {"eventTypes": ["asset.notice"]},
                    },
                )
                subscription_id = sub.json()["subscription"]["subscriptionId"]
                got = await http.post(
                    "/api/v1/metadata",
                    json={
                        "assets": [{"qualifiedName": "pg://u/a", "assetType": "ASSET_TYPE_TABLE"}]
                    },
                )
                asset_id = got.json()["results"][0]["assetId"]
                await asyncio.sleep(2.5)  # (the runtime reads subscriptions every 2 s)

                async def notify(title: str) -> None:
                    sent = await http.post(
                        f"/api/v1/assets/{asset_id}:notify",
                        json={"kind": "schema_drift", "title": title},
                    )
                    assert sent.status_code == 200, sent.text

                async def health() -> dict:
                    got = await http.get("/api/v1/notifications/destinations")
                    found = got.json().get("destinations", [])
                    assert len(found) == 1, found
                    return found[0]

                async def dead(n: int) -> list[dict]:
                    got = await http.get(
                        "/api/v1/notifications/deliveries",
                        params={"status": "DELIVERY_STATUS_DEAD"},
                    )
                    found = got.json().get("deliveries", [])
                    assert len(found) == n, found
                    return found

                for n in range(3):
                    await notify(f"while down {n}")

                async def unhealthy() -> dict:
                    h = await health()
                    assert not h["healthy"] and h["consecutiveFailures"] >= 5, h
                    return h

                h = await eventually(unhealthy, timeout=60, interval=0.5)
                assert "503" in h["lastError"] and h["unhealthySince"]
                # while it is unhealthy, a notification is a dead letter at once (but a probe)
                tried = len(slack.answered)
                await notify("while unhealthy")
                found = await eventually(lambda: dead(4), timeout=30)
                assert any("unhealthy" in d.get("destinationMessage", "") for d in found)
                assert len(slack.answered) - tried <= 1  # not tried for ever
                # back: the next notification after a probe's pause is the probe (here a
                # test), it gets through, and the dead letters are replayed
                slack.outage(0)
                await asyncio.sleep(4.5)
                test = await http.post(
                    f"/api/v1/integrations/{integration_id}:test", json={"text": "after"}
                )
                assert test.status_code == 200, test.text

                async def healthy_again() -> bool:
                    assert (await health())["healthy"]
                    return True

                await eventually(healthy_again, timeout=30, interval=0.5)
                replayed = await http.post(
                    "/api/v1/notifications/deliveries:replay",
                    json={"subscriptionId": subscription_id},
                )
                assert replayed.status_code == 200, replayed.text

                async def all_delivered() -> bool:
                    got = sorted(m["text"] for m in slack.received)
                    assert got == sorted(
                        ["while down 0", "while down 1", "while down 2", "while unhealthy", "after"]
                    ), got
                    return True

                await eventually(all_delivered, timeout=60, interval=0.5)
    finally:
        await _stop(proc)
        await stack.stop()
