"""quality.proto requests and replies <-> what QualityService takes and answers. Decoding
validates: every problem of a request is raised together as one InvalidArgument."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from lily.v1 import quality_pb2 as quality_pb

from core.domain.errors import FieldViolation
from core.domain.model import IssueSeverity
from core.domain.quality import MAX_WINDOW, Rule, RuleType, UsageWindow
from core.domain.rules import asset_id_for
from core.wire.common import ts_pb
from core.wire.validation import (
    MAX_CLOCK_SKEW,
    MAX_DESCRIPTION_BYTES,
    MAX_QUALIFIED_NAME_BYTES,
    MAX_TEXT_BYTES,
    check_asset_id,
    check_batch,
    check_mask,
    check_text,
    optional_timestamp,
    refuse,
)

UPDATABLE = (
    "asset_id",
    "qualified_name_prefix",
    "threshold",
    "severity",
    "disabled",
    "description",
)
MAX_THRESHOLD = 1_000_000.0


def _fields(pb: quality_pb.Rule, paths: Sequence[str], out: list[FieldViolation]) -> dict[str, Any]:
    """The rule fields named in `paths`, checked."""
    values: dict[str, Any] = {}
    for path in paths:
        if path == "asset_id":
            if pb.asset_id:
                check_asset_id("rule.asset_id", pb.asset_id, out)
            values["asset_id"] = pb.asset_id
        elif path == "qualified_name_prefix":
            check_text(
                "rule.qualified_name_prefix",
                pb.qualified_name_prefix,
                MAX_QUALIFIED_NAME_BYTES,
                out,
            )
            values["qualified_name_prefix"] = pb.qualified_name_prefix
        elif path == "threshold":
            if not math.isfinite(pb.threshold) or not 0 <= pb.threshold <= MAX_THRESHOLD:
                out.append(FieldViolation("rule.threshold", f"must be from 0 to {MAX_THRESHOLD:g}"))
            values["threshold"] = pb.threshold
        elif path == "severity":
            try:
                values["severity"] = IssueSeverity(pb.severity or IssueSeverity.MEDIUM)
            except ValueError:
                out.append(FieldViolation("rule.severity", f"is not a severity ({pb.severity})"))
        elif path == "disabled":
            values["disabled"] = pb.disabled
        elif path == "description":
            check_text("rule.description", pb.description, MAX_DESCRIPTION_BYTES, out)
            values["description"] = pb.description
    return values


def _one_scope(values: dict[str, Any], out: list[FieldViolation]) -> None:
    if values.get("asset_id") and values.get("qualified_name_prefix"):
        out.append(
            FieldViolation(
                "rule.qualified_name_prefix", "must be empty when the rule is on one asset_id"
            )
        )


def rule_type_of(path: str, value: int, out: list[FieldViolation]) -> RuleType:
    if value not in RuleType._value2member_map_ or value == RuleType.UNSPECIFIED:
        out.append(FieldViolation(path, f"must be one of the RuleType values (not {value})"))
        return RuleType.UNSPECIFIED
    return RuleType(value)


def new_rule_from_pb(request: quality_pb.CreateRuleRequest) -> tuple[RuleType, dict[str, Any]]:
    problems: list[FieldViolation] = []
    pb = request.rule
    kind = rule_type_of("rule.type", pb.type, problems)
    values = _fields(pb, UPDATABLE, problems)
    _one_scope(values, problems)
    refuse(problems)
    return kind, values


def update_from_pb(request: quality_pb.UpdateRuleRequest) -> tuple[str, dict[str, Any]]:
    problems: list[FieldViolation] = []
    check_asset_id("rule_id", request.rule_id, problems)
    paths = list(request.update_mask.paths)
    check_mask(paths, UPDATABLE, problems)
    values = _fields(request.rule, paths, problems)
    refuse(problems)
    return request.rule_id, values


def rule_to_pb(rule: Rule) -> quality_pb.Rule:
    return quality_pb.Rule(
        rule_id=rule.rule_id,
        type=int(rule.type),  # type: ignore[arg-type]
        asset_id=rule.asset_id,
        qualified_name_prefix=rule.qualified_name_prefix,
        threshold=rule.threshold,
        severity=int(rule.severity),  # type: ignore[arg-type]
        disabled=rule.disabled,
        description=rule.description,
        created_at=ts_pb(rule.created_at),
        updated_at=ts_pb(rule.updated_at),
        evaluated_at=ts_pb(rule.evaluated_at),
    )


def usage_from_pb(
    tenant_id: str, usage: Sequence[quality_pb.Usage], now: datetime
) -> list[UsageWindow]:
    """The windows of a RecordUsage, all valid or refused together."""
    check_batch("usage", len(usage))
    problems: list[FieldViolation] = []
    windows = []
    for i, u in enumerate(usage):
        path = f"usage[{i}]"
        if bool(u.asset_id) == bool(u.qualified_name):
            problems.append(FieldViolation(path, "name the asset by asset_id or qualified_name"))
        elif u.asset_id:
            check_asset_id(f"{path}.asset_id", u.asset_id, problems)
        else:
            check_text(
                f"{path}.qualified_name", u.qualified_name, MAX_QUALIFIED_NAME_BYTES, problems
            )
        start = optional_timestamp(f"{path}.window_start", u.window_start, problems)
        end = optional_timestamp(f"{path}.window_end", u.window_end, problems)
        if start is None or end is None:
            problems.append(FieldViolation(path, "window_start and window_end are required"))
        elif not start < end <= start + MAX_WINDOW:
            problems.append(
                FieldViolation(
                    f"{path}.window_end", "must be after window_start, by 31 days at most"
                )
            )
        elif end > now + MAX_CLOCK_SKEW:
            problems.append(FieldViolation(f"{path}.window_end", "is in the future"))
        if u.query_count < 0 or u.distinct_users < 0:
            problems.append(FieldViolation(path, "counts cannot be negative"))
        check_text(f"{path}.run_id", u.run_id, MAX_TEXT_BYTES, problems)
        if start is not None and end is not None:
            asset_id = u.asset_id or asset_id_for(tenant_id, u.qualified_name)
            windows.append(
                UsageWindow(asset_id, start, end, u.query_count, u.distinct_users, u.run_id)
            )
    refuse(problems)
    return windows


def usage_to_pb(w: UsageWindow) -> quality_pb.Usage:
    return quality_pb.Usage(
        asset_id=w.asset_id,
        window_start=ts_pb(w.start),
        window_end=ts_pb(w.end),
        query_count=w.query_count,
        distinct_users=w.distinct_users,
        run_id=w.run_id,
    )
