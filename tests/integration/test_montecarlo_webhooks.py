"""Monte Carlo's webhooks through the door `lily up` serves (the adapter runtime behind the
gateway): signed as Monte Carlo signs them, kept durably, mapped onto issues of the right
assets with the integration's own credential; refused (and nothing kept) when the signature is
wrong; a repeat changes nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from lily.v1 import common_pb2 as C
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O

from tests.helpers import asset, eventually, mc_signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "montecarlo"


def opened(incident_id: str, table: str, details: str = "Has 42 rows vs. 101 expected") -> bytes:
    return json.dumps(
        {
            "account": {"id": "9a59c6f1-203a-4c72-8cd7-132db7f21b92"},
            "action": "incident",
            "type": "open_anomaly_incident",
            "version": "v0.1",
            "payload": {
                "incident_id": incident_id,
                "group_id": "analytics:prod",
                "url": f"https://getmontecarlo.com/incidents/{incident_id}",
                "event_list": [{"event_details": details, "full_table_id": table}],
            },
        }
    ).encode()


@pytest.fixture
async def mc(channel, md):
    """A Monte Carlo integration of the test's tenant: (webhook URL path, secret)."""
    integration = I.Integration(type="monte_carlo", display_name="mc")
    integration.settings.update({"default_prefix": "snowflake://acct"})
    made = await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
        I.CreateIntegrationRequest(integration=integration), metadata=md
    )
    return made.integration.webhook_path, made.webhook_secret


async def _post(base: str, path: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-mcd-signature"] = signature
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        return await http.post(path, content=body, headers=headers)


async def _table(stub, md, name: str) -> str:
    made = await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset(name)]), metadata=md)
    return made.results[0].asset_id


async def _issues(stub, md, asset_id: str) -> list[C.DataQualityIssue]:
    listed = await stub.ListIssues(O.ListIssuesRequest(asset_id=asset_id), metadata=md)
    return list(listed.issues)


async def test_a_signed_incident_lands_on_its_asset_and_is_resolved_by_its_update(
    inbound, mc, channel, stub, md, event_log
):
    path, secret = mc
    asset_id = await _table(stub, md, "snowflake://acct/analytics/prod/orders")
    downstream = await _table(stub, md, "snowflake://acct/analytics/marts/revenue")
    await lineage_grpc.LineageServiceStub(channel).IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                L.RelationshipInput(
                    upstream=L.AssetRef(asset_id=asset_id),
                    downstream=L.AssetRef(asset_id=downstream),
                )
            ]
        ),
        metadata=md,
    )
    incident = str(uuid.uuid4())
    body = opened(incident, "analytics:prod.orders")
    answer = await _post(inbound, path, body, mc_signature(secret, body))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] is True

    async def attached():
        found = await _issues(stub, md, asset_id)
        assert len(found) == 1 and found[0].external_id == incident
        return found[0]

    issue = await eventually(attached)
    assert issue.source == "monte_carlo" and issue.status == C.ISSUE_STATUS_OPEN
    assert issue.title == "Has 42 rows vs. 101 expected" and issue.type == "anomaly"
    assert issue.url == f"https://getmontecarlo.com/incidents/{incident}"
    await eventually(lambda: _true([e for e in event_log.events(".issue.attached")]))

    async def unhealthy(expected: list[str]):
        got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=downstream), metadata=md)
        assert list(got.asset.unhealthy_upstream_asset_ids) == expected
        return True

    await eventually(lambda: unhealthy([asset_id]))  # everything downstream learns of it

    # an update names no table: it reaches the asset the incident is on, and resolves it
    update = json.dumps(
        {"action": "incident", "type": "incident_update", "version": "v0.1",
         "payload": {"incident_id": incident, "alert_feedback": "fixed"}}
    ).encode()  # fmt: skip
    assert (await _post(inbound, path, update, mc_signature(secret, update))).status_code == 200

    async def resolved():
        found = await _issues(stub, md, asset_id)
        assert found[0].status == C.ISSUE_STATUS_RESOLVED and found[0].HasField("resolved_at")
        return found[0]

    done = await eventually(resolved)
    assert done.title == issue.title  # the rest of it stays as it was
    await eventually(lambda: unhealthy([]))  # and downstream, healthy again


async def _true(value):
    return value


async def test_a_missing_or_wrong_signature_is_refused_and_nothing_is_kept(inbound, mc, stub, md):
    path, secret = mc
    asset_id = await _table(stub, md, "snowflake://acct/analytics/prod/users")
    forged = opened("forged", "analytics:prod.users")
    other = opened("other", "analytics:prod.users")
    wrong = (None, "", mc_signature("not-the-secret", forged), mc_signature(secret, other))
    for signature in wrong:
        answer = await _post(inbound, path, forged, signature)
        assert answer.status_code == 403, (signature, answer.text)
        assert "x-mcd-signature" in answer.json()["error"]
    # a good delivery after them is mapped; the refused ones never were (one at a time, in order)
    good = opened("good", "analytics:prod.users")
    assert (await _post(inbound, path, good, mc_signature(secret, good))).status_code == 200
    found = await eventually(lambda: _issues(stub, md, asset_id))
    assert [i.external_id for i in found] == ["good"]


async def test_the_same_delivery_twice_changes_nothing(inbound, mc, stub, md, event_log):
    path, secret = mc
    asset_id = await _table(stub, md, "snowflake://acct/analytics/prod/events")
    body = opened("twice", "analytics:prod.events")
    first = await _post(inbound, path, body, mc_signature(secret, body))
    second = await _post(inbound, path, body, mc_signature(secret, body))
    assert first.json()["duplicate"] is False and second.json()["duplicate"] is True
    await eventually(lambda: _issues(stub, md, asset_id))
    # and past the inbox's de-duplication (a redelivery later): AttachIssue leaves it alone
    again = body.replace(b'"v0.1"', b'"v0.1" ')
    assert (await _post(inbound, path, again, mc_signature(secret, again))).status_code == 200
    marker = opened("after", "analytics:prod.events")
    await _post(inbound, path, marker, mc_signature(secret, marker))
    await eventually(lambda: _true(len(_names(event_log)) == 2))
    assert _names(event_log) == ["twice", "after"]  # one attach each, nothing more


def _names(event_log) -> list[str]:
    return [e.issue.external_id for _, e, _ in event_log.events(".issue.attached")]


async def test_the_door_refuses_what_it_cannot_take(inbound, mc):
    path, secret = mc
    async with httpx.AsyncClient(base_url=inbound, timeout=10) as http:
        big = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
        assert (await http.post(path, content=big)).status_code == 413
        assert (await http.get(path)).status_code == 405
        unknown = path.rsplit("/", 1)[0] + "/int_" + "0" * 24
        body = opened("x", "a:b.c")
        assert (await _post(inbound, unknown, body, mc_signature(secret, body))).status_code == 404
        assert (await http.post("/webhook/nothing/int_1", content=b"{}")).status_code == 404
        assert (await _post(inbound, path, b"not json", "00")).status_code == 400
        wrong_type = path.replace("/monte-carlo/", "/openlineage/")
        assert (await _post(inbound, wrong_type, body, "00")).status_code == 404


async def test_what_is_not_mapped_is_kept_listed_and_replayed_through_the_api(
    inbound, mc, channel, stub, md, other_md, http
):
    path, secret = mc
    iid = path.rsplit("/", 1)[1]
    registry = integration_grpc.IntegrationServiceStub(channel)
    rule = (FIXTURES / "custom_rule_incident.json").read_bytes()  # names no table at all
    assert (await _post(inbound, path, rule, mc_signature(secret, rule))).status_code == 200
    other = json.dumps({"action": "monitor_update", "type": "monitor_paused"}).encode()
    assert (await _post(inbound, path, other, mc_signature(secret, other))).status_code == 200
    early = opened("early", "analytics:prod.later")  # its table is not in Lily yet
    assert (await _post(inbound, path, early, mc_signature(secret, early))).status_code == 200

    async def kept(kind=0):
        listed = await registry.ListKeptDeliveries(
            I.ListKeptDeliveriesRequest(integration_id=iid, kind=kind), metadata=md
        )
        assert len(listed.deliveries) == (3 if kind == 0 else 2 if kind == PENDING else 1)
        return list(listed.deliveries)

    everything = await eventually(kept)
    assert [k.kind for k in everything] == [PENDING, I.KEPT_DELIVERY_KIND_UNMAPPED, PENDING]
    assert everything[0].body.encode() == rule and "f83867b6" in everything[0].reason
    assert "not an incident" in everything[1].reason
    assert "snowflake://acct/analytics/prod/later" in everything[2].reason
    page = await registry.ListKeptDeliveries(
        I.ListKeptDeliveriesRequest(
            integration_id=iid, page_size=1, after_sequence=everything[0].sequence
        ),
        metadata=md,
    )
    assert [k.sequence for k in page.deliveries] == [everything[1].sequence]
    over_rest = await http.get(
        f"/api/v1/integrations/{iid}/deliveries", params={"kind": "KEPT_DELIVERY_KIND_UNMAPPED"}
    )
    assert [d["reason"] for d in over_rest.json()["deliveries"]] == [everything[1].reason]
    with pytest.raises(grpc.aio.AioRpcError) as theirs:
        await registry.ListKeptDeliveries(
            I.ListKeptDeliveriesRequest(integration_id=iid), metadata=other_md
        )
    assert theirs.value.code() == grpc.StatusCode.NOT_FOUND

    # the table arrives; the early incident is replayed and lands on it
    later = await _table(stub, md, "snowflake://acct/analytics/prod/later")
    replayed = await registry.ReplayKeptDeliveries(
        I.ReplayKeptDeliveriesRequest(integration_id=iid, sequences=[everything[2].sequence]),
        metadata=md,
    )
    assert replayed.replayed == 1
    found = await eventually(lambda: _issues(stub, md, later))
    assert [i.external_id for i in found] == ["early"]
    # the rule breach still names nothing: replayed, it is kept again, with why
    again = await registry.ReplayKeptDeliveries(
        I.ReplayKeptDeliveriesRequest(integration_id=iid, kind=PENDING), metadata=md
    )
    assert again.replayed == 1

    async def kept_again():
        listed = await registry.ListKeptDeliveries(
            I.ListKeptDeliveriesRequest(integration_id=iid, kind=PENDING), metadata=md
        )
        assert [k.body.encode() for k in listed.deliveries] == [rule]
        assert listed.deliveries[0].sequence > everything[2].sequence
        return True

    await eventually(kept_again)


PENDING = I.KEPT_DELIVERY_KIND_PENDING
