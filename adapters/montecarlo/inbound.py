"""Monte Carlo's webhooks: verified at the door (adapters/montecarlo/signature.py), then mapped
(adapters/montecarlo/mapping.py) onto issues of the assets they concern, through Lily's gRPC
API with the integration's own credential.

An incident is one issue per asset it names (source `monte_carlo`, external id its incident
id), so a repeated delivery, or a webhook and a poll of the same incident, changes nothing
twice (AttachIssue leaves an identical issue alone). A poll (adapters/montecarlo/poll.py)
reads the incident as it stands: it updates the status and severity of the issue there is, or
makes it if the webhook never came. An update that names no table reaches
the assets its incident was attached to, which the runtime remembers (adapters.spec.Memory)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from adapters.montecarlo import signature
from adapters.montecarlo.config import MonteCarloSettings
from adapters.montecarlo.mapping import SOURCE, IncidentChange, Unmapped, change_of
from adapters.spec import Delivery, Handled, LilyClient, Memory, Refused, json_body

_STATUS = {
    "OPEN": common_pb.ISSUE_STATUS_OPEN,
    "ACKNOWLEDGED": common_pb.ISSUE_STATUS_ACKNOWLEDGED,
    "RESOLVED": common_pb.ISSUE_STATUS_RESOLVED,
}
_SEVERITY = {
    "LOW": common_pb.ISSUE_SEVERITY_LOW,
    "MEDIUM": common_pb.ISSUE_SEVERITY_MEDIUM,
    "HIGH": common_pb.ISSUE_SEVERITY_HIGH,
    "CRITICAL": common_pb.ISSUE_SEVERITY_CRITICAL,
}


def _parse(body: bytes) -> dict[str, Any]:
    parsed = json_body(body)  # the signature is over Python's reading of it
    if not isinstance(parsed, dict):
        raise Refused(400, "the body is not a JSON object")
    return parsed


class MonteCarloInbound:
    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        parsed = _parse(body)
        if not signature.verify(headers.get(signature.HEADER), parsed, secrets):
            raise Refused(403, f"missing or wrong {signature.HEADER}")
        payload = parsed.get("payload")
        incident = payload.get("incident_id") if isinstance(payload, dict) else None
        digest = hashlib.sha256(body).hexdigest()[:32]
        return f"{incident if isinstance(incident, str) else 'none'}.{digest}"[:200]

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        change = change_of(_parse(delivery.body), MonteCarloSettings.model_validate(settings))
        if isinstance(change, Unmapped):
            return Handled("unmapped", change.reason)
        stub = metadata_grpc.MetadataServiceStub(lily.channel)
        found: list[str] = []
        missing: list[str] = list(change.unnamed)
        for name in change.qualified_names:
            try:
                got = await stub.LookupMetadata(
                    metadata_pb.LookupMetadataRequest(qualified_name=name),
                    metadata=lily.metadata,
                    timeout=lily.timeout,
                )
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                missing.append(name)
                continue
            found.append(got.asset.asset_id)
        if not change.opened and not change.qualified_names:
            found = await memory.get(change.incident_id)  # where it was attached
        for asset_id in found:
            await self._attach(stub, lily, asset_id, change, delivery.received_at)
        if change.qualified_names and found:
            await memory.put(change.incident_id, found)
        if missing or not found:
            what = ", ".join(missing) or "no table"
            return Handled("pending", f"incident {change.incident_id} names {what}")
        return Handled("done", f"incident {change.incident_id} on {len(found)} asset(s)")

    async def _attach(
        self,
        stub: metadata_grpc.MetadataServiceStub,
        lily: LilyClient,
        asset_id: str,
        change: IncidentChange,
        received_at: float,
    ) -> None:
        issue = common_pb.DataQualityIssue(external_id=change.incident_id, source=SOURCE)
        if not change.opened:  # an update: what is there, with what changed
            listed = await stub.ListIssues(
                metadata_pb.ListIssuesRequest(asset_id=asset_id),
                metadata=lily.metadata,
                timeout=lily.timeout,
            )
            for existing in listed.issues:
                if existing.source == SOURCE and existing.external_id == change.incident_id:
                    issue.CopyFrom(existing)
                    break
            else:  # the incident Lily has not seen (a poll says what it is)
                issue.title = change.title or f"Monte Carlo incident {change.incident_id}"
                issue.type = change.kind
                issue.description = change.description
        else:
            issue.type = change.kind
            issue.title = change.title
            issue.description = change.description
        if change.url:
            issue.url = change.url
        if change.status:
            issue.status = _STATUS[change.status]
        if change.severity:
            issue.severity = _SEVERITY[change.severity]
        if issue.status == common_pb.ISSUE_STATUS_RESOLVED and not issue.HasField("resolved_at"):
            issue.resolved_at.FromDatetime(datetime.fromtimestamp(received_at, UTC))
        elif issue.status != common_pb.ISSUE_STATUS_RESOLVED:
            issue.ClearField("resolved_at")
        for name in ("issue_id", "asset_id", "updated_at"):
            issue.ClearField(name)  # Lily's to set
        await stub.AttachIssue(
            metadata_pb.AttachIssueRequest(asset_id=asset_id, issue=issue),
            metadata=lily.metadata,
            timeout=lily.timeout,
        )
