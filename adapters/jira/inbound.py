"""JIRA's webhooks about Lily's tickets: a ticket moved to done resolves its Lily issue, and
one moved back out of done reopens it. JIRA Cloud signs a webhook registered with a secret
(System > WebHooks) with `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>`, checked in
constant time against the integration's webhook secrets; its delivery id is the
X-Atlassian-Webhook-Identifier header (the same on JIRA's retries)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from adapters.jira import mapping
from adapters.spec import Delivery, Handled, LilyClient, Memory, Refused, json_body

HEADER = "x-hub-signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class JiraInbound:
    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        given = headers.get(HEADER, "")
        if not given or not any(hmac.compare_digest(given, signature(s, body)) for s in secrets):
            raise Refused(403, f"missing or wrong {HEADER}")
        if not isinstance(json_body(body), dict):
            raise Refused(400, "the body is not a JSON object")
        delivery = headers.get("x-atlassian-webhook-identifier", "")
        return delivery[:200] or hashlib.sha256(body).hexdigest()[:40]

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        payload = json_body(delivery.body)
        move = mapping.move_of(payload)
        if move is None:
            return Handled("unmapped", f"{payload.get('webhookEvent', '?')}: not a status move")
        key, to = move
        known = await memory.get(f"issue:{key}")
        if len(known) != 3:
            return Handled("unmapped", f"no Lily issue {key} ticketed by this integration")
        asset_id, source, external_id = known
        stub = metadata_grpc.MetadataServiceStub(lily.channel)
        listed = await stub.ListIssues(
            metadata_pb.ListIssuesRequest(asset_id=asset_id, page_size=1000),
            metadata=lily.metadata,
            timeout=lily.timeout,
        )
        issue = next((i for i in listed.issues if i.issue_id == key), None)
        if issue is None:
            return Handled("unmapped", f"Lily issue {key} is gone")
        want = common_pb.ISSUE_STATUS_RESOLVED if to == "done" else common_pb.ISSUE_STATUS_OPEN
        if (issue.status == common_pb.ISSUE_STATUS_RESOLVED) == (to == "done"):
            return Handled("done", f"issue {key} already {to}")
        changed = common_pb.DataQualityIssue()
        changed.CopyFrom(issue)
        changed.status = want
        if to == "done":
            changed.resolved_at.GetCurrentTime()
        else:
            changed.ClearField("resolved_at")
        await stub.AttachIssue(
            metadata_pb.AttachIssueRequest(asset_id=asset_id, issue=changed),
            metadata=lily.metadata,
            timeout=lily.timeout,
        )
        return Handled("done", f"issue {key} {to} from JIRA ({source} {external_id})")
