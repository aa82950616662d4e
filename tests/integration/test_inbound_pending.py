"""An incident that names a table Lily does not know yet is kept as pending, tried again as it
falls due, and lands on the table once the table arrives: never dropped in silence."""

from __future__ import annotations

import json

import grpc
import httpx
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as O

from tests.helpers import asset, eventually, mc_signature, runtime_key, serving_runtime


async def test_a_pending_incident_lands_once_its_table_arrives(lily, stack, admin_md, md, stub):
    async with grpc.aio.insecure_channel(lily.address) as ch:
        token = await runtime_key(ch, admin_md)
        integration = I.Integration(type="monte_carlo")
        integration.settings.update({"default_prefix": "snowflake://soon"})
        made = await integration_grpc.IntegrationServiceStub(ch).CreateIntegration(
            I.CreateIntegrationRequest(integration=integration), metadata=md
        )
    # a runtime that tries pending deliveries again within moments (not the default minutes)
    async with serving_runtime(
        lily.address, token, stack[1], pending_retry=(0.3,), sweep_every=0.1
    ) as base:
        incident = {
            "action": "incident",
            "type": "open_anomaly_incident",
            "payload": {"incident_id": "soon-1", "event_list": [{"full_table_id": "a:b.t"}]},
        }
        body = json.dumps(incident).encode()
        async with httpx.AsyncClient(base_url=base) as http:
            answer = await http.post(
                made.integration.webhook_path,
                content=body,
                headers={"x-mcd-signature": mc_signature(made.webhook_secret, body)},
            )
        assert answer.status_code == 200

        async def pending() -> bool:
            async with grpc.aio.insecure_channel(lily.address) as ch:
                listed = await integration_grpc.IntegrationServiceStub(ch).ListKeptDeliveries(
                    I.ListKeptDeliveriesRequest(
                        integration_id=made.integration.integration_id,
                        kind=I.KEPT_DELIVERY_KIND_PENDING,
                    ),
                    metadata=md,
                )
            assert listed.deliveries, "not kept yet"
            return True

        await eventually(pending)  # kept, since the table is not there
        made_table = await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("snowflake://soon/a/b/t")]), metadata=md
        )
        table = made_table.results[0].asset_id

        async def attached() -> list[str]:
            listed = await stub.ListIssues(O.ListIssuesRequest(asset_id=table), metadata=md)
            return [i.external_id for i in listed.issues]

        assert await eventually(attached, timeout=15) == ["soon-1"]
