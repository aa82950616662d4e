"""A PostgreSQL warehouse as an enforcement target: a separate embedded Postgres (not Lily's
own store) with schemas, tables and the roles `analyst` and `pii_reader`; the target is an
integration created through the API; a PII tag upstream in lineage closes the downstream
column to `analyst` (a real SQL connection as that role is refused), withdrawing it gives
back exactly what the owners had granted, receipts say what was done, a manual GRANT is
found and put right, and a statement that can never succeed is dead-lettered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg
import grpc
import nats
import pytest
import pytest_asyncio
from lily.v1 import common_pb2 as C
from lily.v1 import enforcement_pb2 as E
from lily.v1 import enforcement_pb2_grpc as enforcement_grpc
from lily.v1 import events_pb2 as events_pb
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O

from core.stack import EmbeddedPostgres
from tests.helpers import Metadata, asset, eventually, new_tenant, tag

COLUMN = C.ASSET_TYPE_COLUMN
PREFIX = "postgres://warehouse:5432/postgres"

SETUP = """
CREATE ROLE analyst LOGIN;
CREATE ROLE pii_reader LOGIN;
CREATE SCHEMA raw;
CREATE SCHEMA sales;
CREATE TABLE raw.users (id int, email text, country text);
CREATE TABLE sales.orders (id int, email text, region text, amount numeric);
CREATE TABLE sales.customers (id int, email text, region text);
INSERT INTO sales.orders VALUES (1, 'ann@example.com', 'eu', 10);
INSERT INTO sales.customers VALUES (1, 'ann@example.com', 'eu');
GRANT USAGE ON SCHEMA raw, sales TO analyst, pii_reader;
GRANT SELECT ON raw.users, sales.orders TO analyst, pii_reader;
GRANT SELECT (id, region) ON sales.customers TO analyst;
"""
ACLS = """
SELECT c.relname, c.relacl::text AS table_acl,
       array_agg(a.attname || '=' || a.attacl::text ORDER BY a.attnum)
           FILTER (WHERE a.attacl IS NOT NULL) AS column_acls
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE n.nspname = 'sales' AND c.relkind = 'r'
 GROUP BY c.relname, c.relacl::text ORDER BY c.relname
"""


@pytest_asyncio.fixture(scope="module")
async def warehouse(tmp_path_factory) -> AsyncIterator[Path]:
    """The customer's warehouse: its socket directory."""
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("warehouse"))
    dsn = await pg.start()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SETUP)
    finally:
        await conn.close()
    try:
        yield pg.data_dir / "pgdata"
    finally:
        await pg.stop()


async def _as(socket: Path, role: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(host=str(socket), user=role, database="postgres", timeout=10)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _refused(socket: Path, role: str, sql: str) -> bool:
    try:
        await _as(socket, role, sql)
    except asyncpg.InsufficientPrivilegeError:
        return True
    return False


async def _acls(socket: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Each table's grants (its ACL items, and its columns'), as sets: their order is not
    the grants'."""
    return {
        r["relname"]: (
            set((r["table_acl"] or "{}").strip("{}").split(",")),
            set(r["column_acls"] or ()),
        )
        for r in await _as(socket, "postgres", ACLS)
    }


async def _target(channel, md, socket: Path, name: str = "warehouse", **settings) -> str:
    integration = I.Integration(type="postgres", display_name=name)
    integration.settings.update(
        {
            "host": str(socket),
            "database": "postgres",
            "user": "postgres",
            "prefix": PREFIX,
            "rules": [{"tags": ["PII", "GDPR"], "deny": ["*"], "keep": ["pii_reader"]}],
            "reconcile_interval_seconds": 10,
            **settings,
        }
    )
    made = await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
        I.CreateIntegrationRequest(integration=integration), metadata=md
    )
    return made.integration.integration_id


@pytest_asyncio.fixture(scope="module")
async def wmd(channel, admin_md) -> Metadata:
    """The admin of the tenant whose warehouse it is (one for the module)."""
    return await new_tenant(channel, admin_md, "wh" + uuid.uuid4().hex[:12])


@pytest_asyncio.fixture(scope="module")
async def estate(warehouse, channel, wmd, inbound) -> AsyncIterator[dict[str, str]]:
    """The warehouse's tables and columns in Lily, raw.users.email upstream of
    sales.orders.email, and the warehouse as a target: asset ids by short name."""
    from lily.v1 import metadata_pb2_grpc as metadata_grpc

    stub = metadata_grpc.MetadataServiceStub(channel)
    names = {
        "users": (f"{PREFIX}/raw/users", C.ASSET_TYPE_TABLE),
        "users.email": (f"{PREFIX}/raw/users/email", COLUMN),
        "orders": (f"{PREFIX}/sales/orders", C.ASSET_TYPE_TABLE),
        "orders.id": (f"{PREFIX}/sales/orders/id", COLUMN),
        "orders.email": (f"{PREFIX}/sales/orders/email", COLUMN),
        "customers": (f"{PREFIX}/sales/customers", C.ASSET_TYPE_TABLE),
    }
    made = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(qn, t) for qn, t in names.values()]), metadata=wmd
    )
    ids = {short: r.asset_id for short, r in zip(names, made.results, strict=True)}

    async def written() -> bool:  # columns are written by the ingest worker, soon after
        try:
            for asset_id in ids.values():
                await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=wmd)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
            return False
        return True

    await eventually(written)
    await lineage_grpc.LineageServiceStub(channel).IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                L.RelationshipInput(
                    upstream=L.AssetRef(qualified_name=names["users.email"][0]),
                    downstream=L.AssetRef(qualified_name=names["orders.email"][0]),
                )
            ]
        ),
        metadata=wmd,
    )
    ids["target"] = await _target(channel, wmd, warehouse)
    yield ids
    for integration_id in (ids["target"], ids.get("ghost", "")):  # no target left behind
        if integration_id:
            await integration_grpc.IntegrationServiceStub(channel).DeleteIntegration(
                I.DeleteIntegrationRequest(integration_id=integration_id), metadata=wmd
            )


async def test_a_pii_tag_upstream_closes_the_downstream_column_and_its_removal_opens_it(
    warehouse, estate, channel, wmd, stub, stack
):
    before = await _acls(warehouse)
    assert await _as(warehouse, "analyst", "SELECT email FROM sales.orders")
    nc = await nats.connect(stack[1])
    events = await nc.subscribe("lily.*.enforcement.*")
    try:
        await tag(stub, wmd, estate["users.email"], "PII")

        async def closed() -> bool:
            return await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

        await eventually(closed, timeout=15)
        # the column only: the role reads the others, and SELECT * is refused
        assert await _as(warehouse, "analyst", "SELECT id, region, amount FROM sales.orders")
        assert await _refused(warehouse, "analyst", "SELECT * FROM sales.orders")
        assert await _as(warehouse, "pii_reader", "SELECT email FROM sales.orders")  # kept

        async def filed() -> E.EnforcementReceipt:  # (filed just after the statements)
            try:
                got = await enforcement_grpc.EnforcementServiceStub(channel).GetEnforcement(
                    E.GetEnforcementRequest(
                        integration_id=estate["target"], asset_id=estate["orders.email"]
                    ),
                    metadata=wmd,
                )
            except grpc.aio.AioRpcError as err:
                raise AssertionError(err.code()) from err
            return got.receipt

        receipt = await eventually(filed)
        asset_now = await stub.GetMetadata(
            O.GetMetadataRequest(asset_id=estate["orders.email"]), metadata=wmd
        )
        assert receipt.desired == receipt.applied == E.ENFORCEMENT_STATE_CLOSED
        assert receipt.outcome == E.ENFORCEMENT_OUTCOME_APPLIED
        assert receipt.asset_version == asset_now.asset.version  # enforced at version N
        assert receipt.HasField("applied_at") and receipt.restricted_tags == ["PII"]
        assert list(receipt.denied_roles) == ["analyst"]
        assert receipt.target_object == "sales.orders.email"
        assert 'REVOKE SELECT ON "sales"."orders" FROM "analyst"' in receipt.statements
        assert "SELECT ON sales.orders FROM analyst" in receipt.taken

        msg = await events.next_msg(timeout=10)
        event = events_pb.ChangeEvent.FromString(msg.data)
        assert msg.subject.endswith(".enforcement.applied")
        assert event.entity == events_pb.ENTITY_KIND_ENFORCEMENT
        # the upstream column is closed too: the tag is its own
        assert event.enforcement.asset_id in {estate["orders.email"], estate["users.email"]}
        assert await _refused(warehouse, "analyst", "SELECT email FROM raw.users")

        # withdrawn: exactly what the owners had granted comes back
        await tag(stub, wmd, estate["users.email"], "PII", remove=True)

        async def opened() -> bool:
            return not await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

        await eventually(opened, timeout=15)
        assert await _acls(warehouse) == before
    finally:
        await events.unsubscribe()
        await nc.close()


async def test_a_restricted_table_is_closed_whole_and_given_back_column_by_column(
    warehouse, estate, wmd, stub
):
    before = await _acls(warehouse)
    await tag(stub, wmd, estate["customers"], "GDPR")

    async def closed() -> bool:
        return await _refused(warehouse, "analyst", "SELECT id FROM sales.customers")

    await eventually(closed, timeout=15)
    await tag(stub, wmd, estate["customers"], "GDPR", remove=True)

    async def opened() -> bool:
        return not await _refused(warehouse, "analyst", "SELECT id, region FROM sales.customers")

    await eventually(opened, timeout=15)
    assert await _refused(warehouse, "analyst", "SELECT email FROM sales.customers")  # as before
    assert await _acls(warehouse) == before


async def test_a_manual_grant_that_reopens_a_column_is_found_reported_and_reverted(
    warehouse, estate, channel, wmd, stub
):
    await tag(stub, wmd, estate["orders.email"], "PII")

    async def closed() -> bool:
        return await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

    await eventually(closed, timeout=15)
    await _as(warehouse, "postgres", "GRANT SELECT (email) ON sales.orders TO analyst")
    assert not await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

    receipts = enforcement_grpc.EnforcementServiceStub(channel)

    async def drift_reported() -> bool:
        listed = await receipts.ListEnforcement(
            E.ListEnforcementRequest(
                integration_id=estate["target"], qualified_name_prefix=f"{PREFIX}/sales/orders"
            ),
            metadata=wmd,
        )
        assert any("found otherwise" in r.detail for r in listed.receipts) or (await closed()), (
            "not reconciled yet"
        )
        return await closed()

    await eventually(drift_reported, timeout=40, interval=0.5)  # the next reconciliation
    await tag(stub, wmd, estate["orders.email"], "PII", remove=True)

    async def opened() -> bool:
        return not await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

    await eventually(opened, timeout=15)


async def test_a_statement_that_can_never_succeed_is_dead_lettered_with_its_reason(
    warehouse, estate, channel, wmd, stub
):
    ghost = await _target(
        channel,
        wmd,
        warehouse,
        name="ghost",
        rules=[{"tags": ["SECRET"], "deny": ["no_such_role"]}],
    )
    estate["ghost"] = ghost
    await tag(stub, wmd, estate["orders.id"], "SECRET")
    integrations = integration_grpc.IntegrationServiceStub(channel)

    async def dead() -> list[I.KeptDelivery]:
        listed = await integrations.ListKeptDeliveries(
            I.ListKeptDeliveriesRequest(integration_id=ghost, kind=I.KEPT_DELIVERY_KIND_DEAD),
            metadata=wmd,
        )
        return list(listed.deliveries)

    kept = await eventually(dead, timeout=20)
    assert "no_such_role" in kept[0].reason
    got = await enforcement_grpc.EnforcementServiceStub(channel).GetEnforcement(
        E.GetEnforcementRequest(integration_id=ghost, asset_id=estate["orders.id"]), metadata=wmd
    )
    assert got.receipt.outcome == E.ENFORCEMENT_OUTCOME_FAILED
    assert "no_such_role" in got.receipt.detail

    # after a fix, a replay applies it
    await _as(warehouse, "postgres", "CREATE ROLE no_such_role")
    await integrations.ReplayKeptDeliveries(
        I.ReplayKeptDeliveriesRequest(integration_id=ghost, kind=I.KEPT_DELIVERY_KIND_DEAD),
        metadata=wmd,
    )

    async def applied() -> bool:
        got = await enforcement_grpc.EnforcementServiceStub(channel).GetEnforcement(
            E.GetEnforcementRequest(integration_id=ghost, asset_id=estate["orders.id"]),
            metadata=wmd,
        )
        return got.receipt.outcome == E.ENFORCEMENT_OUTCOME_APPLIED

    await eventually(applied, timeout=20)
    await tag(stub, wmd, estate["orders.id"], "SECRET", remove=True)


async def test_only_the_targets_own_credential_files_its_receipts(estate, channel, wmd):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await enforcement_grpc.EnforcementServiceStub(channel).RecordEnforcement(
            E.RecordEnforcementRequest(integration_id=estate["target"]), metadata=wmd
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _select(column: str) -> str:
    return f"SELECT {column} FROM s.wide"


async def test_with_the_target_down_changes_wait_and_apply_once_each_when_it_returns(
    tmp_path, channel, wmd, stub, stack, estate
):
    """The warehouse stops mid-stream: the tags made while it is down wait on the durable
    consumer and apply when it is back; every asset is applied once at its last version."""
    pg = EmbeddedPostgres(tmp_path / "down")
    conn = await asyncpg.connect(await pg.start())
    columns = [f"c{n}" for n in range(20)]
    await conn.execute(
        "CREATE ROLE analyst LOGIN; CREATE SCHEMA s;"
        f" CREATE TABLE s.wide ({', '.join(f'{c} int' for c in columns)});"
        " GRANT USAGE ON SCHEMA s TO analyst; GRANT SELECT ON s.wide TO analyst;"
    )
    await conn.close()
    socket = pg.data_dir / "pgdata"
    prefix = "postgres://down:5432/postgres"
    made = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[asset(f"{prefix}/s/wide", C.ASSET_TYPE_TABLE)]
            + [asset(f"{prefix}/s/wide/{c}", COLUMN) for c in columns]
        ),
        metadata=wmd,
    )
    ids = [r.asset_id for r in made.results[1:]]

    async def written() -> bool:  # columns are written by the ingest worker, soon after
        found = await stub.SearchMetadata(
            O.SearchMetadataRequest(qualified_name_prefix=f"{prefix}/s/wide/"), metadata=wmd
        )
        return len(found.assets) == len(columns)

    await eventually(written)
    target = await _target(channel, wmd, socket, name="down", prefix=prefix)
    nc = await nats.connect(stack[1])
    events = await nc.subscribe("lily.*.enforcement.applied")
    try:
        for asset_id in ids[:10]:
            await tag(stub, wmd, asset_id, "PII")

        async def first_half() -> bool:
            return all(
                [await _refused(socket, "analyst", f"SELECT {c} FROM s.wide") for c in columns[:10]]
            )

        await eventually(first_half, timeout=20)
        await pg.stop()  # the warehouse goes away
        for asset_id in ids[10:]:
            await tag(stub, wmd, asset_id, "PII")
        await tag(stub, wmd, ids[0], "PII", remove=True)  # and one opens again
        await pg.start()

        async def all_applied() -> bool:
            rest = [
                await _refused(socket, "analyst", f"SELECT {c} FROM s.wide") for c in columns[1:]
            ]
            return all(rest) and not await _refused(socket, "analyst", "SELECT c0 FROM s.wide")

        await eventually(all_applied, timeout=60, interval=0.5)
        applied: dict[tuple[str, int], int] = {}
        while True:
            try:
                msg = await events.next_msg(timeout=1)
            except TimeoutError:
                break
            r = events_pb.ChangeEvent.FromString(msg.data).enforcement
            if r.integration_id == target:
                applied[(r.asset_id, r.asset_version)] = (
                    applied.get((r.asset_id, r.asset_version), 0) + 1
                )
        versions = {}
        for asset_id in ids:
            got = await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=wmd)
            versions[asset_id] = got.asset.version
        # each asset applied at its last version, and once
        assert {(a, versions[a]) for a in ids} <= set(applied)
        assert all(n == 1 for n in applied.values()), applied
    finally:
        await events.unsubscribe()
        await nc.close()
        await integration_grpc.IntegrationServiceStub(channel).DeleteIntegration(
            I.DeleteIntegrationRequest(integration_id=target), metadata=wmd
        )
        await pg.stop()


async def test_a_column_whose_lineage_arrives_after_the_tag_is_closed_when_it_does(
    warehouse, estate, channel, wmd, stub
):
    await tag(stub, wmd, estate["users.email"], "PII")
    sql = "SELECT region FROM sales.orders"
    assert not await _refused(warehouse, "analyst", sql)
    region = f"{PREFIX}/sales/orders/region"  # new to Lily, and downstream of the tag
    await stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset(region, COLUMN)]), metadata=wmd)
    await lineage_grpc.LineageServiceStub(channel).IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                L.RelationshipInput(
                    upstream=L.AssetRef(qualified_name=f"{PREFIX}/raw/users/email"),
                    downstream=L.AssetRef(qualified_name=region),
                )
            ]
        ),
        metadata=wmd,
    )

    async def closed() -> bool:
        return await _refused(warehouse, "analyst", sql)

    await eventually(closed, timeout=15)
    await tag(stub, wmd, estate["users.email"], "PII", remove=True)

    async def opened() -> bool:
        return not await _refused(warehouse, "analyst", sql)

    await eventually(opened, timeout=15)


async def test_a_dedicated_tenant_is_enforced_too(
    warehouse, channel, admin_md, stub, stack, inbound
):
    """A DEDICATED tenant's changes are on its cell's own stream: followed as well."""
    from lily.v1 import policy_pb2 as P

    from core.cells import cell_name

    tenant = "whd" + uuid.uuid4().hex[:10]
    dmd = await new_tenant(channel, admin_md, tenant, P.TENANT_ISOLATION_DEDICATED)
    await _as(warehouse, "postgres", "CREATE TABLE sales.cell (id int, email text)")
    await _as(warehouse, "postgres", "GRANT SELECT ON sales.cell TO analyst")
    prefix = "postgres://cell:5432/postgres"
    made = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset(f"{prefix}/sales/cell", C.ASSET_TYPE_TABLE),
                asset(f"{prefix}/sales/cell/email", COLUMN),
            ]
        ),
        metadata=dmd,
    )
    email = made.results[1].asset_id

    async def written() -> bool:
        try:
            await stub.GetMetadata(O.GetMetadataRequest(asset_id=email), metadata=dmd)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, err
            return False
        return True

    await eventually(written)
    target = await _target(channel, dmd, warehouse, name="cell", prefix=prefix)
    sql = "SELECT email FROM sales.cell"
    nc = await nats.connect(stack[1])
    stream = f"LILY_CHANGES_{cell_name(tenant)}"  # the cell's own change stream

    async def followed() -> int:
        try:
            info = await nc.jetstream().consumer_info(stream, "adapters-follow")
        except nats.js.errors.NotFoundError:
            return -1
        return int(info.delivered.stream_seq)

    try:
        await eventually(lambda: _nonneg(followed()), timeout=15)  # the runtime found it
        seen = await followed()
        await tag(stub, dmd, email, "PII")

        async def closed() -> bool:
            return await _refused(warehouse, "analyst", sql)

        await eventually(closed, timeout=20)
        assert not await _refused(warehouse, "analyst", "SELECT id FROM sales.cell")
        assert await followed() > seen  # the tag's events came through the cell's stream
        await tag(stub, dmd, email, "PII", remove=True)

        async def opened() -> bool:
            return not await _refused(warehouse, "analyst", sql)

        await eventually(opened, timeout=20)
    finally:
        await nc.close()
        await integration_grpc.IntegrationServiceStub(channel).DeleteIntegration(
            I.DeleteIntegrationRequest(integration_id=target), metadata=dmd
        )


async def _nonneg(value: Awaitable[int]) -> bool:
    return await value >= 0


async def test_two_runtimes_cannot_lose_each_others_table_state(stack):
    """What an enforcer remembers of a table is written only over what it read: a second
    runtime serving the same integration that wrote in between makes the first try again."""
    from adapters.runtime.inbox import Inbox

    nc = await nats.connect(stack[1])
    try:
        inbox = Inbox(nc.jetstream(timeout=10), timeout=10)
        await inbox.ensure()
        one = inbox.memory("int_" + uuid.uuid4().hex[:24])
        assert await one.read("table:s.t") == ([], 0)
        assert await one.write("table:s.t", ["a"], 0)
        assert not await one.write("table:s.t", ["b"], 0)  # it exists now
        values, revision = await one.read("table:s.t")
        assert values == ["a"]
        assert await one.write("table:s.t", ["c"], revision)  # runtime A, on what it read
        assert not await one.write("table:s.t", ["d"], revision)  # runtime B, on the same: no
        assert await one.get("table:s.t") == ["c"]
    finally:
        await nc.close()


async def test_one_trace_follows_a_tag_to_the_sql_it_closed_and_the_message_it_sent(
    warehouse, estate, channel, wmd, stub
):
    """A call made in a trace (its traceparent) that tags a column: the same trace holds the
    call, the propagation it started, the target's delivery and the statements it ran, and
    the notification sent of it, each span's parent among them (an in-memory exporter)."""
    from lily.v1 import notification_pb2 as N
    from lily.v1 import notification_pb2_grpc as notification_grpc
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.fake_slack import FakeSlack

    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    async with FakeSlack() as slack:
        made = await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
            I.CreateIntegrationRequest(
                integration=I.Integration(
                    type="slack", display_name="slack", secrets={"webhook_url": slack.url()}
                )
            ),
            metadata=wmd,
        )
        await notification_grpc.NotificationServiceStub(channel).CreateSubscription(
            N.CreateSubscriptionRequest(
                subscription=N.Subscription(
                    integration_id=made.integration.integration_id,
                    filter=N.SubscriptionFilter(event_types=["asset.tagged"]),
                )
            ),
            metadata=wmd,
        )
        await asyncio.sleep(0.6)  # the runtime reads subscriptions again within half a second
        with trace.get_tracer("test").start_as_current_span("the caller") as root:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            await tag(
                stub, (*wmd, ("traceparent", carrier["traceparent"])), estate["users.email"], "GDPR"
            )
        trace_id = root.get_span_context().trace_id

        async def closed() -> bool:
            return await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

        await eventually(closed, timeout=15)

        def spans() -> list:
            return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]

        wanted = {
            "the caller",
            "/lily.v1.MetadataService/UpdateTags",
            "propagation job",
            "deliver postgres",
            "enforce statements",
            "notify slack",
        }

        async def traced() -> list:
            found = spans()
            assert wanted <= {s.name for s in found}, sorted({s.name for s in found})
            # one tree, rooted at the caller (a parent ends after its children: waited for)
            ids = {s.context.span_id for s in found}
            orphans = [s.name for s in found if s.parent and s.parent.span_id not in ids]
            assert orphans == [], orphans
            return found

        found = await eventually(traced, timeout=20)
        assert [s.name for s in found if s.parent is None] == ["the caller"]
        ran = [
            x
            for s in found
            if s.name == "enforce statements"
            for x in s.attributes["lily.statements"]
        ]
        assert any("REVOKE" in x for x in ran), ran
        assert slack.received  # the message it caused was sent
    await tag(stub, wmd, estate["users.email"], "GDPR", remove=True)

    async def opened() -> bool:
        return not await _refused(warehouse, "analyst", "SELECT email FROM sales.orders")

    await eventually(opened, timeout=15)
