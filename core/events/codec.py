"""Domain Change <-> lily.v1.ChangeEvent, the payload of every change event; and the
ChangeEventBatch that carries several events of one subject as one message."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import events_pb2 as events_pb

from core.domain.model import Change
from core.wire import common


@functools.lru_cache(maxsize=64)
def _timestamp(at: datetime) -> Timestamp:
    # The changes of one transaction share their time: convert it once.
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def encode_change(change: Change) -> bytes:
    # Hot (an event per changed asset): the always-set fields in the constructor, the rest only
    # when present (protobuf treats unset and empty alike).
    event = events_pb.ChangeEvent(
        event_id=change.event_id,
        tenant_id=change.tenant_id,
        entity=events_pb.EntityKind.ValueType(change.entity),
        change=events_pb.ChangeKind.ValueType(change.change),
        asset_id=change.asset_id,
        qualified_name=change.qualified_name,
        asset_type=common_pb.AssetType.ValueType(change.asset_type or 0),
        asset_version=change.asset_version,
        changed_fields=change.changed_fields,
        actor=change.actor,
        request_id=change.request_id,
        occurred_at=_timestamp(change.occurred_at),
    )
    if change.cause_event_id:
        event.cause_event_id = change.cause_event_id
    if change.tags:
        event.tags.extend(change.tags)
    if change.tags_added:
        event.tags_added.extend(change.tags_added)
    if change.tags_removed:
        event.tags_removed.extend(change.tags_removed)
    if change.own_tags_moved:
        event.own_tags_moved.extend(change.own_tags_moved)
        event.propagate_tags_moved.extend(change.propagate_tags_moved)
    if change.unhealthy_upstream:
        event.unhealthy_upstream_asset_ids.extend(change.unhealthy_upstream)
    if change.issue is not None:
        event.issue.CopyFrom(common.issue_to_pb(change.issue))
    if change.relationship is not None:
        event.relationship.CopyFrom(common.relationship_to_pb(change.relationship))
    return event.SerializeToString()


# A message with this header is a ChangeEventBatch of that many events (see events.proto).
BATCH_HEADER = "Lily-Events"


def pack_batch(payloads: Sequence[bytes]) -> bytes:
    """Encoded ChangeEvents as one encoded ChangeEventBatch (field 1, each length-delimited),
    without decoding them."""
    parts: list[bytes] = []
    for payload in payloads:
        n, prefix = len(payload), bytearray(b"\x0a")
        while n > 0x7F:
            prefix.append((n & 0x7F) | 0x80)
            n >>= 7
        prefix.append(n)
        parts += (bytes(prefix), payload)
    return b"".join(parts)


def events_of(payload: bytes, headers: Mapping[str, str] | None) -> Sequence[events_pb.ChangeEvent]:
    """The change events of one message of a change stream: one, or a batch's."""
    if headers and BATCH_HEADER in headers:
        return events_pb.ChangeEventBatch.FromString(payload).events
    return [events_pb.ChangeEvent.FromString(payload)]
