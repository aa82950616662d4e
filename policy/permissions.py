"""What each RPC needs, and the hook the server's interceptor runs before every handler.

Each RPC of Lily's services says who may call it in the contract: its `(lily.v1.access)`
option (proto/lily/v1/access.proto), read here from the descriptors. gRPC's own health and
reflection services are open. A method that says nothing is refused to everyone (fail closed):
a new RPC is unreachable until someone decides who may call it (the authorization matrix in
tests/integration/test_authz.py walks every RPC).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from lily.v1 import access_pb2 as access_pb

from core.domain.errors import LilyError, PermissionDenied
from core.requestctx import Principal, principal_ctx, principal_var, tenant_var
from policy.service import PolicyService


@dataclass(frozen=True, slots=True)
class Permission:
    """What a call needs: `action` on `object` in the caller's tenant."""

    object: str
    action: str


OPEN = Permission("", "open")  # no credentials needed
AUTHENTICATED = Permission("", "authenticated")  # any principal; the service checks the rest
# gRPC's own services: anyone may check health and reflect.
_OPEN_SERVICES = frozenset({health.SERVICE_NAME, reflection.SERVICE_NAME})

TENANT_HEADER = "x-lily-tenant"


@functools.cache
def permission(method: str) -> Permission | None:
    """What a call of `method` (`/lily.v1.MetadataService/GetMetadata`) needs, as its RPC's
    access option says; None: nobody may call it."""
    service, _, name = method.removeprefix("/").partition("/")
    if service in _OPEN_SERVICES:
        return OPEN
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    options = found.GetOptions()
    if not options.HasExtension(access_pb.access):
        return None
    access = options.Extensions[access_pb.access]
    if access.open:
        return OPEN
    if access.authenticated:
        return AUTHENTICATED
    if access.object and access.action:
        return Permission(access.object, access.action)
    return None


class CallGuard:
    """Authenticates and authorizes a call before its handler runs (see core.wire.status)."""

    def __init__(self, policy: PolicyService) -> None:
        self._policy = policy
        self._system = policy.settings.system_tenant

    async def __call__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        need = permission(method)
        if need is OPEN:
            return
        md: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                md[key] = value
        try:
            principal = await self._policy.authn.authenticate(md)
        except LilyError as err:
            self._policy.denials.record(
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
        decision = self._policy.decisions.decide(principal, need.object, need.action)
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
        self._policy.denials.record(
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


__all__ = ["AUTHENTICATED", "OPEN", "CallGuard", "OpenGuard", "Permission", "permission"]
