"""Authentication: a call's credential -> a Principal, or Unauthenticated.

A credential is `Authorization: Bearer <JWT or API key>` (or `x-api-key: <API key>`). What is
cached (credentials by id, verified JWTs, the revoked token and session ids) is dropped or
updated when the policy change feed says so, so a revocation on any instance holds on every
other at once. Whatever the credential, a person the tenant's directory (policy/directory.py)
has as suspended or deactivated is refused, and a person the identity provider vouches for
acts through the groups the directory has for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from core.domain.errors import PermissionDenied, Unauthenticated
from core.requestctx import Principal
from core.settings import AuthSettings, OidcIssuerSettings
from policy import tokens
from policy.directory import People
from policy.model import CredentialRecord, TenantRecord
from policy.ports import PolicyStore
from policy.tokens import CredentialError, Issuer, KeySet

log = logging.getLogger(__name__)

API_KEY_ISSUER = "api-key"
_MAX_CACHED = 50_000


def bearer(metadata: Mapping[str, str]) -> str:
    """The credential a call carries ('' if none)."""
    auth = metadata.get("authorization", "")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
        return ""
    return metadata.get("x-api-key", "").strip()


def groups_of(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The groups an identity provider's token lists in `claim`."""
    groups = claims.get(claim, [])
    return tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else ()


class Authenticator:
    def __init__(self, store: PolicyStore, settings: AuthSettings, people: People) -> None:
        self._store = store
        self._settings = settings
        self.people = people
        self.issuer = Issuer(settings.issuer, settings.audience)
        self._key_sets: dict[str, KeySet] = {
            settings.issuer: KeySet(
                settings.issuer, settings.audience, self._own_keys, settings.jwks_refresh
            )
        }
        self._oidc = {o.issuer: o for o in settings.oidc}
        for o in settings.oidc:
            self._key_sets[o.issuer] = KeySet(
                o.issuer,
                o.audience,
                tokens.oidc_fetcher(o.issuer, o.jwks_url),
                settings.jwks_refresh,
            )
        self._credentials: dict[str, CredentialRecord | None] = {}
        self._generation = 0  # bumped by every credential change, so no stale read is cached
        self._verified: dict[str, Principal] = {}
        self._revoked: set[str] = set()
        self.tenants: dict[str, TenantRecord] = {}

    async def start(self) -> None:
        # the own key set's fetch loads (or, on a new database, creates) the signing keys
        await self._key_sets[self._settings.issuer].refresh()
        self._revoked = await self._store.revoked_tokens()
        self.tenants = {t.tenant_id: t for t in await self._store.tenants()}

    async def reload_keys(self) -> None:
        """Lily's own signing keys, again (another instance rotated them)."""
        await self._key_sets[self._settings.issuer].refresh()

    async def _own_keys(self) -> list[dict[str, str]]:
        self.issuer.keys = await self._store.signing_keys(tokens.new_signing_key())
        return self.issuer.jwks()

    # -- the change feed

    def changed(self, kind: str, key: str) -> None:
        if kind == "cred":
            self._generation += 1
            self._credentials.pop(key, None)
        elif kind == "jti":
            self._revoked.add(key)

    async def reload(self) -> None:
        """After the feed reconnects (changes may have been missed): drop every cache."""
        self._generation += 1
        self._credentials.clear()
        self._verified.clear()
        self._revoked = await self._store.revoked_tokens()
        self.tenants = {t.tenant_id: t for t in await self._store.tenants()}

    async def reload_tenant(self, tenant_id: str) -> None:
        found = await self._store.tenant(tenant_id)
        if found is None:
            self.tenants.pop(tenant_id, None)
        else:
            self.tenants[tenant_id] = found

    # -- authentication

    async def credential(self, credential_id: str) -> CredentialRecord | None:
        if not tokens.CREDENTIAL_ID.match(credential_id):
            return None  # (not one Lily made: no need to ask)
        if credential_id in self._credentials:
            return self._credentials[credential_id]
        generation = self._generation
        found = await self._store.credential(credential_id)
        if generation == self._generation:
            if len(self._credentials) > _MAX_CACHED:
                self._credentials.clear()
            self._credentials[credential_id] = found
        return found

    async def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        secret = bearer(metadata)
        if not secret:
            raise Unauthenticated(
                "no credentials: send 'Authorization: Bearer <token or API key>'",
            )
        try:
            if secret.startswith(tokens.API_KEY_PREFIX):
                principal = await self._api_key(secret)
            else:
                principal = await self._jwt(secret)
        except CredentialError as exc:
            raise Unauthenticated(str(exc)) from None
        person = self.people.find(principal.tenant_id, principal.subject)
        if person is not None:
            if person.blocked:
                raise Unauthenticated(
                    f"{principal.subject} is {person.status.lower()} in the identity provider"
                )
            if principal.session_id or principal.issuer in self._oidc:
                principal = self.people.with_groups(principal, person)
        tenant = self.tenants.get(principal.tenant_id)
        if tenant is None or tenant.state != "READY":
            raise PermissionDenied(
                f"tenant {principal.tenant_id!r} is not "
                + ("registered" if tenant is None else "ready"),
            )
        return principal

    async def _api_key(self, key: str) -> Principal:
        key_id, secret = tokens.split_api_key(key)
        cred = await self.credential(key_id)
        if (
            cred is None
            or cred.kind != "API_KEY"
            or not tokens.secret_matches(secret, cred.secret_digest)
        ):
            raise CredentialError("unknown API key")
        if cred.revoked_at is not None:
            raise CredentialError("API key has been revoked")
        return Principal(cred.subject, cred.tenant_id, API_KEY_ISSUER, credential_id=key_id)

    async def _jwt(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is None:
            claims = await tokens.verify_jwt(token, self._key_sets, self._settings.leeway)
            principal = self._principal(claims)
            if len(self._verified) > _MAX_CACHED:
                self._verified.clear()
            self._verified[token] = principal
        elif principal.expires_at is not None and (
            principal.expires_at + self._settings.leeway < time.time()
        ):
            del self._verified[token]
            raise CredentialError("token has expired")
        if principal.token_id and principal.token_id in self._revoked:
            raise CredentialError("token has been revoked")
        if principal.session_id and principal.session_id in self._revoked:
            raise CredentialError("the session has ended (signed out, or revoked)")
        if principal.credential_id:
            cred = await self.credential(principal.credential_id)
            if cred is None or cred.revoked_at is not None:
                raise CredentialError("token's client has been revoked")
        return principal

    def _principal(self, claims: dict[str, Any]) -> Principal:
        iss = claims["iss"]
        exp = float(claims["exp"])
        jti = str(claims.get("jti", ""))
        if iss == self._settings.issuer:
            tenant, cid, sid = claims.get("tid"), claims.get("cid", ""), claims.get("sid", "")
            if (
                not isinstance(tenant, str)
                or not isinstance(cid, str)
                or not isinstance(sid, str)
                or not (cid or sid)
            ):
                raise CredentialError("token lacks Lily's claims")
            return Principal(str(claims["sub"]), tenant, iss, (), cid, jti, exp, session_id=sid)
        oidc = self._oidc[iss]
        tenant = oidc.tenant or claims.get(oidc.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise CredentialError(f"token names no tenant (claim {oidc.tenant_claim!r})")
        subject = claims.get(oidc.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise CredentialError(f"token has no {oidc.subject_claim!r} claim")
        return Principal(
            subject, tenant, iss, (), "", jti, exp, groups_of(claims, oidc.roles_claim)
        )

    async def verify_id_token(self, token: str, oidc: OidcIssuerSettings) -> dict[str, Any]:
        """The claims of an ID token `oidc`'s provider issued to its client (a sign-in);
        CredentialError otherwise."""
        claims = await tokens.verify_jwt(
            token, self._key_sets, self._settings.leeway, audience=oidc.client_id
        )
        if claims["iss"] != oidc.issuer:
            raise CredentialError("token is from another issuer")
        return claims

    # -- Lily's issuer

    async def issue(self, client_id: str, client_secret: str) -> tuple[str, int]:
        """A token for an OAuth2 client: (token, seconds it lasts)."""
        cred = await self.credential(client_id)
        if (
            cred is None
            or cred.kind != "CLIENT"
            or cred.revoked_at is not None
            or not tokens.secret_matches(client_secret, cred.secret_digest)
        ):
            # one answer for every failure, as OAuth2's invalid_client
            raise Unauthenticated("invalid client credentials")
        token, _exp = self.issuer.issue(  # ES256 signs in tens of microseconds
            subject=cred.subject,
            tenant_id=cred.tenant_id,
            client_id=cred.credential_id,
            ttl=self._settings.token_ttl,
        )
        return token, self._settings.token_ttl

    async def revoke_jwt(self, principal: Principal) -> None:
        assert principal.expires_at is not None
        await self._store.revoke_token(
            principal.token_id,
            principal.tenant_id,
            datetime.fromtimestamp(principal.expires_at + self._settings.leeway, UTC),
        )
        self._revoked.add(principal.token_id)
