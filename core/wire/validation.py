"""Input limits and checks shared by every service.

Checks collect every problem of an input as field violations (paths as in the request, e.g.
"assets[3].qualified_name") instead of stopping at the first; the caller raises them together
as one InvalidArgument (google.rpc.BadRequest on the wire)."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from core.domain.errors import FieldViolation, InvalidArgument

MAX_BATCH = 1000  # items per ingest or relationship call
MAX_QUALIFIED_NAME_BYTES = 2048
MAX_TEXT_BYTES = 1024
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_LIST = 256
MAX_ATTRIBUTE_VALUE_BYTES = 4 * 1024
MAX_TAG_BYTES = 128
# A write may claim a source event time at most this far ahead of the server's clock: a time far
# in the future would make every later, genuine write look stale.
MAX_CLOCK_SKEW = timedelta(minutes=5)
_ID = re.compile(r"^[0-9a-f]{32}$")


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def check_text(
    path: str, value: str, limit: int, out: list[FieldViolation], *, required: bool = False
) -> None:
    if not value:
        if required:
            out.append(FieldViolation(path, "is required"))
        return
    if required and not value.strip():
        out.append(FieldViolation(path, "is required"))
    elif len(value) * 4 > limit and _utf8_len(value) > limit:  # (4 bytes a character at most)
        out.append(FieldViolation(path, f"is longer than {limit} bytes"))
    elif "\x00" in value:
        out.append(FieldViolation(path, "contains a NUL character"))


def check_strings(
    path: str, values: list[str] | tuple[str, ...], out: list[FieldViolation]
) -> None:
    if len(values) > MAX_LIST:
        out.append(FieldViolation(path, f"has more than {MAX_LIST} entries"))
        return
    for i, v in enumerate(values):
        check_text(f"{path}[{i}]", v, MAX_TEXT_BYTES, out, required=True)


def check_attributes(path: str, attributes: Mapping[str, str], out: list[FieldViolation]) -> None:
    if len(attributes) > MAX_LIST:
        out.append(FieldViolation(path, f"has more than {MAX_LIST} entries"))
        return
    for k, v in attributes.items():
        check_text(f"{path}[{k!r}]", k, MAX_TEXT_BYTES, out, required=True)
        check_text(f"{path}[{k!r}]", v, MAX_ATTRIBUTE_VALUE_BYTES, out)


def check_asset_id(path: str, value: str, out: list[FieldViolation]) -> None:
    if not value:
        out.append(FieldViolation(path, "is required"))
    elif not _ID.match(value):
        out.append(FieldViolation(path, "is not a Lily id (32 lowercase hex digits)"))


def require_id(field: str, value: str) -> None:
    """Refuses (INVALID_ARGUMENT) a value that is not a Lily id."""
    problems: list[FieldViolation] = []
    check_asset_id(field, value, problems)
    if problems:
        raise InvalidArgument(problems)


def check_batch(field: str, size: int) -> None:
    """Refuses (INVALID_ARGUMENT) a batch of more than MAX_BATCH items."""
    if size > MAX_BATCH:
        raise InvalidArgument(
            [FieldViolation(field, f"has {size} entries; at most {MAX_BATCH} per batch")]
        )


def check_mask(paths: Sequence[str], updatable: Collection[str], out: list[FieldViolation]) -> None:
    """An update's field mask must name one or more of the fields it may change."""
    unknown = [p for p in paths if p not in updatable]
    if not paths or unknown:
        out.append(
            FieldViolation(
                "update_mask",
                f"name one or more of {', '.join(sorted(updatable))}"
                + (f" (not {', '.join(unknown)})" if unknown else ""),
            )
        )


def check_query(**fields: tuple[str, int]) -> None:
    """Refuses (INVALID_ARGUMENT) query text a store cannot take: too long, or with a NUL."""
    problems: list[FieldViolation] = []
    for name, (value, limit) in fields.items():
        check_text(name, value, limit, problems)
    refuse(problems)


def refuse(problems: list[FieldViolation]) -> None:
    """Raises the problems found as one InvalidArgument, if there are any."""
    if problems:
        raise InvalidArgument(problems)


def optional_timestamp(path: str, ts: Timestamp, out: list[FieldViolation]) -> datetime | None:
    """A Timestamp field as an aware datetime truncated to microseconds (what the stores
    keep), or None when unset (or, with a problem in `out`, out of range)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    if not (0 <= ts.nanos < 1_000_000_000) or not (0 < ts.seconds < 253402300800):
        out.append(FieldViolation(path, "is not a valid timestamp"))
        return None
    return datetime.fromtimestamp(ts.seconds, UTC) + timedelta(microseconds=ts.nanos // 1000)


def timestamp_or(
    path: str, ts: Timestamp, default: datetime, out: list[FieldViolation]
) -> datetime:
    """A Timestamp field as an aware datetime truncated to microseconds (what the stores
    keep), or `default` when unset."""
    value = optional_timestamp(path, ts, out)
    if value is None:
        return default
    if value > default + MAX_CLOCK_SKEW:
        out.append(FieldViolation(path, "is more than 5 minutes in the future"))
    return value
