"""OpenLineage events and their names in Lily, without servers."""

from __future__ import annotations

import pytest

from adapters.openlineage.config import OpenLineageSettings
from adapters.openlineage.mapping import BadEvent, check, dataset_name, plan

PLAIN = OpenLineageSettings()


def test_datasets_are_named_as_openlineage_names_them():
    assert dataset_name("postgres://db:5432", "shop.public.orders", PLAIN) == (
        "postgres://db:5432/shop/public/orders"
    )
    assert dataset_name("snowflake://org-acct", "DB.S.T", PLAIN) == "snowflake://org-acct/DB/S/T"
    assert dataset_name("bigquery", "proj.ds.t", PLAIN) == "bigquery://proj/ds/t"
    assert dataset_name("s3://bucket", "/raw/2026/events.parquet", PLAIN) == (
        "s3://bucket/raw/2026/events.parquet"
    )
    mine = OpenLineageSettings(namespaces={"postgres://db:5432": "pg://prod"})
    assert dataset_name("postgres://db:5432", "shop.public.orders", mine) == (
        "pg://prod/shop/public/orders"
    )


def test_a_job_event_without_facets_maps_to_a_pipeline_and_its_edges():
    event = {
        "eventTime": "2026-12-01T12:00:00Z",
        "producer": "p",
        "job": {"namespace": "dbt", "name": "model.revenue"},
        "inputs": [{"namespace": "bigquery", "name": "p.d.orders"}],
        "outputs": [{"namespace": "bigquery", "name": "p.d.revenue"}],
    }
    assert check(event) == "job"
    said = plan(event, PLAIN)
    job = "openlineage://dbt/model.revenue"
    assert [a.qualified_name for a in said.assets] == [
        job,
        "bigquery://p/d/orders",
        "bigquery://p/d/revenue",
    ]
    assert said.edges == [("bigquery://p/d/orders", job), (job, "bigquery://p/d/revenue")]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ([], "(the body)"),
        ({"producer": "p", "job": {}}, "eventTime"),
        ({"eventTime": "2026-12-01T12:00:00", "producer": "p"}, "eventTime"),  # no offset
        ({"eventTime": "2026-12-01T12:00:00Z"}, "producer"),
        ({"eventTime": "2026-12-01T12:00:00Z", "producer": "p", "job": []}, "job"),
        (
            {"eventTime": "2026-12-01T12:00:00Z", "producer": "p", "dataset": {"name": "x"}},
            "dataset.namespace",
        ),
    ],
)
def test_a_bad_event_names_its_field(event, field):
    with pytest.raises(BadEvent) as bad:
        check(event)
    assert bad.value.path == field
