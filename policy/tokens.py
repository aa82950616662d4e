"""Credentials on the wire: API keys, Lily's own token issuer, and verification of bearer JWTs
against an issuer's JWKS (Lily's own keys, or an OIDC provider's such as Okta's).

A JWT is accepted only if it is signed with RS256 or ES256 by a key of the issuer it names, the
key's type matches the algorithm (so no alg=none, and no HS256 "signed" with a public key), and
issuer, audience, expiry and not-before hold (with a little leeway for clocks). A key id the
issuer's key set does not have makes the set be fetched again (at most every
`refresh_interval`), so an issuer's key rotation needs no restart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

log = logging.getLogger(__name__)

ALGORITHMS = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}
API_KEY_PREFIX = "lily_"
CREDENTIAL_ID = re.compile(r"^c?[0-9a-f]{16}$")  # an API key's id, or "c" + hex for a client


class CredentialError(Exception):
    """A credential that proves nothing; the message says why (safe to show the caller)."""


# ----------------------------------------------------------------------------- API keys


@dataclass(frozen=True, slots=True)
class NewSecret:
    credential_id: str
    secret: str  # what the holder sends (an API key, or a client secret)
    digest: str  # what Lily keeps


def new_api_key() -> NewSecret:
    key_id = uuid.uuid4().hex[:16]
    secret = secrets.token_urlsafe(32)
    return NewSecret(key_id, f"{API_KEY_PREFIX}{key_id}_{secret}", digest(secret))


def new_client_secret(client_id: str) -> NewSecret:
    secret = secrets.token_urlsafe(32)
    return NewSecret(client_id, secret, digest(secret))


def digest(secret: str) -> str:
    # The secrets are 256 random bits, so a plain hash cannot be brute-forced; a slow password
    # hash would only make every call slower.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(key: str) -> tuple[str, str]:
    """(key id, secret) of an API key; CredentialError if it is not shaped like one."""
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        raise CredentialError("not an API key")
    key_id, _, secret = key[len(API_KEY_PREFIX) :].partition("_")
    if not CREDENTIAL_ID.match(key_id) or not secret:
        raise CredentialError("malformed API key")
    return key_id, secret


def secret_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


# ----------------------------------------------------------------------------- Lily's issuer


def new_signing_key() -> tuple[str, str]:
    """(kid, PEM) of a new EC P-256 key for Lily's issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return uuid.uuid4().hex[:16], pem


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(kid: str, pem: str) -> dict[str, str]:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "x": _b64(numbers.x),
        "y": _b64(numbers.y),
    }


@dataclass
class Issuer:
    """Lily's own token issuer: signs with the newest key; verifies with any not retired."""

    url: str
    audience: str
    keys: dict[str, str] = field(default_factory=dict)  # kid -> private PEM, oldest first

    def issue(
        self,
        *,
        subject: str,
        tenant_id: str,
        client_id: str = "",
        session_id: str = "",
        ttl: int,
        now: float | None = None,
    ) -> tuple[str, int]:
        """(token, expiry as epoch seconds) for an OAuth2 client's or a session's principal."""
        kid, pem = next(reversed(self.keys.items()))
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.url,
            "aud": self.audience,
            "sub": subject,
            "tid": tenant_id,
            **({"sid": session_id} if session_id else {"cid": client_id}),
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl,
        }
        return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": kid}), issued + ttl

    def jwks(self) -> list[dict[str, str]]:
        return [public_jwk(kid, pem) for kid, pem in self.keys.items()]


# ----------------------------------------------------------------------------- verification


@dataclass
class KeySet:
    """One issuer's public keys, by kid, and how to fetch them again."""

    issuer: str
    audience: str
    fetch: Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]
    refresh_interval: float = 30.0
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self.keys and time.monotonic() - self.fetched_at >= self.refresh_interval:
            async with self._lock:
                if kid not in self.keys and (
                    time.monotonic() - self.fetched_at >= self.refresh_interval
                ):
                    await self.refresh()
        return self.keys.get(kid)

    async def refresh(self) -> None:
        self.fetched_at = time.monotonic()
        try:
            found = await self.fetch()
        except (httpx.HTTPError, ValueError, KeyError, TimeoutError) as exc:
            log.warning("JWKS of %s could not be fetched: %r", self.issuer, exc)
            return
        keys: dict[str, jwt.PyJWK] = {}
        for data in found:
            try:
                k = jwt.PyJWK(dict(data))
            except jwt.PyJWTError as exc:
                log.info("JWKS of %s: key %s skipped: %s", self.issuer, data.get("kid"), exc)
                continue
            if k.key_id:
                keys[k.key_id] = k
        self.keys = keys
        log.info("JWKS of %s: %d keys", self.issuer, len(keys))


def oidc_fetcher(
    issuer: str, jwks_url: str = "", timeout: float = 5.0
) -> Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]:
    """Fetches an OIDC issuer's keys: from `jwks_url`, or from the jwks_uri its discovery
    document (`<issuer>/.well-known/openid-configuration`) names."""

    async def fetch() -> Sequence[Mapping[str, Any]]:
        async with httpx.AsyncClient(timeout=timeout) as client:
            url = jwks_url
            if not url:
                found = await client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
                found.raise_for_status()
                url = found.json()["jwks_uri"]
            response = await client.get(url)
            response.raise_for_status()
            keys = response.json()["keys"]
            if not isinstance(keys, list):
                raise ValueError("keys is not a list")
            return keys

    return fetch


async def verify_jwt(
    token: str, key_sets: Mapping[str, KeySet], leeway: float, audience: str = ""
) -> dict[str, Any]:
    """The claims of a JWT signed by one of `key_sets`' issuers (see the module docstring),
    for `audience` (default: the issuer's; an ID token's is the client's id); CredentialError
    otherwise."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise CredentialError("malformed token") from exc
    alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
    if alg not in ALGORITHMS:
        raise CredentialError(f"token algorithm {alg!r} is not accepted (RS256 or ES256)")
    keys = key_sets.get(iss) if isinstance(iss, str) else None
    if keys is None:
        raise CredentialError("token issuer is not trusted")
    if not isinstance(kid, str):
        raise CredentialError("token has no key id")
    key = await keys.key(kid)
    if key is None:
        raise CredentialError("token is signed by a key its issuer does not publish")
    if not isinstance(key.key, ALGORITHMS[alg]):
        raise CredentialError(f"token algorithm {alg} does not fit its key")
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience or keys.audience,
            issuer=keys.issuer,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise CredentialError("token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise CredentialError("token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise CredentialError("token is for another audience") from exc
    except jwt.PyJWTError as exc:
        raise CredentialError(f"token is invalid: {exc}") from exc
