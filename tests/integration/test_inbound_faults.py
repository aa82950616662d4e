"""Faults at the door: a webhook that arrives while the core is down is kept (the inbox on
JetStream) and answered 200 only once it is, then mapped when the core is back; one the
runtime cannot verify at all meanwhile (nothing known of its integration) gets 503, so its
sender tries again. Nothing Lily answered 200 to is lost."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.server import start
from core.stack import free_port
from tests.helpers import asset, eventually, mc_signature, runtime_key, serving_runtime


def _signed(secret: str, incident: dict) -> tuple[bytes, str]:
    body = json.dumps(incident).encode()
    return body, mc_signature(secret, body)


def _incident(incident_id: str, table: str) -> dict:
    return {
        "action": "incident",
        "type": "open_anomaly_incident",
        "payload": {"incident_id": incident_id, "event_list": [{"full_table_id": table}]},
    }


@pytest.mark.slow
async def test_a_webhook_that_arrives_while_the_core_is_down_is_kept_then_mapped(
    lily, stack, admin_md, md
):
    dsn, url = stack
    port = free_port()
    settings = lily.settings.model_copy(update={"grpc_port": port, "workers": False})
    core = await start(settings, postgres_dsn=dsn, nats_url=url)  # a second instance
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            token = await runtime_key(ch, admin_md)
            integration = I.Integration(type="monte_carlo")
            integration.settings.update({"default_prefix": "snowflake://down"})
            made = await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
                I.CreateIntegrationRequest(integration=integration), metadata=md
            )
            stub = metadata_grpc.MetadataServiceStub(ch)
            ingested = await stub.IngestMetadata(
                O.IngestMetadataRequest(
                    assets=[asset(f"snowflake://down/a/b/{name}") for name in ("first", "late")]
                ),
                metadata=md,
            )
        first_id, late_id = (r.asset_id for r in ingested.results)
        path, secret = made.integration.webhook_path, made.webhook_secret
        async with (
            serving_runtime(address, token, url, timeout=2.0) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as http,
        ):
            body, sig = _signed(secret, _incident("first", "a:b.first"))
            first = await http.post(path, content=body, headers={"x-mcd-signature": sig})
            assert first.status_code == 200

            async def issues(asset_id: str) -> list[str]:
                listed = await metadata_grpc.MetadataServiceStub(lily_channel).ListIssues(
                    O.ListIssuesRequest(asset_id=asset_id), metadata=md
                )
                return [i.external_id for i in listed.issues]

            async with grpc.aio.insecure_channel(lily.address) as lily_channel:
                assert await eventually(lambda: issues(first_id)) == ["first"]

                await core.stop(grace=0)  # the core goes down
                await asyncio.sleep(1.1)  # what the runtime knows is no longer fresh
                body, sig = _signed("not-the-secret", _incident("late", "a:b.late"))
                forged = await http.post(path, content=body, headers={"x-mcd-signature": sig})
                assert forged.status_code == 403  # refused, and what it knew is still known
                body, sig = _signed(secret, _incident("late", "a:b.late"))
                answer = await http.post(path, content=body, headers={"x-mcd-signature": sig})
                assert answer.status_code == 200  # verified with what it knew; kept
                # an integration the runtime knows nothing of cannot be verified: try again
                unknown = path.rsplit("/", 1)[0] + "/int_" + "f" * 24
                refused = await http.post(unknown, content=body, headers={"x-mcd-signature": sig})
                assert refused.status_code == 503 and refused.headers["retry-after"]

                assert await issues(late_id) == []  # nothing can map it while the core is down
                core = await start(settings, postgres_dsn=dsn, nats_url=url)  # back, same port
                assert await eventually(lambda: issues(late_id), timeout=30) == ["late"]
    finally:
        await core.stop(grace=0)
