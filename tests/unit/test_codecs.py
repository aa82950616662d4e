from __future__ import annotations

import zlib

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


def test_outbox_frames_round_trip():
    from core.events.outbox import pack_events, unpack_events

    events = [
        ("e1", "lily.t.asset.created", b"\x00\x01payload", {"traceparent": "00-abc-def-01"}),
        ("e2", "lily.t.asset.tagged", b"", {}),
        ("é3", "lily.t.issue.attached", bytes(range(256)) * 300, {"a": "ü"}),
    ]
    got = list(unpack_events(7, pack_events(events)))
    assert [(r.id, r.event_id, r.subject, r.payload, dict(r.headers)) for r in got] == [
        (7, *e[:3], e[3]) for e in events
    ]
    assert list(unpack_events(1, b"")) == []
    assert list(unpack_events(1, pack_events([]))) == []
    # Batches written before compression (plain frames) still unpack.
    plain = zlib.decompress(pack_events(events))
    assert [r.payload for r in unpack_events(7, plain)] == [e[2] for e in events]
