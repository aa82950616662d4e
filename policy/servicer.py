"""PolicyService over gRPC: decode, take the caller, call the policy service, encode."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.domain.errors import FieldViolation, InvalidArgument, Unauthenticated
from core.domain.model import TENANT_ID_PATTERN
from core.metadata.service import MetadataService
from core.wire.common import ts_pb
from core.wire.context import principal_of
from core.wire.validation import check_text, require_id
from policy.rules import RoleLink, Rule
from policy.service import PolicyService, asset_access, roles_of
from policy.store import CredentialRecord, DenialRecord, TenantRecord

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


def _rule(pb: policy_pb.Policy) -> Rule:
    return Rule(pb.subject, pb.domain, pb.object, pb.action, _EFFECTS.get(pb.effect, "?"))  # type: ignore[arg-type]


def rule_pb(r: Rule) -> policy_pb.Policy:
    effect = policy_pb.POLICY_EFFECT_DENY if r.effect == "deny" else policy_pb.POLICY_EFFECT_ALLOW
    return policy_pb.Policy(
        subject=r.subject, domain=r.domain, object=r.object, action=r.action, effect=effect
    )


def _link(pb: policy_pb.RoleAssignment) -> RoleLink:
    return RoleLink(pb.subject, pb.role, pb.domain)


def _link_pb(g: RoleLink) -> policy_pb.RoleAssignment:
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


def _denial_pb(d: DenialRecord) -> policy_pb.Denial:
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


def _required(request: object, *fields: str) -> None:
    problems = [FieldViolation(f, "is required") for f in fields if not getattr(request, f)]
    if problems:
        raise InvalidArgument(problems)


def _basic_credentials(context: grpc.aio.ServicerContext) -> tuple[str, str] | None:
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


class PolicyServicer(policy_grpc.PolicyServiceServicer):
    def __init__(self, policy: PolicyService, metadata: Callable[[], MetadataService]) -> None:
        self._policy = policy
        # The metadata service of the cell the call was routed to (core.cells).
        self._metadata = metadata

    async def CheckAccess(
        self, request: policy_pb.CheckAccessRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CheckAccessResponse:
        _required(request, "object", "action")
        d = self._policy.check_access(
            principal_of(context), request.subject, request.object, request.action
        )
        return policy_pb.CheckAccessResponse(
            allowed=d.allowed,
            decided_by=rule_pb(d.rule) if d.rule else None,
            via=d.via,
            reason=d.reason,
        )

    async def ListPolicies(
        self, request: policy_pb.ListPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListPoliciesResponse:
        found = self._policy.list_policies(principal_of(context), request.subject)
        return policy_pb.ListPoliciesResponse(policies=[rule_pb(r) for r in found])

    async def AddPolicies(
        self, request: policy_pb.AddPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.AddPoliciesResponse:
        _required(request, "policies")
        added, _ = await self._policy.change(
            principal_of(context), add=[_rule(p) for p in request.policies]
        )
        return policy_pb.AddPoliciesResponse(added=added)

    async def RemovePolicies(
        self, request: policy_pb.RemovePoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RemovePoliciesResponse:
        _required(request, "policies")
        _, removed = await self._policy.change(
            principal_of(context), remove=[_rule(p) for p in request.policies]
        )
        return policy_pb.RemovePoliciesResponse(removed=removed)

    async def ListRoles(
        self, request: policy_pb.ListRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListRolesResponse:
        found = self._policy.list_roles(principal_of(context), request.subject)
        return policy_pb.ListRolesResponse(roles=[_link_pb(g) for g in found])

    async def AddRoles(
        self, request: policy_pb.AddRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.AddRolesResponse:
        _required(request, "roles")
        added, _ = await self._policy.change(
            principal_of(context), add_links=[_link(g) for g in request.roles]
        )
        return policy_pb.AddRolesResponse(added=added)

    async def RemoveRoles(
        self, request: policy_pb.RemoveRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RemoveRolesResponse:
        _required(request, "roles")
        _, removed = await self._policy.change(
            principal_of(context), remove_links=[_link(g) for g in request.roles]
        )
        return policy_pb.RemoveRolesResponse(removed=removed)

    async def ImportPolicies(
        self, request: policy_pb.ImportPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ImportPoliciesResponse:
        _required(request, "policy_text")
        if len(request.policy_text) > 4 * 1024 * 1024:
            raise InvalidArgument([FieldViolation("policy_text", "larger than 4 MiB")])
        rules, links = await self._policy.import_policies(
            principal_of(context), request.policy_text
        )
        return policy_pb.ImportPoliciesResponse(policies=rules, roles=links)

    async def ExportPolicies(
        self, request: policy_pb.ExportPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ExportPoliciesResponse:
        text, model = self._policy.export_policies(principal_of(context))
        return policy_pb.ExportPoliciesResponse(policy_text=text, model_text=model)

    async def GetAssetAccess(
        self, request: policy_pb.GetAssetAccessRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetAssetAccessResponse:
        principal = principal_of(context)
        require_id("asset_id", request.asset_id)
        asset = await self._metadata().get(principal.tenant_id, request.asset_id)
        access = asset_access(self._policy, principal.tenant_id, asset)
        return policy_pb.GetAssetAccessResponse(
            asset_id=asset.asset_id,
            qualified_name=asset.qualified_name,
            restricted_tags=access.restricted,
            access=[
                policy_pb.AssetAccess(
                    subject=a.subject,
                    roles=a.roles,
                    can_read=a.can_read,
                    can_write=a.can_write,
                    read_redacted=a.read_redacted,
                    reasons=a.reasons,
                )
                for a in access.subjects
            ],
        )

    async def ListDenials(
        self, request: policy_pb.ListDenialsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListDenialsResponse:
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument([FieldViolation("page_size", "must be between 0 and 1,000")])
        before = request.before.ToDatetime(tzinfo=UTC) if request.HasField("before") else None
        found = await self._policy.denials(principal_of(context), before, request.page_size or 100)
        return policy_pb.ListDenialsResponse(denials=[_denial_pb(d) for d in found])

    async def CreateTenant(
        self, request: policy_pb.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CreateTenantResponse:
        t = request.tenant
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
        if problems:
            raise InvalidArgument(problems)
        tenant, cred, key = await self._policy.create_tenant(
            principal_of(context).subject,
            t.tenant_id,
            t.display_name,
            _ISOLATION.get(t.isolation, "SHARED"),
        )
        return policy_pb.CreateTenantResponse(
            tenant=tenant_pb(tenant), admin_credential=credential_pb(cred), admin_api_key=key
        )

    async def GetTenant(
        self, request: policy_pb.GetTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetTenantResponse:
        _required(request, "tenant_id")
        found = self._policy.tenant(principal_of(context), request.tenant_id)
        return policy_pb.GetTenantResponse(tenant=tenant_pb(found))

    async def ListTenants(
        self, request: policy_pb.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListTenantsResponse:
        return policy_pb.ListTenantsResponse(tenants=[tenant_pb(t) for t in self._policy.tenants()])

    async def CreateCredential(
        self, request: policy_pb.CreateCredentialRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CreateCredentialResponse:
        c = request.credential
        cred, secret = await self._policy.create_credential(
            principal_of(context), _KINDS.get(c.kind, ""), c.subject, list(c.roles), c.description
        )
        return policy_pb.CreateCredentialResponse(credential=credential_pb(cred), secret=secret)

    async def ListCredentials(
        self, request: policy_pb.ListCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListCredentialsResponse:
        found = await self._policy.credentials(principal_of(context), request.include_revoked)
        return policy_pb.ListCredentialsResponse(credentials=[credential_pb(c) for c in found])

    async def IssueToken(
        self, request: policy_pb.IssueTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.IssueTokenResponse:
        client_id, secret = request.client_id, request.client_secret
        basic = _basic_credentials(context)
        if basic is not None:  # client_secret_basic (RFC 6749 2.3.1)
            if secret or (client_id and client_id != basic[0]):
                raise InvalidArgument(
                    [FieldViolation("client_secret", "give the client's credentials once")]
                )
            client_id, secret = basic
        token, ttl = await self._policy.issue_token(request.grant_type, client_id, secret)
        return policy_pb.IssueTokenResponse(
            access_token=token, token_type="Bearer", expires_in=ttl, scope=request.scope
        )

    async def RevokeToken(
        self, request: policy_pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RevokeTokenResponse:
        await self._policy.revoke(principal_of(context), request.token, request.credential_id)
        return policy_pb.RevokeTokenResponse()

    async def ValidateToken(
        self, request: policy_pb.ValidateTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ValidateTokenResponse:
        p = principal_of(context)
        return policy_pb.ValidateTokenResponse(
            principal=policy_pb.Principal(
                subject=p.subject,
                tenant_id=p.tenant_id,
                roles=roles_of(self._policy, p),
                issuer=p.issuer,
                expires_at=(
                    ts_pb(datetime.fromtimestamp(p.expires_at, UTC))
                    if p.expires_at is not None
                    else None
                ),
                credential_id=p.credential_id,
            )
        )

    async def GetJwks(
        self, request: policy_pb.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetJwksResponse:
        return policy_pb.GetJwksResponse(keys=[policy_pb.Jwk(**k) for k in self._policy.jwks()])

    async def RotateSigningKey(
        self, request: policy_pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RotateSigningKeyResponse:
        keys = await self._policy.rotate_signing_key()
        return policy_pb.RotateSigningKeyResponse(
            kid=keys[-1][0],
            keys=[
                policy_pb.SigningKey(
                    kid=kid,
                    created_at=ts_pb(created),
                    retires_at=ts_pb(retires) if retires is not None else None,
                )
                for kid, created, retires in keys
            ],
        )
