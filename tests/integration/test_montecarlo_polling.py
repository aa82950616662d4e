"""Polling Monte Carlo, the safety net under its webhooks: its SDK (pycarlo) against a local
stand-in for its GraphQL API (tests/fake_montecarlo.py: its auth headers, its schema, its
paging, its errors), then the adapter runtime catching up what webhooks missed, with a webhook
and a poll of the same incident making one issue."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
import pytest_asyncio
from lily.v1 import common_pb2 as C
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as O

from adapters.montecarlo import poll
from adapters.montecarlo.mapping import POLLED
from adapters.spec import Polled, PollFailed
from tests.fake_montecarlo import FakeMonteCarlo
from tests.helpers import asset, eventually, mc_signature, runtime_key, serving_runtime

WAREHOUSE = "6a8c3a7e-0d6b-4d35-9a2b-5f0e1c2d3b4a"
ACCOUNT = "9a59c6f1-203a-4c72-8cd7-132db7f21b92"
NOW = datetime.now(UTC).replace(microsecond=0)


def mcon(table: str) -> str:
    return f"MCON++{ACCOUNT}++{WAREHOUSE}++table++{table}"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeMonteCarlo]:
    async with FakeMonteCarlo() as mc:
        yield mc


def _settings(mc: FakeMonteCarlo, **more: object) -> dict[str, object]:
    return {"api_url": mc.url, "warehouses": {WAREHOUSE: "snowflake://acct"}, **more}


def _secrets(mc: FakeMonteCarlo) -> dict[str, str]:
    return {"mcd_id": mc.mcd_id, "mcd_token": mc.mcd_token, "webhook_secret": "s"}


async def _poll(mc: FakeMonteCarlo, cursor: str = "", **secrets: str) -> Polled:
    return await poll.MonteCarloPoller().poll(
        _settings(mc), {**_secrets(mc), **secrets}, cursor, now=NOW.timestamp(), timeout=5
    )


def _alerts(polled: Polled) -> list[dict]:
    bodies = [json.loads(body) for _, body in polled.deliveries]
    assert {b["polled"] for b in bodies} <= {POLLED}
    return [b["alert"] for b in bodies]


async def test_a_poll_reads_the_alerts_updated_since_its_cursor_page_by_page(fake):
    fake.max_page = 2  # five alerts: three pages
    for n in range(5):
        fake.alert(f"a{n}", NOW - timedelta(hours=5 - n), tables=[{"mcon": mcon("db:s.t")}])
    fake.alert("old", NOW - timedelta(days=3))  # before the first poll's lookback (a day)

    first = await _poll(fake)
    assert [a["id"] for a in _alerts(first)] == ["a0", "a1", "a2", "a3", "a4"]
    assert not first.more
    assert _alerts(first)[0]["tables"] == [{"mcon": mcon("db:s.t"), "tableId": None}]
    asked = fake.queries
    assert [q.get("orderBy") for q in asked] == ["updatedTime"] * len(asked)
    assert all(q["first"] == poll.PAGE for q in asked)
    # each page goes on from the last alert read (inclusive: that one comes again, left out)
    assert [q["updatedTime"]["after"] for q in asked] == [
        (NOW - timedelta(days=1)).isoformat(),
        (NOW - timedelta(hours=4)).isoformat(),
        (NOW - timedelta(hours=3)).isoformat(),
        (NOW - timedelta(hours=2)).isoformat(),
    ]
    assert all(q["updatedTime"]["before"] == NOW.isoformat() for q in asked)

    # the next poll reads on from where this one ended (less an overlap), no further back
    fake.queries.clear()
    fake.alert("a1", NOW + timedelta(minutes=1), status="FIXED")  # updated since
    later = await poll.MonteCarloPoller().poll(
        _settings(fake),
        _secrets(fake),
        first.cursor,
        now=(NOW + timedelta(minutes=5)).timestamp(),
        timeout=5,
    )
    assert [(a["id"], a["status"]) for a in _alerts(later)] == [("a1", "FIXED")]
    assert fake.queries[0]["updatedTime"]["after"] == (NOW - poll.OVERLAP).isoformat()


async def test_a_poll_stops_at_its_page_limit_and_the_next_goes_on(fake, monkeypatch):
    monkeypatch.setattr(poll, "MAX_PAGES", 2)
    fake.max_page = 2
    for n in range(5):
        fake.alert(f"b{n}", NOW - timedelta(hours=5 - n))
    first = await _poll(fake)
    assert first.more and [a["id"] for a in _alerts(first)] == ["b0", "b1", "b2"]
    rest = await _poll(fake, first.cursor)
    assert not rest.more
    assert [a["id"] for a in _alerts(rest)] == ["b2", "b3", "b4"]  # b2 again at the boundary


async def test_refusals_and_failures_of_the_api_are_poll_failures(fake):
    with pytest.raises(PollFailed) as unknown_key:
        await _poll(fake, mcd_token="wrong")
    assert unknown_key.value.status == 401 and fake.refused == [401]

    fake.fail(429, **{"Retry-After": "7"})
    with pytest.raises(PollFailed) as throttled:
        await _poll(fake)
    assert throttled.value.status == 429 and throttled.value.retry_after == 7.0

    fake.alert("c1", NOW - timedelta(hours=1))
    fake.fail(503)  # once: the SDK tries again within the poll
    polled = await _poll(fake)
    assert [a["id"] for a in _alerts(polled)] == ["c1"] and fake.refused[-1] == 503

    fake.fail(502, times=50)  # for good: the poll fails after a few seconds of trying
    with pytest.raises(PollFailed) as down:
        await _poll(fake)
    assert down.value.status == 502 and down.value.retry_after is None


async def test_a_poll_reaches_nobody_listening_as_a_failure():
    dead = FakeMonteCarlo()  # never started
    with pytest.raises(PollFailed) as refused:
        await _poll(dead)
    assert refused.value.status == 0 and "could not be reached" in str(refused.value)


async def test_polling_catches_up_what_webhooks_missed_and_makes_one_issue_per_incident(
    lily, stack, admin_md, md, stub, fake
):
    table = "snowflake://acct/analytics/prod/orders"
    made_table = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(table)]), metadata=md
    )
    asset_id = made_table.results[0].asset_id
    async with grpc.aio.insecure_channel(lily.address) as ch:
        token = await runtime_key(ch, admin_md)
        integration = I.Integration(type="monte_carlo", display_name="mc polled")
        integration.settings.update(_settings(fake, poll_interval_seconds=10))
        integration.secrets.update({"mcd_id": fake.mcd_id, "mcd_token": fake.mcd_token})
        made = await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
            I.CreateIntegrationRequest(integration=integration), metadata=md
        )
    seen, missed = str(uuid.uuid4()), str(uuid.uuid4())
    fake.fail(429, **{"Retry-After": "1"})  # the first poll is throttled: it comes back in 1 s
    async with serving_runtime(lily.address, token, stack[1], poll_tick=0.2) as base:
        # the webhook of one incident arrives ...
        body = json.dumps(
            {
                "action": "incident",
                "type": "open_anomaly_incident",
                "payload": {
                    "incident_id": seen,
                    "event_list": [
                        {
                            "event_details": "Has 42 rows vs. 101 expected",
                            "full_table_id": "analytics:prod.orders",
                            "warehouse_uuid": WAREHOUSE,
                        }
                    ],
                },
            }
        ).encode()
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            answer = await http.post(
                made.integration.webhook_path,
                content=body,
                headers={"x-mcd-signature": mc_signature(made.webhook_secret, body)},
            )
        assert answer.status_code == 200

        async def issues() -> dict[str, C.DataQualityIssue]:
            listed = await stub.ListIssues(O.ListIssuesRequest(asset_id=asset_id), metadata=md)
            return {i.external_id: i for i in listed.issues if i.source == "monte_carlo"}

        async def opened() -> bool:
            assert seen in await issues()
            return True

        await eventually(opened)
        # ... then, with webhooks lost, it is resolved and another opens: a poll reads both
        # (updated now, as Monte Carlo would stamp them: after any cursor a poll has stored)
        now = datetime.now(UTC)
        fake.alert(
            seen,
            now,
            status="FIXED",
            tables=[{"tableId": "analytics:prod.orders", "mcon": mcon("analytics:prod.orders")}],
        )
        fake.alert(
            missed,
            now + timedelta(milliseconds=1),
            title="Volume anomaly in orders",
            subTypes=["VOLUME_ANOMALY"],
            severity="SEV_2",
            tables=[{"mcon": mcon("analytics:prod.orders")}],  # named by its MCON alone
        )

        async def caught_up() -> dict[str, C.DataQualityIssue]:
            found = await issues()
            assert found.get(seen) and found[seen].status == C.ISSUE_STATUS_RESOLVED
            assert missed in found
            return found

        found = await eventually(caught_up, timeout=20)
    assert len(found) == 2  # one issue per incident: the webhook's and the poll's are one
    assert found[seen].title == "Has 42 rows vs. 101 expected"  # what the webhook said stays
    assert found[seen].HasField("resolved_at")
    got = found[missed]
    assert (got.title, got.type, got.description) == (
        "Volume anomaly in orders",
        "anomaly",
        "volume anomaly",
    )
    assert got.status == C.ISSUE_STATUS_OPEN and got.severity == C.ISSUE_SEVERITY_HIGH
    assert got.url == f"https://getmontecarlo.com/alerts/{missed}"
    assert fake.refused[0] == 429 and len(fake.queries) >= 1
    async with grpc.aio.insecure_channel(lily.address) as ch:  # no poller left pointing here
        await integration_grpc.IntegrationServiceStub(ch).DeleteIntegration(
            I.DeleteIntegrationRequest(integration_id=made.integration.integration_id), metadata=md
        )
