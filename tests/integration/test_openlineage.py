"""OpenLineage in: the stock openlineage-python client, its HTTP transport given Lily's URL, the
integration's webhook path as endpoint and its secret as api_key, unchanged. Datasets become
assets, jobs pipelines, inputs -> job -> outputs lineage, schema facets columns, columnLineage
column edges, ownership and documentation their fields; order is by event time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from lily.v1 import common_pb2 as C
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import quality_pb2 as Q
from lily.v1 import quality_pb2_grpc as quality_grpc
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    Dataset,
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    column_lineage_dataset,
    documentation_dataset,
    ownership_dataset,
    schema_dataset,
)
from openlineage.client.transport.http import HttpConfig, HttpTransport

from tests.helpers import eventually

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.0.0/integration/airflow"
ORDERS = "postgres://shop-db:5432/shop/public/orders"
REVENUE = "snowflake://acct/analytics/marts/revenue"


@pytest.fixture
async def client(inbound, channel, md):
    """The stock client, configured as the README says."""
    made = await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
        I.CreateIntegrationRequest(integration=I.Integration(type="openlineage")), metadata=md
    )
    config = HttpConfig.from_dict(
        {
            "url": inbound,
            "endpoint": made.integration.webhook_path.lstrip("/"),
            "auth": {"type": "api_key", "apiKey": made.webhook_secret},
        }
    )
    return OpenLineageClient(transport=HttpTransport(config)), made


def _at(minutes: int) -> str:
    return (datetime(2026, 12, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat()


def _orders(description: str) -> InputDataset:
    return InputDataset(
        namespace="postgres://shop-db:5432",
        name="shop.public.orders",
        facets={
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(name="id", type="bigint"),
                    schema_dataset.SchemaDatasetFacetFields(name="amount", type="numeric"),
                ]
            ),
            "ownership": ownership_dataset.OwnershipDatasetFacet(
                owners=[ownership_dataset.Owner(name="alice", type="PERSON")]
            ),
            "documentation": documentation_dataset.DocumentationDatasetFacet(
                description=description
            ),
        },
    )


def _revenue() -> OutputDataset:
    return OutputDataset(
        namespace="snowflake://acct",
        name="analytics.marts.revenue",
        facets={
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name="total", type="number")]
            ),
            "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(
                fields={
                    "total": column_lineage_dataset.Fields(
                        inputFields=[
                            column_lineage_dataset.InputField(
                                namespace="postgres://shop-db:5432",
                                name="shop.public.orders",
                                field="amount",
                            )
                        ]
                    )
                }
            ),
        },
    )


async def _lookup(stub, md, name: str) -> C.Asset:
    """The asset of that name (an AssertionError until there is one: for eventually)."""
    try:
        found = await stub.LookupMetadata(O.LookupMetadataRequest(qualified_name=name), metadata=md)
    except grpc.aio.AioRpcError as err:
        assert err.code() != grpc.StatusCode.NOT_FOUND, f"no {name} yet"
        raise
    return found.asset


async def test_a_run_event_from_the_stock_client_becomes_assets_and_lineage(
    client, channel, stub, md
):
    ol, _ = client
    run = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_at(10),
        run=Run(runId=str(uuid.uuid4())),
        job=Job(namespace="airflow", name="daily.revenue"),
        producer=PRODUCER,
        inputs=[_orders("Every order, one row each")],
        outputs=[_revenue()],
    )
    await asyncio.to_thread(ol.emit, run)  # raises on anything but 2xx

    async def landed():
        revenue = await _lookup(stub, md, REVENUE)
        total = await _lookup(stub, md, REVENUE + "/total")  # a column: eventual
        return revenue, total

    revenue, total = await eventually(landed)
    assert revenue.asset_type == C.ASSET_TYPE_TABLE and total.asset_type == C.ASSET_TYPE_COLUMN
    orders = await _lookup(stub, md, ORDERS)
    assert list(orders.owners) == ["alice"] and orders.description == "Every order, one row each"
    job = await _lookup(stub, md, "openlineage://airflow/daily.revenue")
    assert job.asset_type == C.ASSET_TYPE_PIPELINE

    lineage = lineage_grpc.LineageServiceStub(channel)
    up = await lineage.GetLineage(
        L.GetLineageRequest(
            asset_id=revenue.asset_id, direction=L.LINEAGE_DIRECTION_UPSTREAM, depth=2
        ),
        metadata=md,
    )
    names = {n.qualified_name for n in up.nodes}
    assert {"openlineage://airflow/daily.revenue", ORDERS} <= names
    column_up = await lineage.GetLineage(
        L.GetLineageRequest(asset_id=total.asset_id, direction=L.LINEAGE_DIRECTION_UPSTREAM),
        metadata=md,
    )
    assert ORDERS + "/amount" in {n.qualified_name for n in column_up.nodes}

    # the completed run read orders: one query of it, in the hour of the event, once per run
    usage = quality_grpc.DataQualityServiceStub(channel)

    async def queries() -> list[int]:
        got = await usage.ListUsage(Q.ListUsageRequest(asset_id=orders.asset_id), metadata=md)
        return [u.query_count for u in got.usage]

    assert await eventually(queries) == [1]
    await asyncio.to_thread(ol.emit, run)  # the same run again: not counted twice
    again = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_at(11),
        run=Run(runId=str(uuid.uuid4())),
        job=Job(namespace="airflow", name="daily.revenue"),
        producer=PRODUCER,
        inputs=[_orders("Every order, one row each")],
        outputs=[],
    )
    await asyncio.to_thread(ol.emit, again)

    async def two() -> bool:
        assert await queries() == [2]
        return True

    await eventually(two)
    await asyncio.sleep(0.5)
    assert await queries() == [2]

    # an older event (out of order) changes nothing newer; a newer one does
    older = DatasetEvent(eventTime=_at(5), producer=PRODUCER, dataset=_as_dataset("stale"))
    newer = DatasetEvent(eventTime=_at(20), producer=PRODUCER, dataset=_as_dataset("fresh"))
    await asyncio.to_thread(ol.emit, older)
    await asyncio.to_thread(ol.emit, newer)

    async def fresh():
        assert (await _lookup(stub, md, ORDERS)).description == "fresh"
        return True

    await eventually(fresh)
    job_event = JobEvent(
        eventTime=_at(30),
        producer=PRODUCER,
        job=Job(namespace="airflow", name="weekly.rollup"),
        inputs=[InputDataset(namespace="snowflake://acct", name="analytics.marts.revenue")],
        outputs=[],
    )
    await asyncio.to_thread(ol.emit, job_event)
    await eventually(lambda: _lookup(stub, md, "openlineage://airflow/weekly.rollup"))


def _as_dataset(description: str) -> Dataset:
    orders = _orders(description)
    return Dataset(namespace=orders.namespace, name=orders.name, facets=orders.facets)


async def test_a_bad_event_or_key_is_refused_naming_what_is_wrong(client, inbound):
    _, made = client
    path, key = made.integration.webhook_path, made.webhook_secret
    good = {
        "eventType": "COMPLETE",
        "eventTime": _at(1),
        "producer": PRODUCER,
        "run": {"runId": str(uuid.uuid4())},
        "job": {"namespace": "airflow", "name": "j"},
        "inputs": [],
        "outputs": [],
    }
    cases = [
        ({k: v for k, v in good.items() if k != "eventTime"}, "eventTime"),
        ({**good, "eventTime": "yesterday"}, "eventTime"),
        ({**good, "job": {"namespace": "airflow"}}, "job.name"),
        ({**good, "inputs": [{"namespace": "pg://x"}]}, "inputs[0].name"),
        ({**good, "run": {}}, "run.runId"),
    ]
    async with httpx.AsyncClient(base_url=inbound, timeout=10) as http:
        auth = {"Authorization": f"Bearer {key}"}
        for body, field in cases:
            answer = await http.post(path, json=body, headers=auth)
            assert answer.status_code == 400, (field, answer.text)
            assert field in answer.json()["error"], (field, answer.text)
        assert (await http.post(path, json=good)).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key"}
        assert (await http.post(path, json=good, headers=wrong)).status_code == 401
        assert (await http.post(path, json=good, headers=auth)).status_code == 200
