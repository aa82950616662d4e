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

What a poll reads (adapters/montecarlo/poll.py) is an alert of getAlerts, as its API answers
(`id`, `title`, `type`, `subTypes`, `status`, `severity`, `url`, `tables` with `tableId` and
`mcon`): the incident as it stands now (an incident is an alert since Monte Carlo renamed
them; the id is the same). It is a `POLLED` body, mapped by `alert_change`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycarlo.common.mcon import MCONParser

from adapters.montecarlo.config import MonteCarloSettings

SOURCE = "monte_carlo"
RESOLVING = frozenset({"fixed", "expected", "no_action_needed", "false_positive"})
ACKNOWLEDGING = frozenset({"investigating", "work_in_progress"})
SEVERITIES = {"SEV-1": "CRITICAL", "SEV-2": "HIGH", "SEV-3": "MEDIUM", "SEV-4": "LOW"}
# an alert's status (getAlerts; none: open) and severity, as Lily has them
ALERT_STATUSES = {
    "ACKNOWLEDGED": "ACKNOWLEDGED",
    "WORK_IN_PROGRESS": "ACKNOWLEDGED",
    **dict.fromkeys(("FIXED", "EXPECTED", "NO_ACTION_NEEDED", "FALSE_POSITIVE"), "RESOLVED"),
}
ALERT_SEVERITIES = {"SEV_1": "CRITICAL", "SEV_2": "HIGH", "SEV_3": "MEDIUM", "SEV_4": "LOW"}
POLLED = "getAlerts"  # the `polled` of a body a poll made: {"polled": POLLED, "alert": {...}}


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """An incident opened or changed, and the tables it concerns (as Lily names them)."""

    incident_id: str
    # an open_*_incident: the incident itself; else an update of one (a polled alert is one
    # too, with its kind, title and description for an incident Lily has not seen yet)
    opened: bool
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


def table_of_mcon(mcon: str) -> tuple[str, str]:
    """(full table id, warehouse uuid) of a table's MCON (Monte Carlo's object name,
    `MCON++<account>++<warehouse>++table++<full table id>`); ("", "") if it names no table."""
    try:
        parsed = MCONParser.parse_mcon(mcon)
    except (ValueError, IndexError):
        return "", ""
    if parsed is None or parsed.object_type != "table":
        return "", ""
    return parsed.object_id, str(parsed.resource_id)


def _table(named: Mapping[str, Any], *id_keys: str) -> tuple[str, str]:
    """(full table id, warehouse) as an event or alert names a table: by id (with the
    warehouse's uuid beside it) or by MCON (which holds both)."""
    by_mcon, warehouse = table_of_mcon(_text(named.get("mcon")))
    table = next((_text(named.get(k)) for k in id_keys if _text(named.get(k))), by_mcon)
    return table, _text(named.get("warehouse_uuid")) or warehouse


def _tables(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(full table id, warehouse) of every table the payload names, in order, once each."""
    found: list[tuple[str, str]] = []
    rule = _dict(payload.get("rule"))
    for event in _list(payload.get("event_list")):
        event = _dict(event)
        table, warehouse = _table(event, "full_table_id", "table_name")
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


def _names(
    tables: list[tuple[str, str]], settings: MonteCarloSettings
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The qualified names of the tables, and the tables no prefix maps."""
    names: list[str] = []
    unnamed: list[str] = []
    for table, warehouse in tables:
        name = qualified_name(table, warehouse, settings)
        (names if name else unnamed).append(name or table)
    return tuple(names), tuple(unnamed)


def change_of(body: Mapping[str, Any], settings: MonteCarloSettings) -> IncidentChange | Unmapped:
    """What a delivery says: a webhook's body, or an alert a poll read."""
    if body.get("polled") == POLLED:
        return alert_change(_dict(body.get("alert")), settings)
    return incident_change(body, settings)


def _kind_of_alert(alert_type: str) -> str:
    """ANOMALIES -> anomaly, SCHEMA_CHANGES -> schema_change, DBT_ERRORS -> dbt_error."""
    kind = alert_type.lower()
    if kind.endswith("ies"):
        return kind[:-3] + "y"
    return kind.removesuffix("s")


def alert_change(
    alert: Mapping[str, Any], settings: MonteCarloSettings
) -> IncidentChange | Unmapped:
    """An alert as a poll read it: the incident as it stands (its status and severity now,
    the tables it concerns; its kind, title and description if Lily has not seen it yet)."""
    incident_id = _text(alert.get("id")) or _text(alert.get("uuid"))
    if not incident_id:
        return Unmapped("a polled alert without an id")
    tables = [_table(_dict(t), "tableId") for t in _list(alert.get("tables"))]
    names, unnamed = _names(list(dict.fromkeys(t for t in tables if t[0])), settings)
    kind = _kind_of_alert(_text(alert.get("type")))
    subtypes = [_text(t).lower().replace("_", " ") for t in _list(alert.get("subTypes"))]
    title = _text(alert.get("title")) or _text(alert.get("name")) or kind.replace("_", " ")
    return IncidentChange(
        incident_id=incident_id,
        opened=False,
        kind=kind,
        status=ALERT_STATUSES.get(_text(alert.get("status")), "OPEN"),
        severity=ALERT_SEVERITIES.get(_text(alert.get("severity")), ""),
        title=title[:500],
        description="; ".join(s for s in subtypes if s)[:4000],
        url=_text(alert.get("url")),
        qualified_names=names,
        unnamed=unnamed,
    )


def incident_change(
    body: Mapping[str, Any], settings: MonteCarloSettings
) -> IncidentChange | Unmapped:
    kind_of = _text(body.get("type"))
    payload = _dict(body.get("payload"))
    incident_id = _text(payload.get("incident_id")) or _text(body.get("incident_id"))
    if _text(body.get("action")) not in ("", "incident") or not incident_id:
        return Unmapped(f"not an incident (type {kind_of or 'none'!r})")
    names, unnamed = _names(_tables(payload), settings)
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
        qualified_names=names,
        unnamed=unnamed,
    )
