"""LineageService over gRPC: decode, take the caller, call the service, encode."""

from __future__ import annotations

import re

import grpc
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as lineage_pb
from lily.v1 import lineage_pb2_grpc as lineage_grpc

from core.cells import current_cell
from core.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from core.domain.model import Direction, LineageEdge, WriteContext
from core.domain.rules import asset_id_for
from core.errors import rejection_status
from core.lineage.service import DEFAULT_DEPTH, MAX_DEPTH, LineageNode, LineageService
from core.metadata import mapping
from core.metadata.servicer import MAX_BATCH, require_id, tenant_of, write_context
from core.ports import Access

DEFAULT_TYPE = "DERIVED_FROM"
_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _asset_ref(
    path: str, ref: lineage_pb.AssetRef, tenant_id: str, out: list[FieldViolation]
) -> str:
    """The asset id an AssetRef names (by id, or by qualified name)."""
    which = ref.WhichOneof("ref")
    if which == "qualified_name":
        mapping.check_text(
            f"{path}.qualified_name",
            ref.qualified_name,
            mapping.MAX_QUALIFIED_NAME_BYTES,
            out,
            required=True,
        )
        return asset_id_for(tenant_id, ref.qualified_name)
    if which == "asset_id":
        mapping.check_asset_id(f"{path}.asset_id", ref.asset_id, out)
        return ref.asset_id
    out.append(FieldViolation(path, "needs asset_id or qualified_name"))
    return ""


def _edges(
    inputs: list[lineage_pb.RelationshipInput], ctx: WriteContext, deleted: bool
) -> tuple[list[tuple[int, LineageEdge]], list[lineage_pb.RelationshipResult]]:
    """The valid relationships as edges (with their index), and a REJECTED result for each
    invalid one."""
    if len(inputs) > MAX_BATCH:
        raise InvalidArgument(
            [
                FieldViolation(
                    "relationships", f"has {len(inputs)} entries; at most {MAX_BATCH} per batch"
                )
            ]
        )
    edges, rejected = [], []
    for i, pb in enumerate(inputs):
        path = f"relationships[{i}]"
        problems: list[FieldViolation] = []
        up = _asset_ref(f"{path}.upstream", pb.upstream, ctx.tenant_id, problems)
        down = _asset_ref(f"{path}.downstream", pb.downstream, ctx.tenant_id, problems)
        kind = pb.type or DEFAULT_TYPE
        if not _TYPE.match(kind):
            problems.append(
                FieldViolation(
                    f"{path}.type",
                    "must be 1-64 upper case letters, digits and '_', starting with a letter",
                )
            )
        at = mapping.timestamp_or(
            f"{path}.source_event_time", pb.source_event_time, ctx.now, problems
        )
        if problems:
            rejected.append(
                lineage_pb.RelationshipResult(
                    index=i,
                    relationship=common_pb.Relationship(
                        upstream_asset_id=up, downstream_asset_id=down, type=pb.type
                    ),
                    outcome=lineage_pb.RELATIONSHIP_OUTCOME_REJECTED,
                    error=rejection_status(InvalidArgument(problems)),
                )
            )
        else:
            edges.append((i, LineageEdge(up, down, kind, at, deleted)))
    return edges, rejected


def _node_pb(node: LineageNode) -> lineage_pb.LineageNode:
    a = node.asset
    return lineage_pb.LineageNode(
        asset_id=node.asset_id,
        depth=node.depth,
        exists=a is not None,
        qualified_name=a.qualified_name if a else "",
        asset_type=int(a.asset_type) if a else 0,
        effective_tags=mapping.effective_tags_to_pb(a.tags) if a else [],
        is_deleted=a.is_deleted if a else False,
        open_issue_count=node.open_issues,
        unhealthy_upstream_asset_ids=a.unhealthy_upstream if a else (),
    )


class LineageServicer(lineage_grpc.LineageServiceServicer):
    def __init__(self, access: Access) -> None:
        self._access = access

    @property
    def _svc(self) -> LineageService:
        """The service of the cell this call was routed to (core.cells)."""
        return current_cell().lineage

    async def _write(
        self,
        inputs: list[lineage_pb.RelationshipInput],
        context: grpc.aio.ServicerContext,
        action: str,
        deleted: bool,
    ) -> list[lineage_pb.RelationshipResult]:
        ctx = write_context(context, action)
        edges, rejected = _edges(inputs, ctx, deleted)
        done = await self._svc.write(ctx, edges)
        results = [
            lineage_pb.RelationshipResult(
                index=r.index,
                relationship=mapping.relationship_to_pb(r.edge),
                outcome=int(r.outcome),
            )
            for r in done
        ]
        return sorted([*results, *rejected], key=lambda r: r.index)

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
        problems: list[FieldViolation] = []
        mapping.check_asset_id("asset_id", request.asset_id, problems)
        if request.direction not in (0, *Direction):
            problems.append(FieldViolation("direction", "is not a LineageDirection"))
        if not 0 <= request.depth <= MAX_DEPTH:
            problems.append(FieldViolation("depth", f"must be between 1 and {MAX_DEPTH}"))
        if problems:
            raise InvalidArgument(problems)
        found = await self._svc.lineage(
            tenant,
            request.asset_id,
            Direction(request.direction or Direction.DOWNSTREAM),
            request.depth or DEFAULT_DEPTH,
            request.include_deleted,
        )
        # Nodes carry no field that redaction blanks; an asset the caller may not see at all
        # (restricted_read=refuse) is left out, with its edges.
        hidden = {
            n.asset_id
            for n in found.nodes
            if n.asset is not None
            and self._access.read_view({t.name for t in n.asset.tags}, "GetLineage") == "refused"
        }
        if request.asset_id in hidden:
            raise PermissionDenied(
                f"asset {request.asset_id!r} carries a tag you may not read",
                metadata={"asset_id": request.asset_id},
            )
        return lineage_pb.GetLineageResponse(
            nodes=[_node_pb(n) for n in found.nodes if n.asset_id not in hidden],
            relationships=[
                mapping.relationship_to_pb(e)
                for e in found.edges
                if e.upstream_id not in hidden and e.downstream_id not in hidden
            ],
            truncated=found.truncated,
        )

    async def PropagateDownstream(
        self, request: lineage_pb.PropagateDownstreamRequest, context: grpc.aio.ServicerContext
    ) -> lineage_pb.PropagateDownstreamResponse:
        ctx = write_context(context, "PropagateDownstream")
        require_id("asset_id", request.asset_id)
        job = await self._svc.propagate(ctx, request.asset_id)
        return lineage_pb.PropagateDownstreamResponse(job=mapping.propagation_job_to_pb(job))

    async def GetPropagationJob(
        self, request: lineage_pb.GetPropagationJobRequest, context: grpc.aio.ServicerContext
    ) -> lineage_pb.GetPropagationJobResponse:
        tenant = tenant_of(context)
        require_id("job_id", request.job_id)  # (a job id is an event id: the same form)
        job = await self._svc.propagation_job(tenant, request.job_id)
        return lineage_pb.GetPropagationJobResponse(job=mapping.propagation_job_to_pb(job))
