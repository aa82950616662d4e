"""Monte Carlo's webhook signature and the mapping of its bodies, without servers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.parse
from dataclasses import asdict
from pathlib import Path

from adapters.montecarlo import signature
from adapters.montecarlo.config import MonteCarloSettings
from adapters.montecarlo.mapping import (
    IncidentChange,
    Unmapped,
    alert_change,
    change_of,
    incident_change,
    qualified_name,
    table_of_mcon,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "montecarlo"
SETTINGS = MonteCarloSettings(
    warehouses={"wh-snow": "snowflake://acct", "wh-bq": "bigquery://proj"},
    default_prefix="postgres://db1",
)


def test_the_signature_is_monte_carlos_and_checked_against_every_live_secret():
    body = json.loads((FIXTURES / "custom_rule_incident.json").read_text())
    documented = hmac.new(
        b"s3cret", urllib.parse.urlencode(body).encode("utf8"), hashlib.sha512
    ).hexdigest()
    assert signature.sign("s3cret", body) == documented
    assert signature.verify(documented, body, ["s3cret"])
    assert signature.verify(documented.upper(), body, ["new", "s3cret"])  # the previous one
    assert not signature.verify(documented, body, ["other"])
    assert not signature.verify(None, body, ["s3cret"]) and not signature.verify("", body, [])
    tampered = {**body, "type": "open_anomaly_incident"}
    assert not signature.verify(documented, tampered, ["s3cret"])


def test_monte_carlo_table_ids_become_qualified_names_under_their_warehouse():
    assert qualified_name("analytics:prod.orders", "wh-snow", SETTINGS) == (
        "snowflake://acct/analytics/prod/orders"
    )
    assert (
        qualified_name("proj-1:dataset.t", "wh-bq", SETTINGS) == "bigquery://proj/proj-1/dataset/t"
    )
    assert qualified_name("db:s.t", "unknown", SETTINGS) == "postgres://db1/db/s/t"
    assert qualified_name("no-colon.t", "wh-snow", SETTINGS) is None
    assert qualified_name("db:s.t", "x", MonteCarloSettings()) is None  # no prefix applies


def test_an_opened_anomaly_names_its_tables_and_says_what_happened():
    body = {
        "action": "incident",
        "type": "open_anomaly_incident",
        "payload": {
            "incident_id": "inc-1",
            "url": "https://getmontecarlo.com/incidents/inc-1",
            "event_list": [
                {"event_details": "Has 42 rows vs. 101 expected", "full_table_id": "a:b.c",
                 "warehouse_uuid": "wh-snow"},
                {"event_details": "Late by 3 hours", "table_name": "nowhere"},
            ],
        },
    }  # fmt: skip
    assert incident_change(body, SETTINGS) == IncidentChange(
        incident_id="inc-1",
        opened=True,
        kind="anomaly",
        status="OPEN",
        title="Has 42 rows vs. 101 expected",
        description="Has 42 rows vs. 101 expected\nLate by 3 hours",
        url="https://getmontecarlo.com/incidents/inc-1",
        qualified_names=("snowflake://acct/a/b/c",),
        unnamed=("nowhere",),
    )


def test_a_custom_rule_breach_is_described_by_its_rule():
    body = json.loads((FIXTURES / "custom_rule_incident.json").read_text())
    change = incident_change(body, SETTINGS)
    assert isinstance(change, IncidentChange)
    assert change.incident_id == "f83867b6-8f25-428b-807c-08518f63384c"
    assert change.kind == "custom_rule_anomaly" and change.title == "test rule"
    assert "custom_metric_1234 GT 49.0" in change.description
    assert "Jan 15, 06:10PM: 50.0" in change.description
    assert change.qualified_names == () and change.unnamed == ()  # it names no table


def test_updates_change_status_and_severity_only():
    def update(**fields):
        return incident_change({"payload": {"incident_id": "i", **fields}}, SETTINGS)

    assert update(alert_feedback="fixed") == IncidentChange("i", False, status="RESOLVED")
    assert update(alert_feedback="false_positive").status == "RESOLVED"
    assert update(alert_feedback="investigating").status == "ACKNOWLEDGED"
    assert update(alert_feedback="no_status").status == "OPEN"
    sev1 = IncidentChange("i", False, severity="CRITICAL")
    assert update(declared_alert_severity="SEV-1") == sev1
    assert update(declared_alert_severity="SEV-4").severity == "LOW"
    top = incident_change({"alert_feedback": "fixed", "payload": {"incident_id": "i"}}, SETTINGS)
    assert isinstance(top, IncidentChange) and top.status == "RESOLVED"


def test_what_is_not_an_incident_is_unmapped_not_an_error():
    assert isinstance(incident_change({}, SETTINGS), Unmapped)
    assert isinstance(incident_change({"action": "monitor", "payload": {}}, SETTINGS), Unmapped)
    nothing = incident_change({"type": "x", "payload": {"incident_id": "i"}}, SETTINGS)
    assert isinstance(nothing, Unmapped) and "says nothing" in nothing.reason
    odd = {"type": "open_anomaly_incident", "payload": {"incident_id": "i", "event_list": "?"}}
    assert isinstance(incident_change(odd, SETTINGS), IncidentChange)  # odd fields: no crash


def test_a_polled_alert_is_the_incident_as_it_stands():
    alert = {
        "id": "a-1",
        "title": "Volume anomaly",
        "type": "CUSTOM_RULE_ANOMALIES",
        "subTypes": ["SQL_RULE_BREACH"],
        "status": "WORK_IN_PROGRESS",
        "severity": "SEV_4",
        "url": "https://getmontecarlo.com/alerts/a-1",
        "tables": [
            {"mcon": "MCON++9a59c6f1-203a-4c72-8cd7-132db7f21b92++"
                     "6a8c3a7e-0d6b-4d35-9a2b-5f0e1c2d3b4a++table++a:b.c", "tableId": None},
            {"tableId": "x:y.z", "mcon": None},
            {"mcon": "not an mcon"},
        ],
    }  # fmt: skip
    settings = MonteCarloSettings(warehouses={"6a8c3a7e-0d6b-4d35-9a2b-5f0e1c2d3b4a": "bq://p"})
    assert alert_change(alert, settings) == IncidentChange(
        incident_id="a-1",
        opened=False,
        kind="custom_rule_anomaly",
        status="ACKNOWLEDGED",
        severity="LOW",
        title="Volume anomaly",
        description="sql rule breach",
        url="https://getmontecarlo.com/alerts/a-1",
        qualified_names=("bq://p/a/b/c",),  # by its MCON's warehouse
        unnamed=("x:y.z",),  # no warehouse, no default prefix
    )
    assert change_of({"polled": "getAlerts", "alert": alert}, settings) == alert_change(
        alert, settings
    )
    for status, ours in (("FIXED", "RESOLVED"), ("EXPECTED", "RESOLVED"), (None, "OPEN")):
        got = alert_change({"id": "a", "status": status}, settings)
        assert isinstance(got, IncidentChange) and got.status == ours
    assert isinstance(alert_change({"title": "no id"}, settings), Unmapped)
    assert table_of_mcon("MCON++bad++uuid++table++a:b.c") == ("", "")
    assert table_of_mcon("") == ("", "")


GOLDEN = FIXTURES / "golden.json"
# table anomalies name tables by full table id under a warehouse; these fixtures use the
# settings below (the open_anomaly one names a bare table, which no prefix maps)
GOLDEN_SETTINGS = MonteCarloSettings(default_prefix="snowflake://acct")


def _mapped(path: Path) -> dict[str, object]:
    change = change_of(json.loads(path.read_text()), GOLDEN_SETTINGS)
    if isinstance(change, Unmapped):
        return {"unmapped": change.reason}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(change).items()}


def test_recorded_payloads_map_to_their_golden_outputs():
    """Every recorded payload against what it maps to (tests/fixtures/montecarlo/golden.json;
    after a deliberate change: LILY_UPDATE_GOLDENS=1 scripts/test tests/unit, and review the
    diff)."""
    got = {p.name: _mapped(p) for p in sorted(FIXTURES.glob("*.json")) if p != GOLDEN}
    assert len(got) >= 5
    if os.environ.get("LILY_UPDATE_GOLDENS"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
