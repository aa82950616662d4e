"""PostgresQualityStore: the QualityStore port (core/ports.py) on Postgres (migration 0011, in
the public schema whatever the tenant's isolation, beside the policies)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from core.domain.model import IssueSeverity
from core.domain.quality import Firing, Rule, RuleType, UsageWindow
from core.ports import UsageFacts
from core.postgres import run_on

_RULE = (
    "tenant_id, rule_id, type, asset_id, qualified_name_prefix, threshold, severity, disabled,"
    " description, created_at, updated_at, evaluated_at"
)

_CLAIM = f"""
UPDATE quality_rules SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
WHERE (tenant_id, rule_id) IN (
    SELECT tenant_id, rule_id FROM quality_rules
    WHERE NOT disabled AND due_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING {_RULE}
"""

# Per asset: its last use, its newest window, and the windows of the week before that one.
_FACTS = """
SELECT l.asset_id, l.window_start, l.window_end, l.query_count, l.distinct_users,
       (SELECT max(window_end) FROM quality_usage u
         WHERE u.tenant_id = $1 AND u.asset_id = l.asset_id AND u.query_count > 0) AS last_used,
       t.queries, t.seconds
FROM (SELECT DISTINCT ON (asset_id) asset_id, window_start, window_end, query_count,
             distinct_users
        FROM quality_usage WHERE tenant_id = $1 AND asset_id = ANY($2::text[])
        ORDER BY asset_id, window_start DESC) l
LEFT JOIN LATERAL (
    SELECT sum(query_count) AS queries,
           sum(extract(epoch FROM window_end - window_start)) AS seconds
    FROM quality_usage u
    WHERE u.tenant_id = $1 AND u.asset_id = l.asset_id
      AND u.window_start >= l.window_start - interval '7 days'
      AND u.window_start < l.window_start) t ON true
"""


_USAGE = (
    "unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::bigint[], $6::bigint[],"
    " $7::text[]) u(asset_id, window_start, window_end, query_count, distinct_users, run_id)"
)
_REPLACE = f"""
INSERT INTO quality_usage (tenant_id, asset_id, window_start, window_end, query_count,
                           distinct_users)
SELECT $1, asset_id, window_start, window_end, query_count, distinct_users FROM {_USAGE}
ON CONFLICT (tenant_id, asset_id, window_start) DO UPDATE SET
    window_end = excluded.window_end, query_count = excluded.query_count,
    distinct_users = excluded.distinct_users, recorded_at = now()
"""
# each run once: only the runs not counted before add to their windows
_ADD_RUNS = f"""
WITH fresh AS (
    INSERT INTO quality_usage_runs (tenant_id, asset_id, run_id, window_start)
    SELECT $1, asset_id, run_id, window_start FROM {_USAGE}
    ON CONFLICT DO NOTHING RETURNING asset_id, run_id
), counted AS (
    SELECT u.asset_id, u.window_start, max(u.window_end) AS window_end,
           sum(u.query_count) AS query_count, max(u.distinct_users) AS distinct_users
    FROM {_USAGE} JOIN fresh f ON f.asset_id = u.asset_id AND f.run_id = u.run_id
    GROUP BY u.asset_id, u.window_start
)
INSERT INTO quality_usage (tenant_id, asset_id, window_start, window_end, query_count,
                           distinct_users)
SELECT $1, asset_id, window_start, window_end, query_count, distinct_users FROM counted
ON CONFLICT (tenant_id, asset_id, window_start) DO UPDATE SET
    window_end = greatest(quality_usage.window_end, excluded.window_end),
    query_count = quality_usage.query_count + excluded.query_count,
    distinct_users = greatest(quality_usage.distinct_users, excluded.distinct_users),
    recorded_at = now()
"""


def _rule(r: asyncpg.Record) -> Rule:
    return Rule(
        tenant_id=r["tenant_id"],
        rule_id=r["rule_id"],
        type=RuleType(r["type"]),
        asset_id=r["asset_id"],
        qualified_name_prefix=r["qualified_name_prefix"],
        threshold=r["threshold"],
        severity=IssueSeverity(r["severity"]),
        disabled=r["disabled"],
        description=r["description"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        evaluated_at=r["evaluated_at"],
    )


def _window(r: asyncpg.Record) -> UsageWindow:
    return UsageWindow(
        r["asset_id"], r["window_start"], r["window_end"], r["query_count"], r["distinct_users"]
    )


class PostgresQualityStore:
    """See core.ports.QualityStore."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _run(self, work: Any) -> Any:
        return await run_on(self._pool, "data-quality store", work)

    # -- rules

    async def create_rule(self, rule: Rule) -> None:
        await self._run(
            lambda c: c.execute(
                f"INSERT INTO quality_rules ({_RULE}) VALUES"
                " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                *_values(rule),
            )
        )

    async def get_rule(self, tenant_id: str, rule_id: str) -> Rule | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"SELECT {_RULE} FROM quality_rules WHERE tenant_id = $1 AND rule_id = $2",
                tenant_id,
                rule_id,
            )
        )
        return None if row is None else _rule(row)

    async def list_rules(self, tenant_id: str) -> list[Rule]:
        rows = await self._run(
            lambda c: c.fetch(
                f"SELECT {_RULE} FROM quality_rules WHERE tenant_id = $1"
                " ORDER BY created_at, rule_id",
                tenant_id,
            )
        )
        return [_rule(r) for r in rows]

    async def update_rule(self, rule: Rule) -> bool:
        status = await self._run(
            lambda c: c.execute(
                "UPDATE quality_rules SET type = $3, asset_id = $4, qualified_name_prefix = $5,"
                " threshold = $6, severity = $7, disabled = $8, description = $9,"
                " created_at = $10, updated_at = $11, evaluated_at = $12, due_at = now()"
                " WHERE tenant_id = $1 AND rule_id = $2",
                *_values(rule),
            )
        )
        return bool(status != "UPDATE 0")

    async def delete_rule(self, tenant_id: str, rule_id: str) -> bool:
        status = await self._run(
            lambda c: c.execute(
                "DELETE FROM quality_rules WHERE tenant_id = $1 AND rule_id = $2",
                tenant_id,
                rule_id,
            )
        )
        return bool(status != "DELETE 0")

    # -- the schedule

    async def claim_due(self, owner: str, lease: float, limit: int) -> list[Rule]:
        rows = await self._run(lambda c: c.fetch(_CLAIM, owner, lease, limit))
        return [_rule(r) for r in rows]

    async def renew(self, owner: str, keys: Collection[tuple[str, str]], lease: float) -> None:
        if not keys:
            return
        tenants, rules = zip(*keys, strict=True)
        await self._run(
            lambda c: c.execute(
                "UPDATE quality_rules q SET lease_until = now() + make_interval(secs => $2)"
                " FROM unnest($3::text[], $4::text[]) k(tenant_id, rule_id)"
                " WHERE q.tenant_id = k.tenant_id AND q.rule_id = k.rule_id"
                " AND q.lease_owner = $1",
                owner,
                lease,
                list(tenants),
                list(rules),
            )
        )

    async def finish(
        self, owner: str, tenant_id: str, rule_id: str, evaluated_at: datetime, due_at: datetime
    ) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE quality_rules SET evaluated_at = $4, due_at = $5, lease_owner = NULL,"
                " lease_until = NULL WHERE tenant_id = $2 AND rule_id = $3 AND lease_owner = $1",
                owner,
                tenant_id,
                rule_id,
                evaluated_at,
                due_at,
            )
        )

    # -- usage

    async def record_usage(self, tenant_id: str, windows: Sequence[UsageWindow]) -> None:
        replaced = list({(w.asset_id, w.start): w for w in windows if not w.run_id}.values())
        runs = list({(w.asset_id, w.run_id): w for w in windows if w.run_id}.values())

        def columns(ws: Sequence[UsageWindow]) -> tuple[list[Any], ...]:
            return (
                [w.asset_id for w in ws],
                [w.start for w in ws],
                [w.end for w in ws],
                [w.query_count for w in ws],
                [w.distinct_users for w in ws],
                [w.run_id for w in ws],
            )

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                if replaced:
                    await conn.execute(_REPLACE, tenant_id, *columns(replaced))
                if runs:
                    await conn.execute(_ADD_RUNS, tenant_id, *columns(runs))

        if replaced or runs:
            await self._run(work)

    async def usage(self, tenant_id: str, asset_id: str, since: datetime) -> list[UsageWindow]:
        rows = await self._run(
            lambda c: c.fetch(
                "SELECT asset_id, window_start, window_end, query_count, distinct_users"
                " FROM quality_usage WHERE tenant_id = $1 AND asset_id = $2"
                " AND window_start >= $3 ORDER BY window_start DESC LIMIT 10000",
                tenant_id,
                asset_id,
                since,
            )
        )
        return [_window(r) for r in rows]

    async def usage_facts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, UsageFacts]:
        if not asset_ids:
            return {}
        rows = await self._run(lambda c: c.fetch(_FACTS, tenant_id, list(asset_ids)))
        facts = {}
        for r in rows:
            seconds = float(r["seconds"] or 0)
            trailing = float(r["queries"]) / seconds if seconds > 0 else None
            facts[r["asset_id"]] = UsageFacts(r["last_used"], _window(r), trailing)
        return facts

    # -- firings

    async def firings(
        self, tenant_id: str, rule_id: str, asset_ids: Sequence[str] | None = None
    ) -> dict[str, Firing]:
        if asset_ids is None:
            query = (
                "SELECT asset_id, count, open, synced FROM quality_firings"
                " WHERE tenant_id = $1 AND rule_id = $2 AND (open OR NOT synced)"
            )
            args: tuple[object, ...] = (tenant_id, rule_id)
        else:
            query = (
                "SELECT asset_id, count, open, synced FROM quality_firings"
                " WHERE tenant_id = $1 AND rule_id = $2 AND asset_id = ANY($3::text[])"
            )
            args = (tenant_id, rule_id, list(asset_ids))
        rows = await self._run(lambda c: c.fetch(query, *args))
        return {r["asset_id"]: Firing(r["count"], r["open"], r["synced"]) for r in rows}

    async def set_firing(
        self, tenant_id: str, rule_id: str, asset_id: str, before: Firing | None, after: Firing
    ) -> bool:
        """(False too if the rule was deleted meanwhile.)"""
        keys = (tenant_id, rule_id, asset_id, after.count, after.open, after.synced)
        if before is None:
            try:
                status = await self._run(
                    lambda c: c.execute(
                        "INSERT INTO quality_firings (tenant_id, rule_id, asset_id, count, open,"
                        " synced) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        *keys,
                    )
                )
            except asyncpg.ForeignKeyViolationError:
                return False
            return bool(status != "INSERT 0 0")
        status = await self._run(
            lambda c: c.execute(
                "UPDATE quality_firings SET count = $4, open = $5, synced = $6, changed_at = now()"
                " WHERE tenant_id = $1 AND rule_id = $2 AND asset_id = $3"
                " AND count = $7 AND open = $8 AND synced = $9",
                *keys,
                before.count,
                before.open,
                before.synced,
            )
        )
        return bool(status != "UPDATE 0")


def _values(r: Rule) -> tuple[object, ...]:
    return (
        r.tenant_id,
        r.rule_id,
        int(r.type),
        r.asset_id,
        r.qualified_name_prefix,
        r.threshold,
        int(r.severity),
        r.disabled,
        r.description,
        r.created_at,
        r.updated_at,
        r.evaluated_at,
    )
