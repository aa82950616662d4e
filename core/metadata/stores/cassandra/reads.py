"""The Cassandra asset store's reads: assets by id (and by name, through the id), issues, the
audit trail by month, and search (storage-attached indexes, or the name directory for a
qualified-name prefix)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from core import cassandra
from core.domain.model import Asset, AuditEntry, Issue, IssueStatus, SearchQuery
from core.domain.rules import asset_id_for
from core.metadata.stores.cassandra.rows import (
    ASSET_COLUMNS,
    Clock,
    asset_from_row,
    audit_from_row,
    issue_from_row,
    matches,
    micros,
    month,
    parent_dir,
)
from core.metadata.stores.cassandra.statements import Statements, unavailable

_MAX = "\U0010ffff"


class Reads:
    def __init__(self, db: Statements, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def get(self, tenant_id: str, asset_id: str) -> Asset | None:
        with unavailable("get"):
            rows = await self._db.q("read_assets", (tenant_id, [asset_id]))
        return asset_from_row(rows[0]) if rows else None

    async def get_many(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, Asset]:
        with unavailable("get_many"):
            rows = await self._db.read_chunked("read_assets", tenant_id, sorted(set(asset_ids)))
        return {r.asset_id: asset_from_row(r) for r in rows}

    async def open_issue_counts(self, tenant_id: str, asset_ids: Sequence[str]) -> dict[str, int]:
        with unavailable("open_issue_counts"):
            rows = await self._db.read_chunked("issue_states", tenant_id, sorted(set(asset_ids)))
        counts: dict[str, int] = {}
        for r in rows:
            if r.status != IssueStatus.RESOLVED:
                counts[r.asset_id] = counts.get(r.asset_id, 0) + 1
        return counts

    async def get_by_qualified_name(self, tenant_id: str, qualified_name: str) -> Asset | None:
        asset = await self.get(tenant_id, asset_id_for(tenant_id, qualified_name))
        return asset if asset is not None and asset.qualified_name == qualified_name else None

    async def search(
        self, tenant_id: str, query: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        with unavailable("search"):
            if query.qualified_name_prefix:
                return await self._search_path(tenant_id, query, after, limit)
            return await self._search_indexed(tenant_id, query, after, limit)

    async def _search_indexed(
        self, tenant_id: str, q: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        """Storage-attached indexes: the tenant and each filter; Cassandra's order (by token),
        resumed from the driver's paging state."""
        where: list[str] = ["tenant_id = ?"]
        args: list[object] = [tenant_id]
        if q.asset_type is not None:
            where.append("asset_type = ?")
            args.append(int(q.asset_type))
        if q.tag:
            where.append("tag_names CONTAINS ?")
            args.append(q.tag)
        if q.data_source:
            where.append("data_source = ?")
            args.append(q.data_source)
        if q.owner:
            where.append("owners CONTAINS ?")
            args.append(q.owner)
        if not q.include_deleted:
            where.append("is_deleted = ?")
            args.append(False)
        cql = f"SELECT {', '.join(ASSET_COLUMNS)} FROM assets WHERE {' AND '.join(where)}"
        bound = (await self._db.prepared(cql)).bind(args)
        bound.fetch_size = limit
        state = base64.urlsafe_b64decode(after) if after else None
        page = await cassandra.execute(
            self._db.session, bound, timeout=self._db.timeout, paging_state=state
        )
        cursor = base64.urlsafe_b64encode(page.paging_state).decode() if page.paging_state else None
        return [asset_from_row(r) for r in page], cursor

    async def _search_path(
        self, tenant_id: str, q: SearchQuery, after: str | None, limit: int
    ) -> tuple[list[Asset], str | None]:
        """A walk of the name directory from the prefix, in name order, fetching candidate
        assets to check the other filters. It looks at a bounded number of names per page;
        the cursor is the last name looked at (a page may be short yet have a next one)."""
        budget = max(10 * limit, 1000)
        found: list[Asset] = []
        pending: list[tuple[str, str]] = []

        async def check() -> None:
            assets = await self.get_many(tenant_id, [i for _, i in pending])
            for _, asset_id in pending:
                a = assets.get(asset_id)
                if a is not None and matches(a, q):
                    found.append(a)
            pending.clear()

        walk = self._walk(
            tenant_id, parent_dir(q.qualified_name_prefix), q.qualified_name_prefix, after
        )
        cursor = None  # where the walk stopped, if it stopped before its end
        async for name, asset_id, asset_type, is_deleted in walk:
            budget -= 1
            if (q.asset_type is None or asset_type == q.asset_type) and (
                q.include_deleted or not is_deleted
            ):
                pending.append((name, asset_id))
                if len(pending) >= limit + 1 - len(found):
                    await check()
                    if len(found) > limit:
                        break
            if budget <= 0:
                cursor = name
                break
        await check()
        if len(found) > limit:
            return found[:limit], found[limit - 1].qualified_name
        return found, cursor

    async def _walk(
        self, tenant_id: str, d: str, prefix: str, after: str | None
    ) -> AsyncIterator[tuple[str, str, int, bool]]:
        """(name, asset_id, type, deleted) of the assets under directory `d` whose names start
        with `prefix` and come after `after`, in name order (depth first)."""
        low = prefix
        if after is not None:
            cut = after.find("/", len(d))
            low = max(low, after[: cut + 1] if cut >= 0 else after)
        state = None
        while True:
            page = await self._db.q(
                "walk", (tenant_id, d, low, prefix + _MAX), fetch_size=500, paging_state=state
            )
            for r in page:
                if r.asset_id is not None and (after is None or r.entry > after):
                    yield r.entry, r.asset_id, r.asset_type, bool(r.is_deleted)
                if r.has_children:
                    inside = after is not None and after.startswith(r.entry)
                    if after is None or inside or r.entry > after:
                        async for leaf in self._walk(
                            tenant_id, r.entry, prefix, after if inside else None
                        ):
                            yield leaf
            state = page.paging_state
            if state is None:
                return

    async def list_issues(
        self,
        tenant_id: str,
        asset_id: str,
        status: IssueStatus | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[Issue]:
        """Newest first by (opened_at, issue_id); an asset's issues are one small partition."""
        with unavailable("list_issues"):
            rows = await self._db.all("read_issues", (tenant_id, asset_id))
        issues = [issue_from_row(r) for r in rows if status is None or r.status == int(status)]

        def key(i: Issue) -> tuple[int, str]:
            return (micros(i.opened_at) if i.opened_at else -1, i.issue_id)

        issues.sort(key=key, reverse=True)
        if after is not None:
            bound = (micros(datetime.fromisoformat(after[0])) if after[0] else -1, after[1])
            issues = [i for i in issues if key(i) < bound]
        return issues[:limit]

    async def audit_trail(
        self, tenant_id: str, asset_id: str, after_seq: int, limit: int
    ) -> list[AuditEntry]:
        """Month partitions in order, from `after_seq`'s month (or the asset's creation)."""
        with unavailable("audit_trail"):
            if after_seq:
                at = month(after_seq >> 10)
            else:
                asset = await self.get(tenant_id, asset_id)
                if asset is None:
                    return []
                at = month(micros(asset.created_at))
            entries: list[AuditEntry] = []
            last = month(self._clock.now_us()) + 1  # a month of clock skew
            while at <= last and len(entries) < limit:
                rows = await self._db.q(
                    "read_audit", (tenant_id, asset_id, at, after_seq, limit - len(entries))
                )
                entries += map(audit_from_row, rows)
                at += 1
            return entries
