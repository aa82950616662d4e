"""The adapter runtime and the integration registry speak of the same streams."""

from __future__ import annotations


def test_the_registry_reads_the_streams_the_runtime_writes():
    from adapters.runtime import inbox
    from policy.stores import kept_nats

    assert kept_nats.KEPT_STREAM == inbox.KEPT_STREAM
    assert kept_nats.INBOX_STREAM == inbox.INBOX_STREAM
    assert inbox.inbox_subject("t", "i") == "lily_inbound.t.i"
