"""What a PostgreSQL target should grant, and the statements that get it there, without
servers: a column closed to a role with table-level SELECT takes the table's SELECT and gives
the other columns; opening gives back exactly the owners' baseline; keep and owner are never
closed; PUBLIC and "*" expand to the grantees."""

from __future__ import annotations

from adapters.postgres.config import PostgresTargetSettings, Rule
from adapters.postgres.mapping import (
    Denial,
    Grants,
    Object,
    TableFacts,
    denial,
    object_of,
    plan,
)

SETTINGS = PostgresTargetSettings(
    host="/tmp",
    database="db",
    user="lily",
    prefix="postgres://wh:5432/db",
    rules=[Rule(tags=["PII", "GDPR"], deny=["*"], keep=["pii_reader"])],
)
ORDERS = Object("sales", "orders")
FACTS = TableFacts(
    owner="owner",
    columns=("id", "email", "region"),
    grants={
        "analyst": Grants(table=True),
        "pii_reader": Grants(table=True),
        "intern": Grants(columns=frozenset({"id", "email"})),
        "owner": Grants(table=True),
    },
)


def test_qualified_names_map_to_the_targets_objects():
    assert object_of("postgres://wh:5432/db/sales/orders", SETTINGS) == ORDERS
    assert object_of("postgres://wh:5432/db/sales/orders/email", SETTINGS) == Object(
        "sales", "orders", "email"
    )
    assert object_of("postgres://wh:5432/other/sales/orders", SETTINGS) is None
    assert object_of("postgres://wh:5432/db/sales", SETTINGS) is None
    assert object_of("postgres://wh:5432/db/a/b/c/d", SETTINGS) is None


def test_a_closed_column_takes_the_table_and_gives_the_other_columns():
    denials = {"email": denial(["PII"], SETTINGS), "": Denial()}
    todo = plan(ORDERS, denials, FACTS, {})
    assert todo.statements == (
        'REVOKE SELECT ON "sales"."orders" FROM "analyst"',
        'GRANT SELECT ("id", "region") ON "sales"."orders" TO "analyst"',
        'REVOKE SELECT ("email") ON "sales"."orders" FROM "intern"',
    )
    assert todo.closed == {"email": frozenset({"analyst", "intern"})}  # not the keeper, owner
    assert todo.baseline == {"analyst": Grants(table=True), "intern": FACTS.grants["intern"]}
    assert todo.taken == (
        "SELECT ON sales.orders FROM analyst",
        "SELECT (email) ON sales.orders FROM intern",
    )


def test_opening_gives_back_exactly_the_baseline():
    closed = plan(ORDERS, {"email": denial(["PII"], SETTINGS)}, FACTS, {})
    now = TableFacts(
        FACTS.owner,
        FACTS.columns,
        {**FACTS.grants, **closed.left},  # what the target has once it was applied
    )
    opened = plan(ORDERS, {"email": denial([], SETTINGS)}, now, closed.baseline)
    assert opened.statements == (
        'REVOKE SELECT ("id", "region") ON "sales"."orders" FROM "analyst"',
        'GRANT SELECT ON "sales"."orders" TO "analyst"',
        'GRANT SELECT ("email") ON "sales"."orders" TO "intern"',
    )
    assert opened.baseline == {} and opened.closed == {}


def test_a_closed_table_takes_every_select_and_a_new_grant_is_drift_to_close():
    todo = plan(ORDERS, {"": denial(["GDPR"], SETTINGS)}, FACTS, {})
    assert 'REVOKE SELECT ON "sales"."orders" FROM "analyst"' in todo.statements
    assert 'REVOKE SELECT ("email", "id") ON "sales"."orders" FROM "intern"' in todo.statements
    applied = TableFacts(FACTS.owner, FACTS.columns, {**FACTS.grants, **todo.left})
    assert plan(ORDERS, {"": denial(["GDPR"], SETTINGS)}, applied, todo.baseline).statements == ()
    # someone grants a column back by hand: the plan has statements again (drift)
    drifted = TableFacts(
        FACTS.owner,
        FACTS.columns,
        {**applied.grants, "analyst": Grants(columns=frozenset({"email"}))},
    )
    again = plan(ORDERS, {"": denial(["GDPR"], SETTINGS)}, drifted, todo.baseline)
    assert again.statements == ('REVOKE SELECT ("email") ON "sales"."orders" FROM "analyst"',)


def test_named_roles_public_and_quoting():
    settings = PostgresTargetSettings(
        host="/tmp",
        database="db",
        user="lily",
        prefix="postgres://wh:5432/db",
        rules=[Rule(tags=["PII"], deny=["PUBLIC", 'odd"role'])],
    )
    facts = TableFacts("owner", ("a", "b"), {"PUBLIC": Grants(table=True)})
    todo = plan(ORDERS, {"a": denial(["PII"], settings)}, facts, {})
    assert todo.statements == (
        'REVOKE SELECT ON "sales"."orders" FROM PUBLIC',
        'GRANT SELECT ("b") ON "sales"."orders" TO PUBLIC',
    )
    assert todo.closed == {"a": frozenset({"PUBLIC", 'odd"role'})}
    assert denial(["GDPR"], settings) == Denial()  # not a tag of its rules: open
