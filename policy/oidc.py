"""An OIDC provider (an Okta org's authorization server) as Lily signs people in with it: its
discovery document, the Device Authorization endpoint (RFC 8628), the token endpoint (the
device code and refresh token grants) and token revocation (RFC 7009). Every call is bounded
by a timeout; a provider that cannot be reached, or answers 5xx, is Unavailable."""

from __future__ import annotations

import time
from typing import Any

import httpx

from core.domain.errors import Unavailable
from core.settings import OidcIssuerSettings

DISCOVERY_TTL = 3600.0


class OAuthError(Exception):
    """The provider's OAuth2 error answer (`error`, `error_description`)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class Provider:
    def __init__(self, settings: OidcIssuerSettings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self._timeout = timeout
        self._found: dict[str, Any] = {}
        self._found_at = float("-inf")

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                answer = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the identity provider cannot be reached: {exc!r}") from exc
        if answer.status_code >= 500:
            raise Unavailable(f"the identity provider answered {answer.status_code}")
        return answer

    async def endpoint(self, name: str) -> str:
        """An endpoint its discovery document names ('' if it names none)."""
        if time.monotonic() - self._found_at > DISCOVERY_TTL:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            answer = await self._call("GET", url)
            try:
                found = answer.json()
                if answer.status_code != 200 or not isinstance(found, dict):
                    raise ValueError(answer.status_code)
            except ValueError as exc:
                raise Unavailable(f"the identity provider's discovery document: {exc}") from exc
            self._found, self._found_at = found, time.monotonic()
        value = self._found.get(name, "")
        return value if isinstance(value, str) else ""

    def _client(self) -> tuple[dict[str, str], httpx.BasicAuth | None]:
        secret = self.settings.client_secret.get_secret_value()
        if secret:
            return {}, httpx.BasicAuth(self.settings.client_id, secret)
        return {"client_id": self.settings.client_id}, None

    async def _form(self, endpoint: str, form: dict[str, str]) -> dict[str, Any]:
        url = await self.endpoint(endpoint)
        if not url:
            raise Unavailable(f"the identity provider offers no {endpoint}")
        client, auth = self._client()
        answer = await self._call(
            "POST",
            url,
            data={**client, **form},
            auth=auth,
            headers={"accept": "application/json"},
        )
        try:
            body = answer.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if answer.status_code != 200:
            raise OAuthError(
                str(body.get("error") or f"http_{answer.status_code}"),
                str(body.get("error_description") or ""),
            )
        return body

    async def device_authorization(self) -> dict[str, Any]:
        return await self._form("device_authorization_endpoint", {"scope": self.settings.scopes})

    async def device_token(self, device_code: str) -> dict[str, Any]:
        return await self._form(
            "token_endpoint",
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": device_code,
            },
        )

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        return await self._form(
            "token_endpoint",
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "scope": self.settings.scopes,
            },
        )

    async def revoke(self, refresh_token: str) -> None:
        await self._form(
            "revocation_endpoint",
            {"token": refresh_token, "token_type_hint": "refresh_token"},
        )
