"""Who a call is from: its principal (authenticated by the interceptor before the handler
ran), its tenant (always the principal's, never the payload's), and the context its writes
carry (actor, request id, origin, trace)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from opentelemetry import propagate

from core.domain.errors import Unauthenticated
from core.domain.model import WriteContext
from core.requestctx import Principal, current_request_id, principal_ctx


def principal_of(context: grpc.aio.ServicerContext) -> Principal:
    """The caller, as the interceptor authenticated them before the handler ran."""
    principal = principal_ctx.get()
    if principal is None:
        raise Unauthenticated("no principal")
    return principal


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant: always the principal's, never the payload's."""
    return principal_of(context).tenant_id


def write_context(context: grpc.aio.ServicerContext, action: str) -> WriteContext:
    """The context of a write the call makes: its actor, action, time, request id, origin
    and trace headers (which the change events carry on)."""
    principal = principal_of(context)
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return WriteContext(
        tenant_id=principal.tenant_id,
        actor=principal.subject[:256],
        action=action,
        now=datetime.now(UTC),
        request_id=current_request_id(),
        origin=context.peer() or "",
        trace_headers=headers,
    )
