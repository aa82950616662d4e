"""What each RPC needs, and the hook the server's interceptor runs before every handler.

A method missing from PERMISSIONS is refused (fail closed): a new RPC is unreachable until
someone decides who may call it (tests/unit/test_permissions.py walks the descriptors).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from core.domain.errors import LilyError, PermissionDenied
from core.requestctx import Principal, principal_ctx, principal_var, tenant_var
from policy.service import AUTHENTICATED, OPEN, Permission, PolicyService

_M, _L, _P = "/lily.v1.MetadataService/", "/lily.v1.LineageService/", "/lily.v1.PolicyService/"
_READ_M, _WRITE_M = Permission("metadata", "read"), Permission("metadata", "write")
_READ_L, _WRITE_L = Permission("lineage", "read"), Permission("lineage", "write")
_READ_P, _WRITE_P = Permission("policy", "read"), Permission("policy", "write")

PERMISSIONS: Mapping[str, Permission] = {
    f"/{health.SERVICE_NAME}/Check": OPEN,
    f"/{health.SERVICE_NAME}/Watch": OPEN,
    f"/{reflection.SERVICE_NAME}/ServerReflectionInfo": OPEN,
    **{
        _M + m: _READ_M
        for m in (
            "GetMetadata",
            "LookupMetadata",
            "SearchMetadata",
            "ListIssues",
            "GetAuditTrail",
            "GetBulkJob",
            "WatchChanges",
        )
    },
    **{
        _M + m: _WRITE_M
        for m in (
            "IngestMetadata",
            "IngestMetadataStream",
            "UpdateMetadata",
            "DeleteMetadata",
            "UpdateTags",
            "AttachIssue",
            "CreateBulkJob",
        )
    },
    **{_L + m: _READ_L for m in ("GetLineage", "GetPropagationJob")},
    **{
        _L + m: _WRITE_L
        for m in ("IngestRelationships", "DeleteRelationships", "PropagateDownstream")
    },
    **{
        _P + m: _READ_P
        for m in ("ListPolicies", "ListRoles", "ExportPolicies", "GetAssetAccess", "ListDenials")
    },
    **{
        _P + m: _WRITE_P
        for m in ("AddPolicies", "RemovePolicies", "AddRoles", "RemoveRoles", "ImportPolicies")
    },
    _P + "CreateTenant": Permission("tenants", "admin"),
    _P + "ListTenants": Permission("tenants", "admin"),
    _P + "RotateSigningKey": Permission("tenants", "admin"),
    _P + "GetTenant": Permission("tenant", "read"),
    _P + "CreateCredential": Permission("credentials", "write"),
    _P + "ListCredentials": Permission("credentials", "read"),
    _P + "CheckAccess": AUTHENTICATED,
    _P + "RevokeToken": AUTHENTICATED,
    _P + "ValidateToken": AUTHENTICATED,
    _P + "IssueToken": OPEN,
    _P + "GetJwks": OPEN,
}

TENANT_HEADER = "x-lily-tenant"


class CallGuard:
    """Authenticates and authorizes a call before its handler runs (see core.errors)."""

    def __init__(self, policy: PolicyService) -> None:
        self._policy = policy
        self._system = policy.settings.system_tenant

    async def __call__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        need = PERMISSIONS.get(method)
        if need is OPEN:
            return
        md: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                md[key] = value
        try:
            principal = await self._policy.authn.authenticate(md)
        except LilyError as err:
            self._policy.record_denial(
                "", "", method, "", "", err.code, err.message, context.peer() or ""
            )
            raise
        _enter(principal)
        named = md.get(TENANT_HEADER)
        if named and named != principal.tenant_id:
            self._deny(principal, method, f"tenant:{named}", "any", context, "names another tenant")
            raise PermissionDenied(
                f"the call names tenant {named!r}; your credential is for {principal.tenant_id!r}",
            )
        if need is None:
            self._deny(principal, method, method, "call", context, "no permission is defined")
            raise PermissionDenied(f"{method} is not open to anyone")
        if need is AUTHENTICATED:
            return
        if need.object == "tenants" and principal.tenant_id != self._system:
            self._deny(
                principal, method, need.object, need.action, context, "not the system tenant"
            )
            raise PermissionDenied("only platform admins (of the system tenant) may do this")
        decision = self._policy.decide(principal, need.object, need.action)
        if not decision.allowed:
            self._deny(principal, method, need.object, need.action, context, decision.reason)
            raise PermissionDenied(
                f"{principal.subject} may not {need.action} {need.object} in tenant "
                f"{principal.tenant_id!r}",
                metadata={"object": need.object, "action": need.action},
            )

    def _deny(
        self,
        principal: Principal,
        method: str,
        obj: str,
        action: str,
        context: grpc.aio.ServicerContext,
        reason: str,
    ) -> None:
        self._policy.record_denial(
            principal.tenant_id,
            principal.subject,
            method,
            obj,
            action,
            "PERMISSION_DENIED",
            reason,
            context.peer() or "",
        )


def _enter(principal: Principal) -> None:
    principal_ctx.set(principal)
    principal_var.set(principal.subject)
    tenant_var.set(principal.tenant_id)


def anonymous_admin(tenant_id: str) -> Principal:
    """The principal of every call when authentication is off (benchmarks only)."""
    return Principal("anonymous", tenant_id, "none", ("admin",))


class OpenGuard:
    """Authentication off: every call is an admin of the system tenant."""

    def __init__(self, tenant_id: str) -> None:
        self._principal = anonymous_admin(tenant_id)

    async def __call__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        _enter(self._principal)


__all__ = ["PERMISSIONS", "CallGuard", "OpenGuard"]
