"""Credentials and tokens: API keys and OAuth2 clients (their secrets shown once, kept as
hashes), the client-credentials grant, revocation (at once on every instance), and the
signing keys of Lily's own issuer."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from core.domain.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from core.requestctx import Principal
from core.settings import AuthSettings
from core.wire.validation import check_text
from policy import tokens
from policy.authn import Authenticator
from policy.decisions import Decisions
from policy.model import CredentialRecord
from policy.ports import PolicyStore
from policy.rules import RoleLink, check_link


def credential_record(
    principal: Principal,
    kind: str,
    new: tokens.NewSecret,
    subject: str,
    roles: Sequence[str],
    description: str,
) -> tuple[CredentialRecord, list[RoleLink]]:
    """A credential `principal` makes in its tenant, as stored, and the role links that give
    its subject its roles."""
    record = CredentialRecord(
        new.credential_id,
        principal.tenant_id,
        kind,
        subject,
        new.digest,
        tuple(roles),
        description,
        principal.subject,
        datetime.now(UTC),
        None,
    )
    return record, [RoleLink(subject, role, principal.tenant_id) for role in roles]


class Credentials:
    def __init__(
        self,
        store: PolicyStore,
        settings: AuthSettings,
        authn: Authenticator,
        decisions: Decisions,
    ) -> None:
        self._store = store
        self.settings = settings
        self._authn = authn
        self._decisions = decisions

    async def create(
        self, principal: Principal, kind: str, subject: str, roles: Sequence[str], description: str
    ) -> tuple[CredentialRecord, str]:
        problems: list[FieldViolation] = []
        if kind not in ("API_KEY", "CLIENT"):
            problems.append(FieldViolation("credential.kind", "must be API_KEY or CLIENT"))
        new = (
            tokens.new_api_key()
            if kind == "API_KEY"
            else tokens.new_client_secret("c" + tokens.new_api_key().credential_id)
        )
        subject = subject or f"{kind.lower()}:{new.credential_id}"
        cred, links = credential_record(principal, kind, new, subject, roles, description)
        for i, g in enumerate(links):
            check_link(g, f"credential.roles[{i}]", problems)
        check_text("credential.description", description, 4000, problems)
        if problems:
            raise InvalidArgument(problems)
        await self._store.add_credential(cred, links)
        if links:
            await self._decisions.reload()
        return cred, new.secret

    async def of_tenant(
        self, principal: Principal, include_revoked: bool
    ) -> list[CredentialRecord]:
        return await self._store.credentials(principal.tenant_id, include_revoked)

    async def revoke(self, principal: Principal, token: str, credential_id: str) -> None:
        """Revokes a token or API key (RFC 7009: an unknown one is no error), or a credential
        by id. Another's needs credentials write."""
        if token and not token.startswith(tokens.API_KEY_PREFIX):
            try:
                target = await self._authn.authenticate({"authorization": f"Bearer {token}"})
            except (Unauthenticated, PermissionDenied):  # invalid, expired, or its tenant is
                return  # gone: nothing to revoke (RFC 7009 2.2: that is no error)
            if target.tenant_id != principal.tenant_id:
                return
            if target.subject != principal.subject:
                self._decisions.require(principal, "credentials", "write", "RevokeToken")
            if target.token_id and target.issuer == self.settings.issuer:
                await self._authn.revoke_jwt(target)
            return
        if token:
            try:
                credential_id = tokens.split_api_key(token)[0]
            except tokens.CredentialError:
                return
        if not credential_id:
            raise InvalidArgument([FieldViolation("token", "give a token or a credential_id")])
        cred = await self._authn.credential(credential_id)
        if cred is None or cred.tenant_id != principal.tenant_id:
            if token:
                return
            raise NotFound(f"credential {credential_id!r} not found")
        if principal.credential_id != credential_id:
            self._decisions.require(principal, "credentials", "write", "RevokeToken")
        await self._store.revoke_credential(credential_id, datetime.now(UTC))
        self._authn.changed("cred", credential_id)

    async def issue_token(
        self, grant_type: str, client_id: str, client_secret: str
    ) -> tuple[str, int]:
        problems = []
        if grant_type != "client_credentials":
            problems.append(FieldViolation("grant_type", "must be client_credentials"))
        if not client_id or len(client_id) > 64:
            problems.append(FieldViolation("client_id", "required"))
        if not client_secret or len(client_secret) > 200:
            problems.append(FieldViolation("client_secret", "required"))
        if problems:
            raise InvalidArgument(problems)
        return await self._authn.issue(client_id, client_secret)

    def jwks(self) -> list[dict[str, str]]:
        return self._authn.issuer.jwks()

    async def rotate_signing_key(self) -> list[tuple[str, datetime, datetime | None]]:
        """A new key to sign with; see PostgresPolicyStore.rotate_signing_key."""
        keys = await self._store.rotate_signing_key(
            tokens.new_signing_key(), self.settings.token_ttl + self.settings.leeway
        )
        await self._authn.reload_keys()
        return keys
