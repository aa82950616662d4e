"""Okta's event hooks: the one-time verification, and deliveries of events.

Okta verifies a hook's URL once with a GET carrying `X-Okta-Verification-Challenge`, and
expects `{"verification": <its value>}` back. Every request, that one too, carries the
hook's authentication secret in the header its authentication field names: set it to
`Authorization`, and the secret to the integration's webhook secret. It is checked in
constant time against the integration's webhook secrets (Okta does not sign). A delivery's
id is its `eventId` (the same on Okta's retry).

What the events say goes to the core as one UpdateDirectory (the integration's credential may
do nothing else): suspended and deactivated people lose their sessions, tokens and keys on
every instance, membership changes move their roles. Event types Lily does not map are
ignored, and said so: a delivery of nothing but those is kept as unmapped.

Reconciliation (adapters/okta/poll.py) files its readings as deliveries of the integration
too (`{"lilyReconcile": <UpdateDirectoryRequest as JSON>}`), mapped here in the order read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from adapters.okta import mapping
from adapters.okta.config import OktaSettings
from adapters.spec import Delivery, Handled, LilyClient, Memory, Refused, json_body

CHALLENGE = "x-okta-verification-challenge"
HOOK_EVENT_TYPE = "com.okta.event_hook"
RECONCILE = "lilyReconcile"
HEADER = "authorization"


def _authentic(headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    given = headers.get(HEADER, "").encode()
    # every secret is compared, in constant time
    matched = [hmac.compare_digest(given, s.encode()) for s in secrets]
    if not given or not any(matched):
        raise Refused(401, "missing or wrong Authorization (the event hook's secret)")


class OktaInbound:
    def answer(self, headers: Mapping[str, str], secrets: Sequence[str]) -> dict[str, Any]:
        _authentic(headers, secrets)
        challenge = headers.get(CHALLENGE, "")
        if not challenge or len(challenge) > 1024:
            raise Refused(400, f"no {CHALLENGE} header")
        return {"verification": challenge}

    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        _authentic(headers, secrets)
        payload = json_body(body)
        if not isinstance(payload, dict) or payload.get("eventType") != HOOK_EVENT_TYPE:
            raise Refused(400, f"not an Okta event hook delivery (eventType {HOOK_EVENT_TYPE})")
        events = (payload.get("data") or {}).get("events")
        if not isinstance(events, list):
            raise Refused(400, "no data.events")
        event_id = payload.get("eventId")
        return str(event_id)[:200] if event_id else hashlib.sha256(body).hexdigest()[:40]

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        OktaSettings.model_validate(settings)
        payload = json_body(delivery.body)
        if RECONCILE in payload:
            request = json_format.ParseDict(payload[RECONCILE], policy_pb.UpdateDirectoryRequest())
            what = "reconciliation"
            ignored: list[str] = []
        else:
            now = datetime.fromtimestamp(delivery.received_at, UTC)
            updates, ignored = mapping.hook_updates(payload, now)
            if not updates:
                return Handled("unmapped", f"event types not mapped: {', '.join(ignored)}")
            request = policy_pb.UpdateDirectoryRequest(updates=updates, source="hook")
            what = f"{len(updates)} events"
        done = await policy_grpc.PolicyServiceStub(lily.channel).UpdateDirectory(
            request, metadata=lily.metadata, timeout=lily.timeout
        )
        detail = (
            f"{what}: {done.changed} people changed, {done.stale} stale, "
            f"{done.sessions_revoked} sessions and {done.credentials_revoked} credentials revoked"
        )
        if ignored:
            detail += f"; ignored: {', '.join(ignored)}"
        return Handled("done", detail)
