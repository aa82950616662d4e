"""Secrets at rest: AES-256-GCM with Lily's secret key (settings.secret_key), each sealed box
bound to what it belongs to (its integration and tenant), so a box copied onto another row does
not open there."""

from __future__ import annotations

import base64
import binascii
import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"  # the box's format: version, 12-byte nonce, ciphertext and tag
_NONCE = 12


class SecretKeyError(ValueError):
    """The configured key is not one (32 bytes, base64)."""


class SealedBoxError(Exception):
    """A box does not open with this key (another key, or not made for this owner)."""


def new_key() -> str:
    """A fresh key, as settings take it (base64 of 32 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class SecretBox:
    def __init__(self, key: str) -> None:
        try:
            raw = base64.urlsafe_b64decode(key.strip().encode() + b"==")
        except (binascii.Error, ValueError):
            raise SecretKeyError("is not base64") from None
        if len(raw) != 32:
            raise SecretKeyError(f"must be 32 bytes, base64 (is {len(raw)} bytes)")
        self._aead = AESGCM(raw)

    def seal(self, secrets: dict[str, str], owner: str) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, orjson.dumps(secrets), owner.encode())
        return _VERSION + nonce + sealed

    def open(self, box: bytes, owner: str) -> dict[str, str]:
        if box[:1] != _VERSION:
            raise SealedBoxError("not a sealed box of this version")
        nonce, sealed = box[1 : 1 + _NONCE], box[1 + _NONCE :]
        try:
            plain = self._aead.decrypt(nonce, sealed, owner.encode())
        except InvalidTag:
            raise SealedBoxError("does not open with this key for this owner") from None
        value = orjson.loads(plain)
        return {str(k): str(v) for k, v in value.items()}
