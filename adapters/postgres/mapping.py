"""What a PostgreSQL target should grant, and the statements that get it there. Pure
functions: no I/O.

The mechanism is SELECT privileges, by column. A role that holds SELECT on a whole table
reads every column whatever is revoked by column, so closing a column of such a role takes
the table's SELECT away and grants SELECT on each other column instead; a role granted
columns one by one loses the closed ones; a closed table loses every SELECT of the role on
it. What the owners had granted (the baseline, read from the catalogs before Lily first acts
on a table for a role) is what opening gives back: never more."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from adapters.postgres.config import PostgresTargetSettings

PUBLIC = "PUBLIC"


@dataclass(frozen=True, slots=True)
class Object:
    """A table, or a column of one, in the target."""

    schema: str
    table: str
    column: str = ""

    @property
    def table_key(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def name(self) -> str:
        return f"{self.table_key}.{self.column}" if self.column else self.table_key


@dataclass(frozen=True, slots=True)
class Grants:
    """A role's own SELECT on one table: on the whole of it, and on columns one by one."""

    table: bool = False
    columns: frozenset[str] = field(default_factory=frozenset)

    def dump(self) -> dict[str, object]:
        return {"table": self.table, "columns": sorted(self.columns)}

    @classmethod
    def load(cls, raw: Mapping[str, object]) -> Grants:
        columns = raw.get("columns")
        return cls(
            bool(raw.get("table")),
            frozenset(str(c) for c in columns) if isinstance(columns, list) else frozenset(),
        )


def object_of(qualified_name: str, settings: PostgresTargetSettings) -> Object | None:
    """<prefix>/<schema>/<table>[/<column>] -> the object; None if not one of this target's."""
    rest = qualified_name.removeprefix(settings.prefix + "/")
    if rest == qualified_name:
        return None
    parts = rest.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        return None
    return Object(*parts)


@dataclass(frozen=True, slots=True)
class Denial:
    """What an asset's tags ask of the target: the restricted tags it carries, the roles
    they close it to ("*": every grantee), and the roles that keep it."""

    tags: tuple[str, ...] = ()
    deny: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()

    @property
    def closed(self) -> bool:
        return bool(self.tags)


def denial(tags: Iterable[str], settings: PostgresTargetSettings) -> Denial:
    have = set(tags)
    found: list[str] = []
    deny: set[str] = set()
    keep: set[str] = set()
    for rule in settings.rules:
        hit = have.intersection(rule.tags)
        if hit:
            found.extend(sorted(hit))
            deny.update(rule.deny)
            keep.update(rule.keep)
    return Denial(tuple(dict.fromkeys(found)), frozenset(deny), frozenset(keep))


def closed_to(role: str, denials: Mapping[str, Denial], owner: str) -> tuple[bool, frozenset[str]]:
    """(the table closed, the columns closed) to a role, from each object's denial (by
    column name; "" the table)."""
    if role == owner:
        return False, frozenset()
    shut = {
        column
        for column, d in denials.items()
        if d.closed and role not in d.keep and (role in d.deny or "*" in d.deny)
    }
    return "" in shut, frozenset(c for c in shut if c)


def roles_to_close(denials: Mapping[str, Denial], grantees: Iterable[str], owner: str) -> set[str]:
    """The roles some closed object is denied to: named ones, and for "*" every grantee."""
    named: set[str] = set()
    for d in denials.values():
        if d.closed:
            named.update(r for r in d.deny if r != "*")
            if "*" in d.deny:
                named.update(grantees)
    return {r for r in named if r != owner}


def target(
    baseline: Grants, closed_table: bool, closed_columns: frozenset[str], columns: Sequence[str]
) -> Grants:
    """What a role should hold: its baseline, less what is closed to it."""
    if closed_table:
        return Grants()
    if not closed_columns:
        return baseline
    if baseline.table:
        return Grants(False, frozenset(columns) - closed_columns)
    return Grants(False, baseline.columns - closed_columns)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grantee(role: str) -> str:
    return PUBLIC if role == PUBLIC else ident(role)


def statements(obj: Object, role: str, current: Grants, wanted: Grants) -> list[str]:
    """The statements that take a role from `current` to `wanted` on a table."""
    table = f"{ident(obj.schema)}.{ident(obj.table)}"
    who = grantee(role)
    out: list[str] = []
    if current.table and not wanted.table:
        out.append(f"REVOKE SELECT ON {table} FROM {who}")
    if gone := current.columns - wanted.columns:
        out.append(f"REVOKE SELECT ({', '.join(map(ident, sorted(gone)))}) ON {table} FROM {who}")
    if new := wanted.columns - current.columns:
        out.append(f"GRANT SELECT ({', '.join(map(ident, sorted(new)))}) ON {table} TO {who}")
    if wanted.table and not current.table:
        out.append(f"GRANT SELECT ON {table} TO {who}")
    return out


def taken(obj: Object, role: str, baseline: Grants, wanted: Grants) -> list[str]:
    """What the owners had granted that a role does not hold while closed (given back when
    opened)."""
    out: list[str] = []
    if baseline.table and not wanted.table:
        out.append(f"SELECT ON {obj.table_key} FROM {role}")
    for column in sorted(baseline.columns - wanted.columns):
        out.append(f"SELECT ({column}) ON {obj.table_key} FROM {role}")
    return out


@dataclass(frozen=True, slots=True)
class TableFacts:
    """A table as the target's catalogs say it is now."""

    owner: str
    columns: tuple[str, ...]
    grants: Mapping[str, Grants]  # by role (PUBLIC too): its own SELECT


@dataclass(frozen=True, slots=True)
class Plan:
    """What enforcing a table's denials takes: the statements, what each closed role's
    baseline was (kept to open it again) and what it is left with, what was taken away."""

    statements: tuple[str, ...]
    baseline: Mapping[str, Grants]
    left: Mapping[str, Grants]
    taken: tuple[str, ...]
    closed: Mapping[str, frozenset[str]]  # object column ("" : the table) -> roles closed to


def plan(
    table: Object,
    denials: Mapping[str, Denial],
    facts: TableFacts,
    baseline: Mapping[str, Grants],
) -> Plan:
    """From what the target has (facts) and the owners' baseline of the roles Lily closed
    before, to what the denials ask: every role closed to something loses it (its baseline
    taken first if Lily had none); every role no longer closed to anything gets its baseline
    back."""
    roles = roles_to_close(denials, facts.grants, facts.owner) | set(baseline)
    out: list[str] = []
    kept: dict[str, Grants] = {}
    left: dict[str, Grants] = {}
    gone: list[str] = []
    closed: dict[str, set[str]] = {}
    for role in sorted(roles):
        current = facts.grants.get(role, Grants())
        base = baseline.get(role, current)
        closed_table, closed_columns = closed_to(role, denials, facts.owner)
        wanted = target(base, closed_table, closed_columns, facts.columns)
        out.extend(statements(table, role, current, wanted))
        if closed_table or closed_columns:
            kept[role] = base
            left[role] = wanted
            gone.extend(taken(table, role, base, wanted))
            for column in ({""} if closed_table else set()) | closed_columns:
                closed.setdefault(column, set()).add(role)
    return Plan(
        tuple(out),
        kept,
        left,
        tuple(gone),
        {column: frozenset(rs) for column, rs in closed.items()},
    )
