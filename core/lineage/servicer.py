"""LineageService over gRPC: decode, take the caller, call the service, encode."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc

from core.lineage import mapping
from core.lineage.service import LineageService
from core.wire.context import tenant_of, write_context
from core.wire.validation import require_id


class LineageServicer(lineage_grpc.LineageServiceServicer):
    def __init__(self, service: Callable[[], LineageService]) -> None:
        # The service of the cell the call was routed to (core.cells, by the interceptor).
        self._service = service

    async def _write(
        self,
        inputs: list[lineage_pb.RelationshipInput],
        context: grpc.aio.ServicerContext,
        action: str,
        deleted: bool,
    ) -> list[lineage_pb.RelationshipResult]:
        ctx = write_context(context, action)
        edges, rejected = mapping.edges_from_pb(inputs, ctx, deleted)
        done = await self._service().write(ctx, edges)
        return mapping.results_to_pb(done, rejected)

    async def IngestRelationships(
        self,
        request: lineage_pb.IngestRelationshipsRequest,
        context: grpc.aio.ServicerContext,
    ) -> lineage_pb.IngestRelationshipsResponse:
        results = await self._write(
            list(request.relationships), context, "IngestRelationships", deleted=False
        )
        return lineage_pb.IngestRelationshipsResponse(results=results)

    async def DeleteRelationships(
        self,
        request: lineage_pb.DeleteRelationshipsRequest,
        context: grpc.aio.ServicerContext,
    ) -> lineage_pb.DeleteRelationshipsResponse:
        results = await self._write(
            list(request.relationships), context, "DeleteRelationships", deleted=True
        )
        return lineage_pb.DeleteRelationshipsResponse(results=results)

    async def GetLineage(
        self, request: lineage_pb.GetLineageRequest, context: grpc.aio.ServicerContext
    ) -> lineage_pb.GetLineageResponse:
        tenant = tenant_of(context)
        direction, depth = mapping.walk_from_pb(request)
        found = await self._service().lineage(
            tenant, request.asset_id, direction, depth, request.include_deleted
        )
        return mapping.lineage_to_pb(found)

    async def PropagateDownstream(
        self, request: lineage_pb.PropagateDownstreamRequest, context: grpc.aio.ServicerContext
    ) -> lineage_pb.PropagateDownstreamResponse:
        ctx = write_context(context, "PropagateDownstream")
        require_id("asset_id", request.asset_id)
        job = await self._service().propagate(ctx, request.asset_id)
        return lineage_pb.PropagateDownstreamResponse(job=mapping.propagation_job_to_pb(job))

    async def GetPropagationJob(
        self, request: lineage_pb.GetPropagationJobRequest, context: grpc.aio.ServicerContext
    ) -> lineage_pb.GetPropagationJobResponse:
        tenant = tenant_of(context)
        require_id("job_id", request.job_id)  # (a job id is an event id: the same form)
        job = await self._service().propagation_job(tenant, request.job_id)
        return lineage_pb.GetPropagationJobResponse(job=mapping.propagation_job_to_pb(job))
