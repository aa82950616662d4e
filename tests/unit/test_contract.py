"""The contract: generated code matches the protos, buf lint passes, and every RPC has the REST
route the API promises (client-streaming RPCs are gRPC only; WatchChanges is served as SSE)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from lily.v1 import metadata_pb2

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

ROUTES = {
    "IngestMetadata": ("post", "/api/v1/metadata", "*"),
    "GetMetadata": ("get", "/api/v1/metadata/{asset_id}", ""),
    "LookupMetadata": ("get", "/api/v1/metadata:lookup", ""),
    "UpdateMetadata": ("patch", "/api/v1/metadata/{asset_id}", "asset"),
    "DeleteMetadata": ("delete", "/api/v1/metadata/{asset_id}", ""),
    "SearchMetadata": ("get", "/api/v1/metadata:search", ""),
    "UpdateTags": ("post", "/api/v1/metadata/{asset_id}/tags", "*"),
    "AttachIssue": ("post", "/api/v1/metadata/{asset_id}/issues", "issue"),
    "ListIssues": ("get", "/api/v1/metadata/{asset_id}/issues", ""),
    "GetAuditTrail": ("get", "/api/v1/metadata/{asset_id}/audit", ""),
    "CreateBulkJob": ("post", "/api/v1/metadata/bulk", "*"),
    "GetBulkJob": ("get", "/api/v1/metadata/bulk/{job_id}", ""),
    "WatchChanges": ("get", "/api/v1/metadata:watch", ""),
}
CLIENT_STREAMING = {"IngestMetadataStream"}


def test_generated_code_matches_the_protos():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr


def test_buf_lint_passes():
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )  # also places the google/api deps for buf
    run = subprocess.run([str(BIN / "buf"), "lint"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_rpc_has_its_route_but_client_streams():
    service = metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"]
    assert {m.name for m in service.methods} == set(ROUTES) | CLIENT_STREAMING
    for method in service.methods:
        opts = method.GetOptions()
        if method.name in CLIENT_STREAMING:
            assert method.client_streaming
            assert not opts.HasExtension(annotations_pb2.http)
            continue
        rule: http_pb2.HttpRule = opts.Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert (verb, getattr(rule, verb), rule.body) == ROUTES[method.name], method.name


def test_domain_enums_mirror_their_proto_enums_number_for_number():
    """The servicers pass these across as plain ints: a renumbered or missing value would
    silently mean something else."""
    from lily.v1 import common_pb2, events_pb2, lineage_pb2, quality_pb2

    from core.domain.model import (
        AssetType,
        ChangeKind,
        Direction,
        EdgeOutcome,
        EntityKind,
        TagSource,
    )
    from core.domain.quality import RuleType

    pairs = [
        (AssetType, common_pb2.AssetType, "ASSET_TYPE_"),
        (TagSource, common_pb2.TagSource, "TAG_SOURCE_"),
        (EntityKind, events_pb2.EntityKind, "ENTITY_KIND_"),
        (ChangeKind, events_pb2.ChangeKind, "CHANGE_KIND_"),
        (Direction, lineage_pb2.LineageDirection, "LINEAGE_DIRECTION_"),
        (EdgeOutcome, lineage_pb2.RelationshipOutcome, "RELATIONSHIP_OUTCOME_"),
        (RuleType, quality_pb2.RuleType, "RULE_TYPE_"),
    ]
    for domain, proto, prefix in pairs:
        for member in domain:
            assert proto.Value(prefix + member.name) == member.value, (domain, member)
