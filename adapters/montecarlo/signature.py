"""Monte Carlo's webhook signature (docs.getmontecarlo.com/docs/webhooks): the hex HMAC-SHA512,
keyed with the shared secret, of the URL-encoded form of the parsed JSON body, exactly as its
reference receiver computes it (`urllib.parse.urlencode(json.loads(body))`: top-level keys in
their order, nested values as Python writes them), sent in `x-mcd-signature`."""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

HEADER = "x-mcd-signature"


def sign(secret: str, body: Mapping[str, Any]) -> str:
    signed = urllib.parse.urlencode(body).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha512).hexdigest()


def verify(signature: str | None, body: Mapping[str, Any], secrets: Sequence[str]) -> bool:
    """Whether `signature` is the body's under any of `secrets` (the current one, and the
    previous one while its grace lasts), compared in constant time."""
    if not signature or not secrets:
        return False
    given = signature.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:  # every one is checked: the time taken says nothing of which
        matched |= hmac.compare_digest(sign(secret, body).encode("ascii"), given)
    return matched
