from __future__ import annotations

import pytest

from core.domain.errors import InvalidArgument
from core.metadata.pagination import PageTokens


def test_tokens_round_trip_and_are_bound_to_tenant_query_and_secret():
    tokens = PageTokens(b"k" * 32)
    fp = PageTokens.fingerprint("search", "x")
    token = tokens.encode("acme", fp, ["pg://a", 3])
    assert tokens.decode(token, "acme", fp) == ["pg://a", 3]
    assert tokens.decode("", "acme", fp) is None
    for args in (("other", fp), ("acme", PageTokens.fingerprint("search", "y"))):
        with pytest.raises(InvalidArgument):
            tokens.decode(token, *args)
    with pytest.raises(InvalidArgument):
        PageTokens(b"z" * 32).decode(token, "acme", fp)
    for junk in ("%%%", "AAAA", token[:-3]):
        with pytest.raises(InvalidArgument):
            tokens.decode(junk, "acme", fp)
