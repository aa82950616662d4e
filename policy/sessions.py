"""Signing people in: sessions with the tenant's OIDC provider (Okta), through the OAuth2
Device Authorization Grant (RFC 8628), which needs no browser where the client runs.

StartLogin asks the provider for a device and a user code; the person approves at the
provider while the client calls CompleteLogin, which asks the provider's token endpoint once
per call. Once approved, Lily verifies the ID token (the provider's keys, the client as its
audience), files the person in the tenant's directory (policy/directory.py: active, with the
token's groups) and opens a session: a Lily access token (`sid` names the session) and a
refresh token `lrt_<session id>.<secret>` (only its digest is kept).

A refresh spends the refresh token for a new one, and asks the provider again with its own
refresh token (kept sealed): a person it no longer lets in is refused, and their groups are
read again. A spent refresh token used again ends the session (whoever holds a copy is not
its owner). Logout ends the session on every instance (its id joins the revoked tokens until
its last access token would have expired) and revokes the provider's refresh token.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from core.requestctx import Principal
from core.settings import AuthSettings, OidcIssuerSettings
from policy import tokens
from policy.authn import Authenticator, groups_of
from policy.directory import People, Update
from policy.model import PersonRecord, SessionRecord
from policy.oidc import OAuthError, Provider
from policy.ports import IdentityStore
from policy.secretbox import SealedBoxError, SecretBox

log = logging.getLogger(__name__)

REFRESH_PREFIX = "lrt_"
_UPSTREAM = "refresh_token"  # the name of the provider's token in its sealed box


@dataclass(frozen=True, slots=True)
class DeviceLogin:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class Pending:
    interval: int


@dataclass(frozen=True, slots=True)
class SignedIn:
    session_id: str
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_at: datetime
    principal: Principal


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


def _split(refresh_token: str) -> tuple[str, str]:
    sid, _, secret = refresh_token.removeprefix(REFRESH_PREFIX).partition(".")
    if not refresh_token.startswith(REFRESH_PREFIX) or len(sid) != 32 or not secret:
        raise InvalidArgument([FieldViolation("refresh_token", "not a Lily refresh token")])
    return sid, secret


class Sessions:
    def __init__(
        self,
        store: IdentityStore,
        settings: AuthSettings,
        authn: Authenticator,
        people: People,
        box: SecretBox | None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._authn = authn
        self._people = people
        self._box = box
        self._providers = {o.issuer: Provider(o) for o in settings.oidc if o.client_id}

    def _provider(self, tenant_id: str) -> Provider:
        if not tenant_id:
            raise InvalidArgument([FieldViolation("tenant_id", "must be given")])
        tenant = self._authn.tenants.get(tenant_id)
        if tenant is None or tenant.state != "READY":
            raise NotFound(f"no tenant {tenant_id!r}")
        fixed = [p for p in self._providers.values() if p.settings.tenant == tenant_id]
        named = [p for p in self._providers.values() if not p.settings.tenant]
        found = fixed or named
        if not found:
            raise FailedPrecondition(
                f"tenant {tenant_id!r} has no identity provider to sign in with (an OIDC "
                "issuer with a client_id, in LILY_AUTH__OIDC)"
            )
        return found[0]

    async def start(self, tenant_id: str) -> DeviceLogin:
        provider = self._provider(tenant_id)
        try:
            got = await provider.device_authorization()
        except OAuthError as exc:
            raise FailedPrecondition(f"the identity provider refused to start: {exc}") from None
        if not isinstance(got.get("device_code"), str) or not isinstance(got.get("user_code"), str):
            raise FailedPrecondition("the identity provider gave no device and user code")
        return DeviceLogin(
            got["device_code"],
            got["user_code"],
            str(got.get("verification_uri", "")),
            str(got.get("verification_uri_complete", "")),
            _int(got.get("expires_in"), 600),
            _int(got.get("interval"), 5),
        )

    async def complete(self, tenant_id: str, device_code: str) -> Pending | SignedIn:
        if not device_code:
            raise InvalidArgument([FieldViolation("device_code", "must be given")])
        provider = self._provider(tenant_id)
        try:
            got = await provider.device_token(device_code)
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                return Pending(5)
            if exc.error == "slow_down":
                return Pending(10)
            if exc.error == "access_denied":
                raise PermissionDenied(
                    "the sign-in was declined at the identity provider"
                ) from None
            if exc.error == "expired_token":
                raise FailedPrecondition("the sign-in expired: start again") from None
            raise FailedPrecondition(f"the identity provider refused: {exc}") from None
        claims = await self._verify(provider, got)
        person, subject = await self._file(provider.settings, tenant_id, claims)
        return await self._open(provider, tenant_id, subject, person, got)

    async def _verify(self, provider: Provider, got: dict[str, Any]) -> dict[str, Any]:
        id_token = got.get("id_token")
        if not isinstance(id_token, str):
            raise FailedPrecondition("the identity provider sent no ID token (scope openid?)")
        try:
            claims = await self._authn.verify_id_token(id_token, provider.settings)
        except tokens.CredentialError as exc:
            raise Unauthenticated(f"the identity provider's ID token: {exc}") from None
        return claims

    async def _file(
        self, oidc: OidcIssuerSettings, tenant_id: str, claims: dict[str, Any]
    ) -> tuple[PersonRecord, str]:
        """Files the person an ID token names in the tenant's directory: active, with its
        groups (if it lists them); the person, and the subject their sessions act as."""
        tenant = oidc.tenant or claims.get(oidc.tenant_claim)
        if tenant != tenant_id:
            raise PermissionDenied(
                f"the identity provider signed you in to tenant {tenant!r}, not {tenant_id!r}"
            )
        user_id = str(claims["sub"])
        known = self._people.find(tenant_id, user_id)
        login = claims.get("preferred_username")
        email = claims.get("email")
        groups = (
            groups_of(claims, oidc.roles_claim)
            if oidc.roles_claim in claims
            else (known.groups if known else ())
        )
        person = PersonRecord(
            tenant_id,
            user_id,
            login if isinstance(login, str) else (known.login if known else ""),
            email if isinstance(email, str) else (known.email if known else ""),
            "ACTIVE",
            groups,
            "login",
            datetime.now(UTC),
        )
        await self._people.update(tenant_id, [Update(person.observed_at, person)], "login")
        subject = claims.get(oidc.login_subject_claim)
        return person, subject if isinstance(subject, str) and subject else user_id

    def _seal(self, session_id: str, got: dict[str, Any], old: bytes = b"") -> bytes:
        upstream = got.get("refresh_token")
        if not isinstance(upstream, str) or not upstream or self._box is None:
            return old
        return self._box.seal({_UPSTREAM: upstream}, session_id)

    def _tokens(self, s: SessionRecord, groups: tuple[str, ...]) -> tuple[SignedIn, SessionRecord]:
        secret = secrets.token_urlsafe(32)
        ttl = self._settings.token_ttl
        token, exp = self._authn.issuer.issue(
            subject=s.subject, tenant_id=s.tenant_id, session_id=s.session_id, ttl=ttl
        )
        now = datetime.now(UTC)
        s = replace(
            s,
            refresh_digest=tokens.digest(secret),
            refreshed_at=now,
            tokens_until=now + timedelta(seconds=ttl + self._settings.leeway),
        )
        principal = Principal(
            s.subject,
            s.tenant_id,
            self._authn.issuer.url,
            expires_at=float(exp),
            groups=groups,
            session_id=s.session_id,
        )
        refresh = f"{REFRESH_PREFIX}{s.session_id}.{secret}"
        return SignedIn(s.session_id, token, ttl, refresh, s.expires_at, principal), s

    async def _open(
        self,
        provider: Provider,
        tenant_id: str,
        subject: str,
        person: PersonRecord,
        got: dict[str, Any],
    ) -> SignedIn:
        sid = uuid.uuid4().hex
        now = datetime.now(UTC)
        draft = SessionRecord(
            sid,
            tenant_id,
            subject,
            person.user_id,
            provider.settings.issuer,
            "",
            self._seal(sid, got),
            now,
            now,
            now + timedelta(seconds=self._settings.session_ttl),
            now,
        )
        signed, record = self._tokens(draft, person.groups)
        await self._store.add_session(record)
        log.info(
            "signed in",
            extra={"tenant_id": tenant_id, "subject": subject, "session_id": sid},
        )
        return signed

    async def _live(self, refresh_token: str) -> tuple[SessionRecord, str]:
        """The session a refresh token is the current one of, and its digest."""
        sid, secret = _split(refresh_token)
        s = await self._store.session(sid)
        if s is None:
            raise Unauthenticated("no such session")
        if s.revoked_at is not None:
            raise Unauthenticated("the session has ended: sign in again")
        digest = tokens.digest(secret)
        if not tokens.secret_matches(secret, s.refresh_digest):
            # a spent refresh token, used again: whoever has it is not the session's owner
            await self._end(s, "a spent refresh token was used again")
            raise Unauthenticated("the refresh token was spent already: the session has ended")
        if s.expires_at <= datetime.now(UTC):
            raise Unauthenticated("the session has expired: sign in again")
        return s, digest

    async def refresh(self, refresh_token: str) -> SignedIn:
        s, digest = await self._live(refresh_token)
        provider = self._providers.get(s.issuer)
        if provider is None:
            raise Unauthenticated("the session's identity provider is no longer trusted")
        person = self._people.find(s.tenant_id, s.user_id)
        if person is not None and person.blocked:
            raise Unauthenticated(
                f"{s.subject} is {person.status.lower()} in the identity provider"
            )
        upstream = self._upstream(s)
        if upstream:
            try:
                got = await provider.refresh(upstream)
            except OAuthError as exc:
                await self._end(s, f"the identity provider refused to refresh: {exc.error}")
                raise Unauthenticated(
                    "the identity provider no longer accepts this session: sign in again"
                ) from None
            if "id_token" in got:
                claims = await self._verify(provider, got)
                person, _ = await self._file(provider.settings, s.tenant_id, claims)
            s = replace(s, upstream=self._seal(s.session_id, got, s.upstream))
        person = person or self._people.find(s.tenant_id, s.user_id)
        signed, record = self._tokens(s, person.groups if person else ())
        if not await self._store.refresh_session(s.session_id, digest, record):
            raise Unauthenticated("the refresh token was spent already")
        return signed

    def _upstream(self, s: SessionRecord) -> str:
        if not s.upstream or self._box is None:
            return ""
        try:
            return self._box.open(s.upstream, s.session_id).get(_UPSTREAM, "")
        except SealedBoxError:
            log.warning("session %s: its provider's token cannot be opened", s.session_id)
            return ""

    async def _end(self, s: SessionRecord, why: str) -> None:
        until = max(s.tokens_until, datetime.now(UTC))
        await self._store.revoke_session(s.session_id, why, until)
        self._authn.changed("jti", s.session_id)  # this instance at once; others by the feed

    async def logout(self, refresh_token: str) -> None:
        s, _ = await self._live(refresh_token)
        await self._end(s, "signed out")
        upstream = self._upstream(s)
        provider = self._providers.get(s.issuer)
        if upstream and provider is not None:
            try:
                await provider.revoke(upstream)
            except Exception as exc:  # the session is over either way
                log.warning(
                    "the identity provider's refresh token was not revoked: %r",
                    exc,
                    extra={"session_id": s.session_id},
                )
