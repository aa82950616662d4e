"""PolicyService and IntegrationService over gRPC: decode, take the caller, call the policy
service, encode."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import grpc
from lily.v1 import enforcement_pb2 as enforcement_pb
from lily.v1 import enforcement_pb2_grpc as enforcement_grpc
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.domain.errors import FieldViolation, InvalidArgument
from core.metadata.pagination import page_size
from core.metadata.service import MetadataService
from core.wire.common import ts_pb
from core.wire.context import principal_of
from core.wire.validation import require_id
from policy import mapping
from policy.enforcement import Enforcement
from policy.integrations import Integrations
from policy.model import IntegrationRecord
from policy.service import PolicyService
from policy.sessions import Pending, SignedIn


class PolicyServicer(policy_grpc.PolicyServiceServicer):
    def __init__(self, policy: PolicyService, metadata: Callable[[], MetadataService]) -> None:
        self._policy = policy
        # The metadata service of the cell the call was routed to (core.cells).
        self._metadata = metadata

    async def CheckAccess(
        self, request: policy_pb.CheckAccessRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CheckAccessResponse:
        mapping.required(request, "object", "action")
        d = self._policy.decisions.check_access(
            principal_of(context), request.subject, request.object, request.action
        )
        return policy_pb.CheckAccessResponse(
            allowed=d.allowed,
            decided_by=mapping.rule_pb(d.rule) if d.rule else None,
            via=d.via,
            reason=d.reason,
        )

    async def ListPolicies(
        self, request: policy_pb.ListPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListPoliciesResponse:
        found = self._policy.decisions.list_policies(principal_of(context), request.subject)
        return policy_pb.ListPoliciesResponse(policies=[mapping.rule_pb(r) for r in found])

    async def AddPolicies(
        self, request: policy_pb.AddPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.AddPoliciesResponse:
        mapping.required(request, "policies")
        added, _ = await self._policy.decisions.change(
            principal_of(context), add=[mapping.rule_from_pb(p) for p in request.policies]
        )
        return policy_pb.AddPoliciesResponse(added=added)

    async def RemovePolicies(
        self, request: policy_pb.RemovePoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RemovePoliciesResponse:
        mapping.required(request, "policies")
        _, removed = await self._policy.decisions.change(
            principal_of(context), remove=[mapping.rule_from_pb(p) for p in request.policies]
        )
        return policy_pb.RemovePoliciesResponse(removed=removed)

    async def ListRoles(
        self, request: policy_pb.ListRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListRolesResponse:
        found = self._policy.decisions.list_roles(principal_of(context), request.subject)
        return policy_pb.ListRolesResponse(roles=[mapping.link_pb(g) for g in found])

    async def AddRoles(
        self, request: policy_pb.AddRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.AddRolesResponse:
        mapping.required(request, "roles")
        added, _ = await self._policy.decisions.change(
            principal_of(context), add_links=[mapping.link_from_pb(g) for g in request.roles]
        )
        return policy_pb.AddRolesResponse(added=added)

    async def RemoveRoles(
        self, request: policy_pb.RemoveRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RemoveRolesResponse:
        mapping.required(request, "roles")
        _, removed = await self._policy.decisions.change(
            principal_of(context), remove_links=[mapping.link_from_pb(g) for g in request.roles]
        )
        return policy_pb.RemoveRolesResponse(removed=removed)

    async def ImportPolicies(
        self, request: policy_pb.ImportPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ImportPoliciesResponse:
        mapping.required(request, "policy_text")
        if len(request.policy_text) > 4 * 1024 * 1024:
            raise InvalidArgument([FieldViolation("policy_text", "larger than 4 MiB")])
        rules, links = await self._policy.decisions.import_policies(
            principal_of(context), request.policy_text
        )
        return policy_pb.ImportPoliciesResponse(policies=rules, roles=links)

    async def ExportPolicies(
        self, request: policy_pb.ExportPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ExportPoliciesResponse:
        text, model = self._policy.decisions.export_policies(principal_of(context))
        return policy_pb.ExportPoliciesResponse(policy_text=text, model_text=model)

    async def GetAssetAccess(
        self, request: policy_pb.GetAssetAccessRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetAssetAccessResponse:
        principal = principal_of(context)
        require_id("asset_id", request.asset_id)
        asset = await self._metadata().get(principal.tenant_id, request.asset_id)
        access = self._policy.decisions.asset_access(principal.tenant_id, asset)
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
        limit = page_size(request.page_size)
        before = request.before.ToDatetime(tzinfo=UTC) if request.HasField("before") else None
        found = await self._policy.list_denials(principal_of(context), before, limit)
        return policy_pb.ListDenialsResponse(denials=[mapping.denial_pb(d) for d in found])

    async def CreateTenant(
        self, request: policy_pb.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CreateTenantResponse:
        tenant_id, display_name, isolation = mapping.tenant_from_pb(request.tenant)
        tenant, cred, key = await self._policy.tenants.create(
            principal_of(context).subject, tenant_id, display_name, isolation
        )
        return policy_pb.CreateTenantResponse(
            tenant=mapping.tenant_pb(tenant),
            admin_credential=mapping.credential_pb(cred),
            admin_api_key=key,
        )

    async def GetTenant(
        self, request: policy_pb.GetTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetTenantResponse:
        mapping.required(request, "tenant_id")
        found = self._policy.tenants.get(principal_of(context), request.tenant_id)
        return policy_pb.GetTenantResponse(tenant=mapping.tenant_pb(found))

    async def ListTenants(
        self, request: policy_pb.ListTenantsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListTenantsResponse:
        return policy_pb.ListTenantsResponse(
            tenants=[mapping.tenant_pb(t) for t in self._policy.tenants.all()]
        )

    async def CreateCredential(
        self, request: policy_pb.CreateCredentialRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CreateCredentialResponse:
        c = request.credential
        cred, secret = await self._policy.credentials.create(
            principal_of(context),
            mapping.kind_from_pb(c.kind),
            c.subject,
            list(c.roles),
            c.description,
        )
        return policy_pb.CreateCredentialResponse(
            credential=mapping.credential_pb(cred), secret=secret
        )

    async def ListCredentials(
        self, request: policy_pb.ListCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListCredentialsResponse:
        found = await self._policy.credentials.of_tenant(
            principal_of(context), request.include_revoked
        )
        return policy_pb.ListCredentialsResponse(
            credentials=[mapping.credential_pb(c) for c in found]
        )

    async def IssueToken(
        self, request: policy_pb.IssueTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.IssueTokenResponse:
        client_id, secret = request.client_id, request.client_secret
        basic = mapping.basic_credentials(context)
        if basic is not None:  # client_secret_basic (RFC 6749 2.3.1)
            if secret or (client_id and client_id != basic[0]):
                raise InvalidArgument(
                    [FieldViolation("client_secret", "give the client's credentials once")]
                )
            client_id, secret = basic
        token, ttl = await self._policy.credentials.issue_token(
            request.grant_type, client_id, secret
        )
        return policy_pb.IssueTokenResponse(
            access_token=token, token_type="Bearer", expires_in=ttl, scope=request.scope
        )

    async def RevokeToken(
        self, request: policy_pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RevokeTokenResponse:
        await self._policy.credentials.revoke(
            principal_of(context), request.token, request.credential_id
        )
        return policy_pb.RevokeTokenResponse()

    async def ValidateToken(
        self, request: policy_pb.ValidateTokenRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ValidateTokenResponse:
        p = principal_of(context)
        return policy_pb.ValidateTokenResponse(
            principal=mapping.principal_pb(p, self._policy.decisions.roles_of(p))
        )

    async def GetJwks(
        self, request: policy_pb.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.GetJwksResponse:
        return policy_pb.GetJwksResponse(
            keys=[policy_pb.Jwk(**k) for k in self._policy.credentials.jwks()]
        )

    async def RotateSigningKey(
        self, request: policy_pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RotateSigningKeyResponse:
        keys = await self._policy.credentials.rotate_signing_key()
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

    # -- groups, the directory and sessions

    async def ListGroupRoles(
        self, request: policy_pb.ListGroupRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListGroupRolesResponse:
        found = self._policy.decisions.group_roles(principal_of(context))
        return policy_pb.ListGroupRolesResponse(
            groups=[policy_pb.GroupRoles(group=g, roles=r) for g, r in found.items()]
        )

    async def SetGroupRoles(
        self, request: policy_pb.SetGroupRolesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.SetGroupRolesResponse:
        m = request.mapping
        roles = await self._policy.decisions.set_group_roles(
            principal_of(context), m.group, list(m.roles)
        )
        return policy_pb.SetGroupRolesResponse(
            mapping=policy_pb.GroupRoles(group=m.group, roles=roles)
        )

    async def ListPeople(
        self, request: policy_pb.ListPeopleRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.ListPeopleResponse:
        size = page_size(request.page_size)
        found = await self._policy.people.page(
            principal_of(context).tenant_id,
            mapping.status_from_pb(request.status),
            request.page_token,
            size + 1,
        )
        return policy_pb.ListPeopleResponse(
            people=[mapping.person_pb(p) for p in found[:size]],
            next_page_token=found[size - 1].user_id if len(found) > size else "",
        )

    async def UpdateDirectory(
        self, request: policy_pb.UpdateDirectoryRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.UpdateDirectoryResponse:
        done = await self._policy.people.update(
            principal_of(context).tenant_id,
            mapping.directory_updates_from_pb(request),
            request.source,
        )
        return policy_pb.UpdateDirectoryResponse(
            changed=done.changed,
            stale=done.stale,
            sessions_revoked=done.sessions_revoked,
            credentials_revoked=done.credentials_revoked,
        )

    async def StartLogin(
        self, request: policy_pb.StartLoginRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.StartLoginResponse:
        d = await self._policy.sessions.start(request.tenant_id)
        return policy_pb.StartLoginResponse(
            device_code=d.device_code,
            user_code=d.user_code,
            verification_uri=d.verification_uri,
            verification_uri_complete=d.verification_uri_complete,
            expires_in=d.expires_in,
            interval=d.interval,
        )

    async def CompleteLogin(
        self, request: policy_pb.CompleteLoginRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.CompleteLoginResponse:
        done = await self._policy.sessions.complete(request.tenant_id, request.device_code)
        if isinstance(done, Pending):
            return policy_pb.CompleteLoginResponse(pending=True, interval=done.interval)
        return policy_pb.CompleteLoginResponse(session=self._session(done))

    def _session(self, s: SignedIn) -> policy_pb.Session:
        return mapping.session_pb(s, self._policy.decisions.roles_of(s.principal))

    async def RefreshSession(
        self, request: policy_pb.RefreshSessionRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.RefreshSessionResponse:
        done = await self._policy.sessions.refresh(request.refresh_token)
        return policy_pb.RefreshSessionResponse(session=self._session(done))

    async def Logout(
        self, request: policy_pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb.LogoutResponse:
        await self._policy.sessions.logout(request.refresh_token)
        return policy_pb.LogoutResponse()


class IntegrationServicer(integration_grpc.IntegrationServiceServicer):
    """IntegrationService over gRPC: the registry of a tenant's integrations."""

    def __init__(self, integrations: Integrations) -> None:
        self._integrations = integrations

    def _pb(self, i: IntegrationRecord) -> integration_pb.Integration:
        return mapping.integration_pb(i, self._integrations.webhook_path(i))

    async def CreateIntegration(
        self, request: integration_pb.CreateIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.CreateIntegrationResponse:
        mapping.required(request, "integration")
        made, secret = await self._integrations.create(
            principal_of(context), mapping.integration_draft(request.integration)
        )
        return integration_pb.CreateIntegrationResponse(
            integration=self._pb(made), webhook_secret=secret
        )

    async def GetIntegration(
        self, request: integration_pb.GetIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.GetIntegrationResponse:
        mapping.required(request, "integration_id")
        found = await self._integrations.get(principal_of(context), request.integration_id)
        return integration_pb.GetIntegrationResponse(integration=self._pb(found))

    async def ListIntegrations(
        self, request: integration_pb.ListIntegrationsRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.ListIntegrationsResponse:
        found = await self._integrations.of_tenant(principal_of(context), request.type)
        return integration_pb.ListIntegrationsResponse(integrations=[self._pb(i) for i in found])

    async def UpdateIntegration(
        self, request: integration_pb.UpdateIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.UpdateIntegrationResponse:
        mapping.required(request, "integration_id", "integration")
        changed = await self._integrations.update(
            principal_of(context),
            request.integration_id,
            mapping.integration_draft(request.integration),
            list(request.update_mask.paths),
        )
        return integration_pb.UpdateIntegrationResponse(integration=self._pb(changed))

    async def RotateIntegrationSecret(
        self,
        request: integration_pb.RotateIntegrationSecretRequest,
        context: grpc.aio.ServicerContext,
    ) -> integration_pb.RotateIntegrationSecretResponse:
        mapping.required(request, "integration_id")
        changed, secret, until = await self._integrations.rotate(
            principal_of(context),
            request.integration_id,
            request.webhook_secret,
            request.grace_seconds,
        )
        return integration_pb.RotateIntegrationSecretResponse(
            integration=self._pb(changed), webhook_secret=secret, previous_valid_until=ts_pb(until)
        )

    async def DeleteIntegration(
        self, request: integration_pb.DeleteIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.DeleteIntegrationResponse:
        mapping.required(request, "integration_id")
        await self._integrations.delete(principal_of(context), request.integration_id)
        return integration_pb.DeleteIntegrationResponse()

    async def ListKeptDeliveries(
        self, request: integration_pb.ListKeptDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.ListKeptDeliveriesResponse:
        mapping.required(request, "integration_id")
        found = await self._integrations.kept(
            principal_of(context),
            request.integration_id,
            mapping.kept_kind_from_pb(request.kind),
            request.after_sequence,
            request.page_size,
        )
        return integration_pb.ListKeptDeliveriesResponse(
            deliveries=[mapping.kept_pb(k) for k in found]
        )

    async def ReplayKeptDeliveries(
        self,
        request: integration_pb.ReplayKeptDeliveriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> integration_pb.ReplayKeptDeliveriesResponse:
        mapping.required(request, "integration_id")
        replayed = await self._integrations.replay(
            principal_of(context),
            request.integration_id,
            mapping.kept_kind_from_pb(request.kind),
            list(request.sequences),
        )
        return integration_pb.ReplayKeptDeliveriesResponse(replayed=replayed)

    async def ListPlatformIntegrations(
        self,
        request: integration_pb.ListPlatformIntegrationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> integration_pb.ListPlatformIntegrationsResponse:
        found = await self._integrations.of_platform(
            principal_of(context), request.type, request.after_integration_id, request.page_size
        )
        return integration_pb.ListPlatformIntegrationsResponse(
            integrations=[self._pb(i) for i in found]
        )

    async def ResolveIntegration(
        self, request: integration_pb.ResolveIntegrationRequest, context: grpc.aio.ServicerContext
    ) -> integration_pb.ResolveIntegrationResponse:
        mapping.required(request, "integration_id")
        found = await self._integrations.resolve(principal_of(context), request.integration_id)
        return integration_pb.ResolveIntegrationResponse(
            integration=self._pb(found.integration),
            secrets=found.secrets,
            webhook_secrets=found.webhook_secrets,
            api_key=found.api_key,
        )


class EnforcementServicer(enforcement_grpc.EnforcementServiceServicer):
    def __init__(self, enforcement: Enforcement) -> None:
        self._enforcement = enforcement

    async def RecordEnforcement(
        self, request: enforcement_pb.RecordEnforcementRequest, context: grpc.aio.ServicerContext
    ) -> enforcement_pb.RecordEnforcementResponse:
        mapping.required(request, "integration_id")
        recorded = await self._enforcement.record(
            principal_of(context),
            request.integration_id,
            [mapping.receipt_from_pb(r) for r in request.receipts],
            mapping.receipt_event,
        )
        return enforcement_pb.RecordEnforcementResponse(recorded=recorded)

    async def GetEnforcement(
        self, request: enforcement_pb.GetEnforcementRequest, context: grpc.aio.ServicerContext
    ) -> enforcement_pb.GetEnforcementResponse:
        mapping.required(request, "integration_id", "asset_id")
        found = await self._enforcement.get(
            principal_of(context), request.integration_id, request.asset_id
        )
        return enforcement_pb.GetEnforcementResponse(receipt=mapping.receipt_pb(found))

    async def ListEnforcement(
        self, request: enforcement_pb.ListEnforcementRequest, context: grpc.aio.ServicerContext
    ) -> enforcement_pb.ListEnforcementResponse:
        mapping.required(request, "integration_id")
        found = await self._enforcement.list(
            principal_of(context),
            request.integration_id,
            mapping.outcome_from_pb(request.outcome),
            request.qualified_name_prefix,
            request.after_qualified_name,
            request.page_size,
        )
        return enforcement_pb.ListEnforcementResponse(
            receipts=[mapping.receipt_pb(r) for r in found]
        )
