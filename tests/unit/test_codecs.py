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


def test_work_keys_survive_a_recreated_stream_and_leave_room_for_items():
    """A recreated work stream numbers its messages from 1 again: the same sequence accepted
    later must not look like a message applied before (the worker would skip it)."""
    from datetime import UTC, datetime, timedelta

    from core.workers.ingest import MAX_WORK_ITEMS, work_key

    t = datetime(2026, 11, 21, 18, 0, tzinfo=UTC)
    ms = timedelta(milliseconds=1)
    first = {work_key(t + seq // 3 * ms, seq) for seq in range(1, 5000)}  # 3 calls a ms
    again = {work_key(t + timedelta(hours=3) + seq * ms, seq) for seq in range(1, 5000)}
    assert len(first) == len(again) == 4999 and not first & again
    split = {work_key(t, seq) for seq in range(7, 7 + 1024)}  # one call's messages share a time
    assert len(split) == 1024
    late = work_key(datetime(2089, 1, 1, tzinfo=UTC), (1 << 40) - 1)
    assert 0 < late | MAX_WORK_ITEMS < 1 << 63  # a Postgres/Cassandra bigint, items included
    assert all(k & MAX_WORK_ITEMS == 0 for k in first)  # item indexes have their own bits


def test_work_messages_never_hold_more_items_than_their_keys_can_number():
    from datetime import UTC, datetime

    from lily.v1 import events_pb2 as events_pb

    from core.domain.model import AssetDraft, AssetType, WriteContext
    from core.workers.ingest import MAX_WORK_ITEMS, encode_work

    now = datetime.now(UTC)
    ctx = WriteContext(tenant_id="t", actor="a", action="x", now=now)
    drafts = [AssetDraft(f"pg://c{i}", AssetType.COLUMN, now) for i in range(10_000)]
    messages = encode_work(ctx, drafts, "")
    sizes = [len(events_pb.IngestWorkBatch.FromString(m).assets) for m in messages]
    assert sum(sizes) == 10_000 and max(sizes) == MAX_WORK_ITEMS
