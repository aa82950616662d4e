"""OpenLineage events from any producer: the stock openlineage-python HTTP transport, given
Lily's URL, the integration's webhook path as its endpoint and the integration's webhook
secret as its api_key, POSTs each event with `Authorization: Bearer <api_key>`. An event is
checked at the door (400 naming the field), then its datasets, job and columns are ingested as
assets and its lineage as relationships, all at the event's time: an older or repeated event
changes nothing newer (Lily's last-writer-wins by source event time)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import quality_pb2 as quality_pb
from lily.v1 import quality_pb2_grpc as quality_grpc

from adapters.openlineage.config import OpenLineageSettings
from adapters.openlineage.mapping import BadEvent, Plan, check, plan
from adapters.spec import Delivery, Handled, LilyClient, Memory, Refused, json_body

BATCH = 1000
_TYPES = {
    "TABLE": common_pb.ASSET_TYPE_TABLE,
    "COLUMN": common_pb.ASSET_TYPE_COLUMN,
    "PIPELINE": common_pb.ASSET_TYPE_PIPELINE,
}


class OpenLineageInbound:
    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        given = headers.get("authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else ""
        matched = False
        for secret in secrets:  # each compared in constant time
            matched |= hmac.compare_digest(token.encode(), secret.encode())
        if not token or not matched:
            raise Refused(401, "missing or wrong API key (Authorization: Bearer <api key>)")
        try:
            check(json_body(body))
        except BadEvent as bad:
            raise Refused(400, str(bad)) from None
        return hashlib.sha256(body).hexdigest()[:40]

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        event = json_body(delivery.body)
        check(event)
        said = plan(event, OpenLineageSettings.model_validate(settings))
        when = Timestamp()
        when.FromDatetime(said.event_time)
        assets = [
            common_pb.AssetInput(
                qualified_name=a.qualified_name,
                asset_type=_TYPES[a.kind],
                name=a.name,
                description=a.description,
                owners=list(a.owners),
                parent_qualified_name=a.parent,
                attributes={"data_type": a.data_type} if a.data_type else {},
                source_event_time=when,
            )
            for a in said.assets
        ]
        stub = metadata_grpc.MetadataServiceStub(lily.channel)
        refused: list[str] = []
        for i in range(0, len(assets), BATCH):
            done = await stub.IngestMetadata(
                metadata_pb.IngestMetadataRequest(assets=assets[i : i + BATCH]),
                metadata=lily.metadata,
                timeout=lily.timeout,
            )
            refused += [
                f"{r.qualified_name}: {r.error.message}"
                for r in done.results
                if r.outcome == metadata_pb.INGEST_OUTCOME_REJECTED
            ]
        edges = [
            lineage_pb.RelationshipInput(
                upstream=lineage_pb.AssetRef(qualified_name=up),
                downstream=lineage_pb.AssetRef(qualified_name=down),
                source_event_time=when,
            )
            for up, down in said.edges
        ]
        lineage = lineage_grpc.LineageServiceStub(lily.channel)
        for i in range(0, len(edges), BATCH):
            linked = await lineage.IngestRelationships(
                lineage_pb.IngestRelationshipsRequest(relationships=edges[i : i + BATCH]),
                metadata=lily.metadata,
                timeout=lily.timeout,
            )
            refused += [
                f"edge {said.edges[i + r.index]}: {r.error.message}"
                for r in linked.results
                if r.outcome == lineage_pb.RELATIONSHIP_OUTCOME_REJECTED
            ]
        if said.reads:
            await self._usage(said, lily)
        if refused:  # dead-lettered with why: the rest of it stays written
            raise RuntimeError(f"{len(refused)} refused, first: {refused[0]}")
        return Handled("done", f"{len(assets)} assets, {len(edges)} edges, {len(said.reads)} reads")

    async def _usage(self, said: Plan, lily: LilyClient) -> None:
        """A completed run's reads: one query of each input, in the hour of the event."""
        hour = said.event_time.replace(minute=0, second=0, microsecond=0)
        start, end = Timestamp(), Timestamp()
        start.FromDatetime(hour)
        end.FromDatetime(hour + timedelta(hours=1))
        usage = [
            quality_pb.Usage(
                qualified_name=qn,
                window_start=start,
                window_end=end,
                query_count=1,
                run_id=said.run_id,
            )
            for qn in said.reads
        ]
        stub = quality_grpc.DataQualityServiceStub(lily.channel)
        for i in range(0, len(usage), BATCH):
            await stub.RecordUsage(
                quality_pb.RecordUsageRequest(usage=usage[i : i + BATCH]),
                metadata=lily.metadata,
                timeout=lily.timeout,
            )
