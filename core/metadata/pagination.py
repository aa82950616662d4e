"""Opaque, signed page tokens. A token names its tenant and a fingerprint of its query, so a
token from another query or tenant, or one that was tampered with, is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from core.domain.errors import FieldViolation, InvalidArgument


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @staticmethod
    def fingerprint(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]

    def encode(self, tenant_id: str, fingerprint: str, key: Any) -> str:
        body = json.dumps({"t": tenant_id, "q": fingerprint, "k": key}, separators=(",", ":"))
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + body.encode()).decode().rstrip("=")

    def decode(
        self, token: str, tenant_id: str, fingerprint: str, field: str = "page_token"
    ) -> Any:
        """The key of a token made by encode() for this tenant and query, or None for ""."""
        if not token:
            return None
        bad = InvalidArgument([FieldViolation(field, "is not a page token of this query")])
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, body = raw[:16], raw[16:]
            if not hmac.compare_digest(
                mac, hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
            ):
                raise bad
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad from exc
        if data.get("t") != tenant_id or data.get("q") != fingerprint:
            raise bad
        return data.get("k")


def page_size(requested: int, most: int = 1000, default: int = 100) -> int:
    """A request's page size: `default` when 0 (unset); INVALID_ARGUMENT outside 0..most."""
    if requested < 0 or requested > most:
        raise InvalidArgument([FieldViolation("page_size", f"must be between 0 and {most}")])
    return requested or default
