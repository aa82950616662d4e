"""lineage.proto requests and replies <-> what LineageService takes and answers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as lineage_pb

from core.domain.errors import FieldViolation, InvalidArgument
from core.domain.model import Direction, LineageEdge, PropagationJob, WriteContext
from core.domain.rules import asset_id_for
from core.lineage.service import DEFAULT_DEPTH, MAX_DEPTH, EdgeResult, Lineage, LineageNode
from core.wire.common import effective_tags_to_pb, relationship_to_pb, ts_pb
from core.wire.status import to_status
from core.wire.validation import (
    MAX_QUALIFIED_NAME_BYTES,
    check_asset_id,
    check_batch,
    check_text,
    refuse,
    timestamp_or,
)

DEFAULT_TYPE = "DERIVED_FROM"
_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _asset_ref(
    path: str, ref: lineage_pb.AssetRef, tenant_id: str, out: list[FieldViolation]
) -> str:
    """The asset id an AssetRef names (by id, or by qualified name)."""
    which = ref.WhichOneof("ref")
    if which == "qualified_name":
        check_text(
            f"{path}.qualified_name",
            ref.qualified_name,
            MAX_QUALIFIED_NAME_BYTES,
            out,
            required=True,
        )
        return asset_id_for(tenant_id, ref.qualified_name)
    if which == "asset_id":
        check_asset_id(f"{path}.asset_id", ref.asset_id, out)
        return ref.asset_id
    out.append(FieldViolation(path, "needs asset_id or qualified_name"))
    return ""


def edges_from_pb(
    inputs: Sequence[lineage_pb.RelationshipInput], ctx: WriteContext, deleted: bool
) -> tuple[list[tuple[int, LineageEdge]], list[lineage_pb.RelationshipResult]]:
    """The valid relationships as edges (with their index), and a REJECTED result for each
    invalid one."""
    check_batch("relationships", len(inputs))
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
        at = timestamp_or(f"{path}.source_event_time", pb.source_event_time, ctx.now, problems)
        if problems:
            rejected.append(
                lineage_pb.RelationshipResult(
                    index=i,
                    relationship=common_pb.Relationship(
                        upstream_asset_id=up, downstream_asset_id=down, type=pb.type
                    ),
                    outcome=lineage_pb.RELATIONSHIP_OUTCOME_REJECTED,
                    error=to_status(InvalidArgument(problems)),
                )
            )
        else:
            edges.append((i, LineageEdge(up, down, kind, at, deleted)))
    return edges, rejected


def results_to_pb(
    done: Sequence[EdgeResult], rejected: Sequence[lineage_pb.RelationshipResult]
) -> list[lineage_pb.RelationshipResult]:
    """One result per relationship of the call, in its order."""
    results = [
        lineage_pb.RelationshipResult(
            index=r.index,
            relationship=relationship_to_pb(r.edge),
            outcome=lineage_pb.RelationshipOutcome.ValueType(r.outcome),
        )
        for r in done
    ]
    return sorted([*results, *rejected], key=lambda r: r.index)


def walk_from_pb(request: lineage_pb.GetLineageRequest) -> tuple[Direction, int]:
    """A GetLineage's direction (DOWNSTREAM unless given) and depth (DEFAULT_DEPTH unless
    given)."""
    problems: list[FieldViolation] = []
    check_asset_id("asset_id", request.asset_id, problems)
    if request.direction not in (0, *Direction):
        problems.append(FieldViolation("direction", "is not a LineageDirection"))
    if not 0 <= request.depth <= MAX_DEPTH:
        problems.append(FieldViolation("depth", f"must be between 1 and {MAX_DEPTH}"))
    refuse(problems)
    return Direction(request.direction or Direction.DOWNSTREAM), request.depth or DEFAULT_DEPTH


def _node_pb(node: LineageNode) -> lineage_pb.LineageNode:
    a = node.asset
    return lineage_pb.LineageNode(
        asset_id=node.asset_id,
        depth=node.depth,
        exists=a is not None,
        qualified_name=a.qualified_name if a else "",
        asset_type=common_pb.AssetType.ValueType(a.asset_type if a else 0),
        effective_tags=effective_tags_to_pb(a.tags) if a else [],
        is_deleted=a.is_deleted if a else False,
        open_issue_count=node.open_issues,
        unhealthy_upstream_asset_ids=a.unhealthy_upstream if a else (),
    )


def lineage_to_pb(found: Lineage) -> lineage_pb.GetLineageResponse:
    return lineage_pb.GetLineageResponse(
        nodes=[_node_pb(n) for n in found.nodes],
        relationships=[relationship_to_pb(e) for e in found.edges],
        truncated=found.truncated,
    )


def propagation_job_to_pb(job: PropagationJob) -> lineage_pb.PropagationJob:
    return lineage_pb.PropagationJob(
        job_id=job.job_id,
        asset_id=job.asset_id,
        state=lineage_pb.PropagationJobState.ValueType(job.state),
        assets_total=job.assets_total,
        assets_done=job.assets_done,
        assets_changed=job.assets_changed,
        requested_by=job.requested_by,
        error=job.error,
        created_at=ts_pb(job.created_at),
        updated_at=ts_pb(job.updated_at),
        finished_at=ts_pb(job.finished_at),
    )
