"""Per-request values carried in contextvars (for logs and error messages)."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
principal_var: contextvars.ContextVar[str] = contextvars.ContextVar("principal", default="")


def current_request_id() -> str:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is from, as its credential proved (policy/ authenticates every call)."""

    subject: str
    tenant_id: str
    issuer: str  # Lily's issuer URL, an OIDC issuer's, or "api-key"
    roles: tuple[str, ...] = ()  # roles the credential itself asserts (none but the open admin)
    credential_id: str = ""  # Lily's own: the API key or OAuth2 client behind it
    token_id: str = ""  # a JWT's jti
    expires_at: float | None = None  # epoch seconds; None for API keys
    # an identity provider's groups (its token's, or fresher, its directory's): roles follow
    groups: tuple[str, ...] = ()
    session_id: str = ""  # the session it signed in with (policy/sessions.py)


principal_ctx: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal_obj", default=None
)
