"""OpenLineage: run, dataset and job events from any producer, as assets and lineage."""

from adapters.openlineage.config import OpenLineageSettings
from adapters.openlineage.inbound import OpenLineageInbound
from adapters.spec import AdapterType

ADAPTER = AdapterType(
    name="openlineage",
    role="integration_openlineage",
    settings=OpenLineageSettings,
    webhook="openlineage",
    inbound=OpenLineageInbound(),
    ordered=False,  # each event carries its time: Lily's last-writer-wins orders them
)
