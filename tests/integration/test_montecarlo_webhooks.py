"""Monte Carlo's webhooks through the door `lily up` serves (the adapter runtime behind the
gateway): signed as Monte Carlo signs them, kept durably, mapped onto issues of the right
assets with the integration's own credential; refused (and nothing kept) when the signature is
wrong; a repeat changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
import uuid
from pathlib import Path

import httpx
import nats
import pytest
from lily.v1 import common_pb2 as C
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from nats.js.errors import NotFoundError

from tests.helpers import asset, eventually

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "montecarlo"


def mc_signature(secret: str, body: bytes) -> str:
    """As Monte Carlo's reference receiver computes it (docs.getmontecarlo.com/docs/webhooks),
    written out here independently of the adapter's own code."""
    encoded = urllib.parse.urlencode(json.loads(body)).encode("utf8")
    return hmac.new(secret.encode(), encoded, hashlib.sha512).hexdigest()


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


async def test_what_names_no_known_asset_or_is_no_incident_is_kept(inbound, mc, tenant, nats_url):
    path, secret = mc
    iid = path.rsplit("/", 1)[1]
    rule = (FIXTURES / "custom_rule_incident.json").read_bytes()  # names no table at all
    assert (await _post(inbound, path, rule, mc_signature(secret, rule))).status_code == 200
    other = json.dumps({"action": "monitor_update", "type": "monitor_paused"}).encode()
    assert (await _post(inbound, path, other, mc_signature(secret, other))).status_code == 200

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def kept(kind: str):
            subject = f"lily_inbound_kept.{tenant}.{iid}.{kind}"
            try:
                return await js.get_last_msg("LILY_INBOUND_KEPT", subject)
            except NotFoundError:
                raise AssertionError(f"nothing on {subject}") from None

        pending = await eventually(lambda: kept("pending"))
        assert pending.data == rule and "f83867b6" in pending.headers["Lily-Reason"]
        unmapped = await eventually(lambda: kept("unmapped"))
        assert unmapped.data == other and "not an incident" in unmapped.headers["Lily-Reason"]
    finally:
        await nc.close()
