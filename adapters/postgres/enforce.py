"""Enforcement in a PostgreSQL target: the deliveries the runtime files for it (Lily's asset
changes under its prefix, adapters/runtime/follow.py; and a reconciliation on its schedule)
become privileges in the engine and receipts in Lily.

What it remembers per table (in the integration's memory, adapters.spec.Memory): each asset
of the table Lily told it of (version, tags), the owners' baseline of every role it closed
something to (given back when nothing is closed to the role any more), and what it left
each such role with. A change older than what it knows of an asset (a repeat, or one out of
order) changes nothing.

A reconciliation reads Lily's restricted assets under the prefix (what it may have missed,
or what was tagged before the target existed) and plans every table it knows again against
the engine's catalogs: statements a plan needs that Lily did not expect are drift (a manual
GRANT that reopened a column), reported, and put right if the target says so."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lily.v1 import common_pb2 as common_pb
from lily.v1 import enforcement_pb2 as enforcement_pb
from lily.v1 import enforcement_pb2_grpc as enforcement_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from adapters.metrics import ENFORCEMENT_SECONDS, ENFORCEMENTS
from adapters.postgres import target as engine
from adapters.postgres.config import PostgresTargetSettings
from adapters.postgres.mapping import Denial, Grants, Object, Plan, denial, object_of, plan
from adapters.spec import (
    AssetChange,
    Delivery,
    Handled,
    LilyClient,
    Memory,
    Polled,
    Refused,
    TryLater,
    changes_of,
    json_body,
)
from adapters.tracing import tracer

INDEX = "tables"  # memory: the tables it knows
RECONCILE = b'{"reconcile": true}'
ENFORCED_TYPES = frozenset(
    {common_pb.ASSET_TYPE_TABLE, common_pb.ASSET_TYPE_VIEW, common_pb.ASSET_TYPE_COLUMN}
)
MAX_RECORD = 1000


@dataclass
class Known:
    """What the enforcer knows of one asset of a table."""

    asset_id: str
    qualified_name: str
    column: str
    version: int
    tags: tuple[str, ...]


@dataclass
class TableState:
    obj: Object
    assets: dict[str, Known] = field(default_factory=dict)
    baseline: dict[str, Grants] = field(default_factory=dict)
    left: dict[str, Grants] = field(default_factory=dict)
    revision: int = 0  # of what was read (0: nothing yet)

    def dump(self) -> str:
        return json.dumps(
            {
                "schema": self.obj.schema,
                "table": self.obj.table,
                "assets": {
                    a.asset_id: [a.qualified_name, a.column, a.version, list(a.tags)]
                    for a in self.assets.values()
                },
                "baseline": {r: g.dump() for r, g in self.baseline.items()},
                "left": {r: g.dump() for r, g in self.left.items()},
            }
        )

    @classmethod
    def load(cls, obj: Object, raw: str | None) -> TableState:
        state = cls(obj)
        if not raw:
            return state
        doc = json.loads(raw)
        for asset_id, (name, column, version, tags) in doc.get("assets", {}).items():
            state.assets[asset_id] = Known(asset_id, name, column, int(version), tuple(tags))
        state.baseline = {r: Grants.load(g) for r, g in doc.get("baseline", {}).items()}
        state.left = {r: Grants.load(g) for r, g in doc.get("left", {}).items()}
        return state

    def learn(self, change: AssetChange, column: str) -> bool:
        """Takes in a change; False if it is no newer than what is known of the asset."""
        known = self.assets.get(change.asset_id)
        if known is not None and known.version >= change.version:
            return False
        self.assets[change.asset_id] = Known(
            change.asset_id, change.qualified_name, column, change.version, change.tags
        )
        return True

    def denials(self, settings: PostgresTargetSettings) -> dict[str, Denial]:
        """Each object's denial (by column; "" the table); an object two assets name is
        closed if either asks it."""
        found: dict[str, Denial] = {}
        for a in self.assets.values():
            d = denial(a.tags, settings)
            if a.column not in found or (d.closed and not found[a.column].closed):
                found[a.column] = d
        return found


def _key(obj: Object) -> str:
    return f"table:{obj.table_key}"


class PostgresEnforcer:
    """The postgres type's Inbound (it takes no webhooks), Poller (its reconciliation) and
    Follower (the changes under its prefix)."""

    def __init__(self) -> None:
        self._targets: dict[str, tuple[str, engine.PostgresTarget]] = {}
        # One delivery at a time works on a table of a target here: a reconciliation that
        # read a table before a change reopened it must not close it again after.
        self._tables: dict[tuple[str, str], asyncio.Lock] = {}

    # -- Follower

    def wants(self, settings: Mapping[str, Any], change: AssetChange) -> bool:
        if change.asset_type not in ENFORCED_TYPES:
            return False
        prefix = str(settings.get("prefix", ""))
        return bool(prefix) and change.qualified_name.startswith(prefix + "/")

    # -- Poller: a reconciliation on its schedule (and at once when the runtime starts)

    def interval(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> float | None:
        return PostgresTargetSettings.model_validate(settings).reconcile_interval_seconds

    async def poll(
        self,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        cursor: str,
        *,
        now: float,
        timeout: float,
    ) -> Polled:
        return Polled([(f"reconcile.{int(now * 1000)}", RECONCILE)], str(now))

    # -- Inbound

    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        raise Refused(404, "an enforcement target takes no webhooks")

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        s = PostgresTargetSettings.model_validate(settings)
        body = json_body(delivery.body)
        target = self._target(delivery.integration_id, s, secrets.get("password", ""))
        run = _Run(delivery.integration_id, s, target, lily, memory, self._tables)
        started = time.perf_counter()
        if isinstance(body, dict) and body.get("reconcile"):
            await run.reconcile()
        else:
            await run.changes(changes_of(body if isinstance(body, dict) else {}))
        await run.record()
        ENFORCEMENT_SECONDS.labels("postgres").observe(time.perf_counter() - started)
        return Handled("done", f"{run.recorded} receipt(s), {run.failed} failed")

    def _target(
        self, integration_id: str, settings: PostgresTargetSettings, password: str
    ) -> engine.PostgresTarget:
        fingerprint = hashlib.sha256(
            (settings.model_dump_json() + "\x00" + password).encode()
        ).hexdigest()
        found = self._targets.get(integration_id)
        if found is None or found[0] != fingerprint:
            found = (fingerprint, engine.PostgresTarget(settings, password, timeout=10.0))
            self._targets[integration_id] = found
        return found[1]


_OUTCOMES = {
    v.number: v.name.removeprefix("ENFORCEMENT_OUTCOME_")
    for v in enforcement_pb.EnforcementOutcome.DESCRIPTOR.values
}


class _Run:
    """One delivery's work on a target, and the receipts it makes."""

    def __init__(
        self,
        integration_id: str,
        settings: PostgresTargetSettings,
        target: engine.PostgresTarget,
        lily: LilyClient,
        memory: Memory,
        tables: dict[tuple[str, str], asyncio.Lock],
    ) -> None:
        self.integration_id = integration_id
        self.s = settings
        self.target = target
        self.lily = lily
        self.memory = memory
        self._tables = tables
        self.receipts: list[enforcement_pb.EnforcementReceipt] = []
        self.recorded = 0
        self.failed = 0

    async def _state(self, obj: Object) -> TableState:
        raw, revision = await self.memory.read(_key(obj))
        state = TableState.load(obj, raw[0] if raw else None)
        state.revision = revision
        return state

    async def _save(self, state: TableState) -> None:
        """Keeps the table's state, unless another runtime serving this integration wrote
        it since it was read: then the delivery is tried again, on what that one left."""
        if not await self.memory.write(_key(state.obj), [state.dump()], state.revision):
            raise TryLater(f"the state of {state.obj.table_key} changed meanwhile")
        for _ in range(10):  # the index of the tables it knows: added to, never lost
            index, revision = await self.memory.read(INDEX)
            if state.obj.table_key in index:
                return
            if await self.memory.write(INDEX, [*index, state.obj.table_key], revision):
                return
        raise TryLater("the index of tables kept changing")

    async def changes(self, changes: Iterable[AssetChange]) -> None:
        by_table: dict[Object, list[tuple[AssetChange, str]]] = defaultdict(list)
        for change in changes:
            obj = object_of(change.qualified_name, self.s)
            if obj is not None and not change.deleted:  # a deleted asset stays as it was
                by_table[Object(obj.schema, obj.table)].append((change, obj.column))
        for table, items in by_table.items():
            async with self._lock(table):
                state = await self._state(table)
                moved = [c.asset_id for c, column in items if state.learn(c, column)]
                if moved:
                    await self._enforce(state, moved, drift=False)

    async def reconcile(self) -> None:
        await self.changes(await self._restricted_in_lily())
        for table_key in await self.memory.get(INDEX):
            schema, _, table = table_key.partition(".")
            async with self._lock(Object(schema, table)):
                state = await self._state(Object(schema, table))
                closed = [
                    a.asset_id for a in state.assets.values() if denial(a.tags, self.s).closed
                ]
                await self._enforce(state, closed, drift=True)

    def _lock(self, table: Object) -> asyncio.Lock:
        return self._tables.setdefault((self.integration_id, table.table_key), asyncio.Lock())

    async def _restricted_in_lily(self) -> list[AssetChange]:
        """The assets under the prefix that carry a restricted tag, as Lily has them now; and
        the ones the enforcer holds closed, as Lily has them now (one may have lost its tag
        while a change was missed)."""
        stub = metadata_grpc.MetadataServiceStub(self.lily.channel)
        found: dict[str, AssetChange] = {}
        tags = sorted({t for rule in self.s.rules for t in rule.tags})
        for tag in tags:
            token = ""
            while True:
                page = await stub.SearchMetadata(
                    metadata_pb.SearchMetadataRequest(
                        tag=tag,
                        qualified_name_prefix=self.s.prefix + "/",
                        page_size=1000,
                        page_token=token,
                    ),
                    metadata=self.lily.metadata,
                    timeout=self.lily.timeout,
                )
                for a in page.assets:
                    found[a.asset_id] = _change_of_asset(a)
                token = page.next_page_token
                if not token:
                    break
        for table_key in await self.memory.get(INDEX):
            schema, _, table = table_key.partition(".")
            state = await self._state(Object(schema, table))
            for known in state.assets.values():
                if known.asset_id in found or not denial(known.tags, self.s).closed:
                    continue
                try:
                    got = await stub.GetMetadata(
                        metadata_pb.GetMetadataRequest(asset_id=known.asset_id),
                        metadata=self.lily.metadata,
                        timeout=self.lily.timeout,
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    continue  # deleted: it stays as it was
                found[known.asset_id] = _change_of_asset(got.asset)
        return list(found.values())

    async def _enforce(self, state: TableState, moved: Sequence[str], *, drift: bool) -> None:
        obj = state.obj
        todo: Plan | None = None
        try:
            async with self.target.connection() as conn:
                facts = await engine.facts(conn, obj)
                if facts is None:
                    why = f"no table {obj.table_key} in the target"
                    self._receipts(state, moved, None, [], why)
                    await self._save(state)  # a reconciliation tries again
                    return
                todo = plan(obj, state.denials(self.s), facts, state.baseline)
                if drift:
                    if not todo.statements:
                        return
                    self._receipts(
                        state,
                        moved,
                        todo,
                        [],
                        "found otherwise than Lily left it; it needs: "
                        + "; ".join(todo.statements),
                        outcome=enforcement_pb.ENFORCEMENT_OUTCOME_DRIFTED,
                        statements=False,
                    )
                    if not self.s.revert_drift:
                        return
                with tracer.start_as_current_span(
                    "enforce statements",
                    attributes={"db.system": "postgresql", "lily.statements": todo.statements},
                ):
                    await engine.run(conn, todo.statements)
                readable = await _still_read(conn, obj, todo)
        except engine.Refusal as exc:
            self._receipts(state, moved, todo, [], f"the target refused: {exc}")
            await self.record()
            raise
        state.baseline = dict(todo.baseline)
        state.left = dict(todo.left)
        self._receipts(state, moved, todo, readable, "")
        await self._save(state)

    def _receipts(
        self,
        state: TableState,
        moved: Sequence[str],
        todo: Plan | None,
        readable: Sequence[str],
        failure: str,
        *,
        outcome: enforcement_pb.EnforcementOutcome.ValueType | None = None,
        statements: bool = True,
    ) -> None:
        at = Timestamp()
        at.FromNanoseconds(time.time_ns())
        closed_to = todo.closed if todo else {}
        closed = enforcement_pb.ENFORCEMENT_STATE_CLOSED
        opened = enforcement_pb.ENFORCEMENT_STATE_OPEN
        unknown = enforcement_pb.ENFORCEMENT_STATE_UNSPECIFIED
        for asset_id in moved:
            known = state.assets[asset_id]
            d = denial(known.tags, self.s)
            roles = sorted(
                closed_to.get(known.column, frozenset()) | closed_to.get("", frozenset())
            )
            still = [r for r in readable if r.endswith(f": {known.column or 'table'}")]
            ok = not failure and not still
            desired = closed if d.closed else opened
            if outcome is not None:  # drifted: the detail says how
                verdict, applied = outcome, unknown
            elif ok:
                verdict, applied = enforcement_pb.ENFORCEMENT_OUTCOME_APPLIED, desired
            else:
                verdict = enforcement_pb.ENFORCEMENT_OUTCOME_FAILED
                applied = opened if still else unknown
            detail = failure
            if still and not failure:
                detail = "still readable (through a role it is a member of, or PUBLIC): "
                detail += ", ".join(still)
            ENFORCEMENTS.labels("postgres", _OUTCOMES[verdict]).inc()
            self.receipts.append(
                enforcement_pb.EnforcementReceipt(
                    integration_id=self.integration_id,
                    asset_id=asset_id,
                    qualified_name=known.qualified_name,
                    target_object=Object(state.obj.schema, state.obj.table, known.column).name,
                    desired=desired,
                    applied=applied,
                    outcome=verdict,
                    asset_version=known.version,
                    restricted_tags=list(d.tags),
                    denied_roles=roles,
                    applied_at=at,
                    statements=list(todo.statements) if todo and statements else [],
                    taken=list(todo.taken) if todo else [],
                    detail=detail[:4000],
                )
            )

    async def record(self) -> None:
        """Files the receipts made so far (and forgets them)."""
        stub = enforcement_grpc.EnforcementServiceStub(self.lily.channel)
        while self.receipts:
            batch, self.receipts = self.receipts[:MAX_RECORD], self.receipts[MAX_RECORD:]
            await stub.RecordEnforcement(
                enforcement_pb.RecordEnforcementRequest(
                    integration_id=self.integration_id, receipts=batch
                ),
                metadata=self.lily.metadata,
                timeout=self.lily.timeout,
            )
            self.recorded += len(batch)
            self.failed += sum(
                r.outcome == enforcement_pb.ENFORCEMENT_OUTCOME_FAILED for r in batch
            )


async def _still_read(conn: asyncpg.Connection, obj: Object, todo: Plan) -> list[str]:
    """What a role it closed something to can still read of it ("role: column")."""
    found = await engine.still_read(conn, obj, todo.closed.get("", ()), [])
    by_role: dict[str, set[str]] = defaultdict(set)
    for column, roles in todo.closed.items():
        if column:
            for role in roles:
                by_role[role].add(column)
    for role, columns in by_role.items():
        found.extend(await engine.still_read(conn, obj, [role], columns))
    return found


def _change_of_asset(a: Any) -> AssetChange:
    return AssetChange(
        asset_id=a.asset_id,
        qualified_name=a.qualified_name,
        asset_type=int(a.asset_type),
        version=a.version,
        tags=tuple(t.name for t in a.effective_tags),
    )
