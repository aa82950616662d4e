"""Monte Carlo webhook bodies -> what Lily should do with them. Pure functions: no I/O.

What a body says (docs.getmontecarlo.com/docs/webhooks; the envelope `account`, `action`,
`type`, `version` and `payload` with `incident_id`, `url`, `group_id` and `event_list`):
- `type` `open_<kind>_incident` opens an incident (`open_anomaly_incident`,
  `open_custom_rule_anomaly_incident`, ...); each event names a table (`full_table_id`, e.g.
  `analytics:prod.orders`, or `table_name`) and says what happened (`event_details`, or a
  rule's comparisons and hits).
- An update repeats `incident_id` and carries what changed: `alert_feedback` (investigating,
  work_in_progress, no_status; or fixed, expected, no_action_needed, false_positive, which
  resolve it), `declared_alert_severity` (SEV-1 to SEV-4, or null), `owner`.
A field that is missing is never an error; a body that is not an incident is `Unmapped`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.montecarlo.config import MonteCarloSettings

SOURCE = "monte_carlo"
RESOLVING = frozenset({"fixed", "expected", "no_action_needed", "false_positive"})
ACKNOWLEDGING = frozenset({"investigating", "work_in_progress"})
SEVERITIES = {"SEV-1": "CRITICAL", "SEV-2": "HIGH", "SEV-3": "MEDIUM", "SEV-4": "LOW"}


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """An incident opened or changed, and the tables it concerns (as Lily names them)."""

    incident_id: str
    opened: bool  # an open_*_incident: the incident itself; else an update of one
    kind: str = ""  # what Monte Carlo calls it: anomaly, custom_rule_anomaly, ...
    status: str = ""  # OPEN | ACKNOWLEDGED | RESOLVED ("" : unchanged)
    severity: str = ""  # CRITICAL | HIGH | MEDIUM | LOW ("" : unchanged)
    title: str = ""
    description: str = ""
    url: str = ""
    qualified_names: tuple[str, ...] = ()
    unnamed: tuple[str, ...] = field(default=())  # tables it names that no prefix maps


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A body Lily does not map (kept as such, never an error)."""

    reason: str


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def qualified_name(table_id: str, warehouse: str, settings: MonteCarloSettings) -> str | None:
    """Monte Carlo's full table id (`database:schema.table`; BigQuery: `project:dataset.table`)
    as a qualified name under the warehouse's prefix: `<prefix>/<database>/<schema>/<table>`;
    None if no prefix applies or the id is not one."""
    prefix = settings.warehouses.get(warehouse, "") if warehouse else ""
    prefix = prefix or settings.default_prefix
    database, sep, rest = table_id.partition(":")
    schema, dot, table = rest.partition(".")
    if not (prefix and sep and dot and database and schema and table):
        return None
    return f"{prefix}/{database}/{schema}/{table}"


def _tables(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(full table id, warehouse) of every table the payload names, in order, once each."""
    found: list[tuple[str, str]] = []
    rule = _dict(payload.get("rule"))
    for event in _list(payload.get("event_list")):
        event = _dict(event)
        warehouse = _text(event.get("warehouse_uuid"))
        table = _text(event.get("full_table_id")) or _text(event.get("table_name"))
        if table:
            found.append((table, warehouse))
        rule = rule or _dict(event.get("rule"))
    for comparison in _list(rule.get("comparisons")):
        comparison = _dict(comparison)
        table = _text(comparison.get("full_table_id"))
        if table:
            found.append((table, _text(comparison.get("warehouse_uuid"))))
    return list(dict.fromkeys(found))


def _title(kind: str, payload: Mapping[str, Any]) -> tuple[str, str]:
    """A title and description from what the events say."""
    events = [_dict(e) for e in _list(payload.get("event_list"))]
    details = [_text(e.get("event_details")) for e in events if _text(e.get("event_details"))]
    rule = _dict(payload.get("rule")) or next(
        (_dict(e.get("rule")) for e in events if _dict(e.get("rule"))), {}
    )
    description = "\n".join(details)
    title = details[0] if details else ""
    if rule:
        title = _text(rule.get("description")) or title
        comparisons = [
            f"{_text(c.get('metric'))} {c.get('operator', '')} {c.get('threshold', '')}".strip()
            for c in map(_dict, _list(rule.get("comparisons")))
        ]
        hits = [
            f"{_text(h.get('measurement_timestamp'))}: {_text(h.get('value'))}"
            for e in events
            for h in map(_dict, _list(_dict(e.get("data")).get("hits")))
        ]
        description = "\n".join(
            p
            for p in (
                f"rule {_text(rule.get('uuid'))} ({_text(rule.get('rule_type'))})",
                "breached: " + "; ".join(c for c in comparisons if c) if comparisons else "",
                "measured: " + "; ".join(hits) if hits else "",
                description,
            )
            if p
        )
    return (title or kind.replace("_", " "))[:500], description[:4000]


def incident_change(
    body: Mapping[str, Any], settings: MonteCarloSettings
) -> IncidentChange | Unmapped:
    kind_of = _text(body.get("type"))
    payload = _dict(body.get("payload"))
    incident_id = _text(payload.get("incident_id")) or _text(body.get("incident_id"))
    if _text(body.get("action")) not in ("", "incident") or not incident_id:
        return Unmapped(f"not an incident (type {kind_of or 'none'!r})")
    tables = _tables(payload)
    names: list[str] = []
    unnamed: list[str] = []
    for table, warehouse in tables:
        name = qualified_name(table, warehouse, settings)
        (names if name else unnamed).append(name or table)
    # update fields: at the top level or in the payload (both are seen)
    feedback = _text(payload.get("alert_feedback")) or _text(body.get("alert_feedback"))
    declared = payload.get("declared_alert_severity", body.get("declared_alert_severity"))
    status = ""
    if feedback in RESOLVING:
        status = "RESOLVED"
    elif feedback in ACKNOWLEDGING:
        status = "ACKNOWLEDGED"
    elif feedback == "no_status":
        status = "OPEN"
    severity = SEVERITIES.get(_text(declared), "")
    opened = kind_of.startswith("open_") and kind_of.endswith("_incident")
    if not opened and not (status or severity or "declared_alert_severity" in payload):
        if not feedback and "owner" not in payload and "owner" not in body:
            return Unmapped(f"type {kind_of or 'none'!r} says nothing Lily maps")
    kind = kind_of.removeprefix("open_").removesuffix("_incident") if opened else ""
    title, description = _title(kind, payload) if opened else ("", "")
    return IncidentChange(
        incident_id=incident_id,
        opened=opened,
        kind=kind,
        status=status or ("OPEN" if opened else ""),
        severity=severity,
        title=title,
        description=description,
        url=_text(payload.get("url")),
        qualified_names=tuple(names),
        unnamed=tuple(unnamed),
    )
