"""policy.proto and integration.proto messages <-> what the policy service takes and answers."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from datetime import UTC, datetime

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from lily.v1 import enforcement_pb2 as enforcement_pb
from lily.v1 import events_pb2 as events_pb
from lily.v1 import integration_pb2
from lily.v1 import policy_pb2 as policy_pb

from core.domain.errors import FieldViolation, InvalidArgument, Unauthenticated
from core.domain.model import TENANT_ID_PATTERN
from core.requestctx import Principal
from core.wire.common import ts_pb
from core.wire.validation import check_text, optional_timestamp, refuse, timestamp_or
from policy.directory import Change, MembershipUpdate, StatusUpdate, Sweep, Update
from policy.enforcement import event_id
from policy.integrations import Draft
from policy.model import (
    CredentialRecord,
    DenialRecord,
    IntegrationRecord,
    KeptRecord,
    PersonRecord,
    ReceiptRecord,
    TenantRecord,
)
from policy.rules import RoleLink, Rule
from policy.sessions import SignedIn

_TENANT_ID = re.compile(TENANT_ID_PATTERN)
_EFFECTS = {
    0: "allow",
    policy_pb.POLICY_EFFECT_ALLOW: "allow",
    policy_pb.POLICY_EFFECT_DENY: "deny",
}
_ISOLATION = {
    policy_pb.TENANT_ISOLATION_SHARED: "SHARED",
    policy_pb.TENANT_ISOLATION_DEDICATED: "DEDICATED",
}
_KINDS = {policy_pb.CREDENTIAL_KIND_API_KEY: "API_KEY", policy_pb.CREDENTIAL_KIND_CLIENT: "CLIENT"}


def rule_from_pb(pb: policy_pb.Policy) -> Rule:
    return Rule(pb.subject, pb.domain, pb.object, pb.action, _EFFECTS.get(pb.effect, "?"))  # type: ignore[arg-type]


def rule_pb(r: Rule) -> policy_pb.Policy:
    effect = policy_pb.POLICY_EFFECT_DENY if r.effect == "deny" else policy_pb.POLICY_EFFECT_ALLOW
    return policy_pb.Policy(
        subject=r.subject, domain=r.domain, object=r.object, action=r.action, effect=effect
    )


def link_from_pb(pb: policy_pb.RoleAssignment) -> RoleLink:
    return RoleLink(pb.subject, pb.role, pb.domain)


def link_pb(g: RoleLink) -> policy_pb.RoleAssignment:
    return policy_pb.RoleAssignment(subject=g.subject, role=g.role, domain=g.domain)


def tenant_pb(t: TenantRecord) -> policy_pb.Tenant:
    return policy_pb.Tenant(
        tenant_id=t.tenant_id,
        display_name=t.display_name,
        isolation=policy_pb.TenantIsolation.Value(f"TENANT_ISOLATION_{t.isolation}"),
        state=policy_pb.TenantState.Value(f"TENANT_STATE_{t.state}"),
        created_at=ts_pb(t.created_at),
        error=t.error,
    )


def credential_pb(c: CredentialRecord) -> policy_pb.Credential:
    return policy_pb.Credential(
        credential_id=c.credential_id,
        tenant_id=c.tenant_id,
        kind=policy_pb.CredentialKind.Value(f"CREDENTIAL_KIND_{c.kind}"),
        subject=c.subject,
        roles=c.roles,
        description=c.description,
        created_by=c.created_by,
        created_at=ts_pb(c.created_at),
        revoked_at=ts_pb(c.revoked_at),
    )


def denial_pb(d: DenialRecord) -> policy_pb.Denial:
    return policy_pb.Denial(
        time=ts_pb(d.at),
        subject=d.subject,
        method=d.method,
        object=d.object,
        action=d.action,
        code=d.code,
        reason=d.reason,
        request_id=d.request_id,
        origin=d.origin,
    )


def required(request: Message, *fields: str) -> None:
    """InvalidArgument naming each of `fields` left empty (a message field: left out)."""
    problems = [FieldViolation(f, "is required") for f in fields if not _given(request, f)]
    if problems:
        raise InvalidArgument(problems)


def _given(request: Message, name: str) -> bool:
    value = getattr(request, name)
    return request.HasField(name) if isinstance(value, Message) else bool(value)


def basic_credentials(context: grpc.aio.ServicerContext) -> tuple[str, str] | None:
    """The client id and secret of an `Authorization: Basic` header, if there is one (each
    form-urlencoded before base64, as RFC 6749 2.3.1 says)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthenticated("the Basic credentials are not base64 of id:secret") from None
            client_id, colon, secret = decoded.partition(":")
            if not colon:
                raise Unauthenticated("the Basic credentials are not base64 of id:secret")
            return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
    return None


def tenant_from_pb(t: policy_pb.Tenant) -> tuple[str, str, str]:
    """A CreateTenant's tenant id, display name and isolation (SHARED unless given)."""
    problems: list[FieldViolation] = []
    if not _TENANT_ID.match(t.tenant_id):
        problems.append(
            FieldViolation(
                "tenant.tenant_id",
                "must be 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit",
            )
        )
    check_text("tenant.display_name", t.display_name, 800, problems)
    if t.isolation not in (0, *_ISOLATION):
        problems.append(FieldViolation("tenant.isolation", "is not a TenantIsolation"))
    refuse(problems)
    return t.tenant_id, t.display_name, _ISOLATION.get(t.isolation, "SHARED")


def kind_from_pb(kind: policy_pb.CredentialKind.ValueType) -> str:
    """A credential kind's name ("" for none: the policy service refuses it)."""
    return _KINDS.get(kind, "")


# -- integrations


def integration_pb(i: IntegrationRecord, webhook_path: str) -> integration_pb2.Integration:
    """An integration as callers see it: the names of its secrets, never their values."""
    pb = integration_pb2.Integration(
        integration_id=i.integration_id,
        tenant_id=i.tenant_id,
        type=i.type,
        display_name=i.display_name,
        secret_names=list(i.secret_names),
        disabled=not i.enabled,
        webhook_path=webhook_path,
        credential_id=i.credential_id,
        created_by=i.created_by,
        created_at=ts_pb(i.created_at),
        updated_at=ts_pb(i.updated_at),
    )
    pb.settings.update(i.settings)
    if (rotated := ts_pb(i.secret_rotated_at)) is not None:
        pb.secret_rotated_at.CopyFrom(rotated)
    return pb


def integration_draft(pb: integration_pb2.Integration) -> Draft:
    return Draft(
        type=pb.type,
        display_name=pb.display_name,
        settings=json_format.MessageToDict(pb.settings) if pb.HasField("settings") else None,
        secrets=dict(pb.secrets),
        enabled=not pb.disabled,
    )


KEPT_KINDS = {
    integration_pb2.KEPT_DELIVERY_KIND_UNMAPPED: "unmapped",
    integration_pb2.KEPT_DELIVERY_KIND_PENDING: "pending",
    integration_pb2.KEPT_DELIVERY_KIND_DEAD: "dead",
}
_KEPT_PB = {name: number for number, name in KEPT_KINDS.items()}


def kept_kind_from_pb(kind: integration_pb2.KeptDeliveryKind.ValueType) -> str:
    if kind and kind not in KEPT_KINDS:
        raise InvalidArgument([FieldViolation("kind", "is not a KeptDeliveryKind")])
    return KEPT_KINDS.get(kind, "")


def kept_pb(k: KeptRecord) -> integration_pb2.KeptDelivery:
    return integration_pb2.KeptDelivery(
        sequence=k.sequence,
        delivery_id=k.delivery_id,
        kind=_KEPT_PB.get(k.kind, integration_pb2.KEPT_DELIVERY_KIND_UNSPECIFIED),
        reason=k.reason,
        received_at=ts_pb(k.received_at),
        kept_at=ts_pb(k.kept_at),
        body=k.body[: 64 * 1024].decode("utf-8", "replace"),
    )


# -- enforcement

STATES = {
    enforcement_pb.ENFORCEMENT_STATE_OPEN: "open",
    enforcement_pb.ENFORCEMENT_STATE_CLOSED: "closed",
}
OUTCOMES = {
    enforcement_pb.ENFORCEMENT_OUTCOME_APPLIED: "applied",
    enforcement_pb.ENFORCEMENT_OUTCOME_FAILED: "failed",
    enforcement_pb.ENFORCEMENT_OUTCOME_DRIFTED: "drifted",
}
_STATES_PB = {name: number for number, name in STATES.items()}
_OUTCOMES_PB = {name: number for number, name in OUTCOMES.items()}
_EVENT_KINDS = {
    "applied": events_pb.CHANGE_KIND_APPLIED,
    "failed": events_pb.CHANGE_KIND_FAILED,
    "drifted": events_pb.CHANGE_KIND_DRIFTED,
}


def outcome_from_pb(outcome: enforcement_pb.EnforcementOutcome.ValueType) -> str:
    if outcome and outcome not in OUTCOMES:
        raise InvalidArgument([FieldViolation("outcome", "is not an EnforcementOutcome")])
    return OUTCOMES.get(outcome, "")


def receipt_from_pb(pb: enforcement_pb.EnforcementReceipt) -> ReceiptRecord:
    return ReceiptRecord(
        integration_id=pb.integration_id,
        tenant_id="",
        asset_id=pb.asset_id,
        qualified_name=pb.qualified_name,
        target_object=pb.target_object,
        desired=STATES.get(pb.desired, ""),
        applied=STATES.get(pb.applied, ""),
        outcome=OUTCOMES.get(pb.outcome, ""),
        asset_version=pb.asset_version,
        restricted_tags=tuple(pb.restricted_tags),
        denied_roles=tuple(pb.denied_roles),
        applied_at=pb.applied_at.ToDatetime(tzinfo=UTC),
        statements=tuple(pb.statements),
        taken=tuple(pb.taken),
        detail=pb.detail,
    )


def receipt_pb(r: ReceiptRecord) -> enforcement_pb.EnforcementReceipt:
    return enforcement_pb.EnforcementReceipt(
        integration_id=r.integration_id,
        tenant_id=r.tenant_id,
        asset_id=r.asset_id,
        qualified_name=r.qualified_name,
        target_object=r.target_object,
        desired=_STATES_PB.get(r.desired, enforcement_pb.ENFORCEMENT_STATE_UNSPECIFIED),
        applied=_STATES_PB.get(r.applied, enforcement_pb.ENFORCEMENT_STATE_UNSPECIFIED),
        outcome=_OUTCOMES_PB.get(r.outcome, enforcement_pb.ENFORCEMENT_OUTCOME_UNSPECIFIED),
        asset_version=r.asset_version,
        restricted_tags=list(r.restricted_tags),
        denied_roles=list(r.denied_roles),
        applied_at=ts_pb(r.applied_at),
        statements=list(r.statements),
        taken=list(r.taken),
        detail=r.detail,
    )


def receipt_event(r: ReceiptRecord) -> tuple[str, str, bytes]:
    """A kept receipt as its change event: (subject, event id, ChangeEvent bytes)."""
    eid = event_id(r)
    event = events_pb.ChangeEvent(
        event_id=eid,
        tenant_id=r.tenant_id,
        entity=events_pb.ENTITY_KIND_ENFORCEMENT,
        change=_EVENT_KINDS[r.outcome],
        asset_id=r.asset_id,
        qualified_name=r.qualified_name,
        asset_version=r.asset_version,
        actor=r.integration_id,
        occurred_at=ts_pb(r.applied_at),
        enforcement=receipt_pb(r),
    )
    return f"lily.{r.tenant_id}.enforcement.{r.outcome}", eid, event.SerializeToString()


PERSON_STATUSES = {
    policy_pb.PERSON_STATUS_ACTIVE: "ACTIVE",
    policy_pb.PERSON_STATUS_SUSPENDED: "SUSPENDED",
    policy_pb.PERSON_STATUS_DEPROVISIONED: "DEPROVISIONED",
}
_STATUS_PB = {v: k for k, v in PERSON_STATUSES.items()}


def person_pb(p: PersonRecord) -> policy_pb.Person:
    return policy_pb.Person(
        user_id=p.user_id,
        login=p.login,
        email=p.email,
        status=_STATUS_PB[p.status],
        groups=list(p.groups),
        observed_at=ts_pb(p.observed_at),
        source=p.source,
    )


def status_from_pb(status: policy_pb.PersonStatus.ValueType) -> str:
    """'' for PERSON_STATUS_UNSPECIFIED (directory.check refuses it where it is needed)."""
    return PERSON_STATUSES.get(status, "")


def directory_updates_from_pb(request: policy_pb.UpdateDirectoryRequest) -> list[Update]:
    problems: list[FieldViolation] = []
    out: list[Update] = []
    now = datetime.now(UTC)
    for i, u in enumerate(request.updates):
        path = f"updates[{i}]"
        at = timestamp_or(f"{path}.observed_at", u.observed_at, now, problems)
        which = u.WhichOneof("change")
        change: Change
        if which == "person":
            p = u.person
            change = PersonRecord(
                "",
                p.user_id,
                p.login,
                p.email,
                status_from_pb(p.status),
                tuple(dict.fromkeys(p.groups)),
                "",
                at,
            )
        elif which == "status":
            change = StatusUpdate(u.status.user_id, u.status.login, status_from_pb(u.status.status))
        elif which == "membership":
            m = u.membership
            change = MembershipUpdate(m.user_id, m.login, m.group, m.added)
        elif which == "sweep":
            started = optional_timestamp(f"{path}.sweep.started_at", u.sweep.started_at, problems)
            if started is None:
                problems.append(FieldViolation(f"{path}.sweep.started_at", "must be given"))
                continue
            change = Sweep(started, max(u.sweep.people, 0))
        else:
            problems.append(FieldViolation(path, "give a person, status, membership or sweep"))
            continue
        out.append(Update(at, change))
    refuse(problems)
    return out


def session_pb(s: SignedIn, roles: list[str]) -> policy_pb.Session:
    return policy_pb.Session(
        session_id=s.session_id,
        access_token=s.access_token,
        expires_in=s.expires_in,
        refresh_token=s.refresh_token,
        refresh_expires_at=ts_pb(s.refresh_expires_at),
        principal=principal_pb(s.principal, roles),
    )


def principal_pb(p: Principal, roles: list[str]) -> policy_pb.Principal:
    return policy_pb.Principal(
        subject=p.subject,
        tenant_id=p.tenant_id,
        roles=roles,
        issuer=p.issuer,
        expires_at=(
            ts_pb(datetime.fromtimestamp(p.expires_at, UTC)) if p.expires_at is not None else None
        ),
        credential_id=p.credential_id,
        groups=list(p.groups),
        session_id=p.session_id,
    )
