"""MetadataService's use cases, over the AssetStore and ChangeBus ports. No gRPC here."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from core.domain import rules
from core.domain.errors import (
    AssetNotFound,
    FieldViolation,
    JobClosed,
    NotFound,
    PermissionDenied,
    TransformRejected,
)
from core.domain.model import (
    Asset,
    AssetDraft,
    AssetType,
    AssetView,
    AuditEntry,
    BulkJob,
    Consistency,
    Issue,
    IssueStatus,
    JobCounts,
    Outcome,
    SearchQuery,
    TagAssignment,
    TagSource,
    WriteContext,
)
from core.domain.rules import Plan
from core.events import watch
from core.metadata.ingest import (
    Drafts,
    ItemResult,
    Lane,
    Rejection,
    StreamSummary,
    count_outcomes,
    counts_of,
    first_error,
    ingest_plan,
    shielded,
)
from core.metadata.pagination import PageTokens, page_size
from core.ports import Access, AssetStore, ChangeBus, OutboxRecord, Snapshot, TxRequest
from core.transforms.pipeline import NO_HOOKS, Hooks

log = logging.getLogger(__name__)
T = TypeVar("T")


class MetadataService:
    """The metadata use cases of one cell. Per-object authorization (which assets the caller
    may write, how they may see each one) goes through `access`, for the principal of the
    current call; the call's own permission was checked before it got here."""

    def __init__(
        self,
        store: AssetStore,
        bus: ChangeBus,
        tokens: PageTokens,
        access: Access,
        *,
        consistency: Mapping[AssetType, Consistency],
        encode_work: Callable[[WriteContext, Sequence[AssetDraft], str], list[bytes]],
        on_commit: Callable[[Sequence[OutboxRecord]], None] = lambda records: None,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self._store = store
        self._bus = bus
        self._tokens = tokens
        self._access = access
        self._consistency = {**rules.DEFAULT_CONSISTENCY, **consistency}
        self._encode_work = encode_work
        self._on_commit = on_commit
        self._hooks = hooks

    def consistency_of(self, asset_type: AssetType) -> Consistency:
        return self._consistency[asset_type]

    async def _transact(
        self, tenant_id: str, request: TxRequest, plan: Callable[[Snapshot], Plan]
    ) -> Plan:
        result = await self._store.transact(tenant_id, request, plan)
        if result.changes:
            self._on_commit(result.outbox)
        return result

    # -- authorization of each object -----------------------------------------------------

    def _view(self, asset: Asset, method: str) -> AssetView | None:
        """The asset as the caller may see it (None: not at all)."""
        view = self._access.read_view({t.name for t in asset.tags}, method)
        if view == "refused":
            return None
        consistency = self._consistency[asset.asset_type]
        if view == "redacted":
            return AssetView(rules.redact(asset), consistency, rules.REDACTED_FIELDS)
        return AssetView(asset, consistency)

    def _shown(self, asset: Asset, method: str) -> AssetView:
        """The asset as the caller may see it; PermissionDenied if not at all."""
        view = self._view(asset, method)
        if view is None:
            raise PermissionDenied(
                f"asset {asset.asset_id!r} carries a tag you may not read",
                metadata={"asset_id": asset.asset_id},
            )
        return view

    def _writable(self, drafts: Drafts, rejections: list[Rejection], method: str) -> Drafts:
        """The drafts the caller may write; a Rejection for each other one."""
        if self._access.may_write_all(method):  # (an editor or admin: no asset to ask of)
            return list(drafts)
        allowed = []
        for i, draft in drafts:
            if self._access.may_write(draft.asset_type, draft.qualified_name, method):
                allowed.append((i, draft))
            else:
                error = PermissionDenied(
                    f"may not write {draft.asset_type.name} {draft.qualified_name!r}",
                    metadata={"qualified_name": draft.qualified_name[:256]},
                )
                rejections.append(Rejection(i, draft.qualified_name, error))
        return allowed

    async def _admitted(
        self, ctx: WriteContext, drafts: Drafts, rejections: list[Rejection]
    ) -> Drafts:
        """The drafts as the tenant's pre-ingest transformers leave them (core/transforms),
        of those the caller may write; a Rejection for each other one."""
        pipeline = self._hooks.pipeline(ctx.tenant_id)
        if pipeline is not None and drafts:
            drafts, refused = await pipeline.run(ctx.tenant_id, drafts)
            for i, draft, why in refused:
                error = TransformRejected(
                    [FieldViolation(f"assets[{i}]", why)], f"{draft.qualified_name[:200]}: {why}"
                )
                rejections.append(Rejection(i, draft.qualified_name, error))
        writable = self._writable(drafts, rejections, ctx.action)
        count_outcomes({Outcome.REJECTED: len(rejections)}, "")
        return writable

    async def _may_write(self, ctx: WriteContext, asset_id: str) -> None:
        asset = await self.get(ctx.tenant_id, asset_id, include_deleted=True)
        if not self._access.may_write(asset.asset_type, asset.qualified_name, ctx.action):
            raise PermissionDenied(
                f"may not write {asset.asset_type.name} {asset.qualified_name!r}",
                metadata={"asset_id": asset_id},
            )

    # -- ingest ---------------------------------------------------------------------------

    async def check_job(self, tenant_id: str, job_id: str) -> BulkJob:
        job = await self._store.get_job(tenant_id, job_id)
        if job is None:
            raise NotFound(f"bulk job {job_id!r} not found", metadata={"job_id": job_id})
        if job.closed:
            raise JobClosed(f"bulk job {job_id!r} is closed", metadata={"job_id": job_id})
        return job

    async def ingest(
        self,
        ctx: WriteContext,
        drafts: Drafts,
        rejections: list[Rejection],
        *,
        job_id: str = "",
        close_job: bool = False,
    ) -> tuple[list[ItemResult], list[Rejection]]:
        """Writes the strong-class drafts the caller may write now, and queues the eventual-class
        ones (both at once); counts all of it, and the refused items (`rejections`, the invalid
        ones, and those the caller may not write), on the bulk job, if any. Returns each
        item's result, and every refusal."""
        rejections = list(rejections)
        strong, eventual = self._split(await self._admitted(ctx, drafts, rejections))
        rejected = len(rejections)
        try:
            async with asyncio.TaskGroup() as tg:
                writing = tg.create_task(self._write_strong(ctx, strong, job_id))
                tg.create_task(self._enqueue(ctx, eventual, job_id))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if job_id and (rejected or close_job):
            await self._store.update_job(
                ctx.tenant_id, job_id, JobCounts(rejected=rejected), close=close_job
            )
        queued = [
            ItemResult(
                i,
                rules.asset_id_for(ctx.tenant_id, d.qualified_name),
                d.qualified_name,
                Outcome.ACCEPTED,
                Consistency.EVENTUAL,
            )
            for i, d in eventual
        ]
        return sorted([*writing.result(), *queued], key=lambda r: r.index), rejections

    async def ingest_stream(
        self,
        ctx: WriteContext,
        job_id: str,
        batches: AsyncIterator[tuple[Drafts, list[Rejection]]],
        *,
        keep: int = 100,
        depth: int = 4,
    ) -> StreamSummary:
        """Ingests a stream of (drafts, refused items) batches for one bulk job, and returns
        how many items had each outcome, and the first `keep` refusals (the invalid items, and
        those the caller may not write).

        Two lanes, each in stream order: one writes the strong-class drafts, the other queues
        the eventual-class ones; so one batch's store write overlaps another's queueing and the
        arrival of the next (a batch at a time, the stream would wait on each in turn). At most
        `depth` batches wait for each lane. If the stream of batches fails (a bad batch), the
        batches before it are applied first, then its error is raised; if a lane fails, the
        stream stops there with that error. Whatever was written or queued stays, counted on
        the job (a client retrying the stream re-ingests idempotently)."""
        summary = StreamSummary(keep)
        outcomes = summary.outcomes
        lanes: tuple[asyncio.Queue[Lane], asyncio.Queue[Lane]] = (
            asyncio.Queue(depth),
            asyncio.Queue(depth),
        )

        async def strong_lane() -> None:
            while (item := await lanes[0].get()) is not None:
                outcomes.update(r.outcome for r in await self._write_strong(ctx, item[0], job_id))

        async def eventual_lane() -> None:
            while (item := await lanes[1].get()) is not None:
                queued, rejected = item
                await self._enqueue(ctx, queued, job_id)
                outcomes[Outcome.ACCEPTED] += len(queued)
                if rejected:
                    await self._store.update_job(
                        ctx.tenant_id, job_id, JobCounts(rejected=rejected)
                    )

        failed: Exception | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(strong_lane())
                tg.create_task(eventual_lane())
                try:
                    async for drafts, rejections in batches:
                        refused = list(rejections)
                        mine = await self._admitted(ctx, drafts, refused)
                        summary.refused(refused)
                        rejected = len(refused)
                        strong, eventual = self._split(mine)
                        if strong:
                            await lanes[0].put((strong, 0))
                        if eventual or rejected:
                            await lanes[1].put((eventual, rejected))
                except Exception as exc:  # the stream itself failed (a bad batch, say):
                    failed = exc  # the batches before it are still applied, then it is raised
                for lane in lanes:
                    await lane.put(None)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if failed is not None:
            raise failed
        return summary

    def _split(
        self, drafts: Drafts
    ) -> tuple[list[tuple[int, AssetDraft]], list[tuple[int, AssetDraft]]]:
        strong, eventual = [], []
        for item in drafts:
            if self._consistency[item[1].asset_type] == Consistency.STRONG:
                strong.append(item)
            else:
                eventual.append(item)
        return strong, eventual

    async def _write_strong(
        self, ctx: WriteContext, strong: Sequence[tuple[int, AssetDraft]], job_id: str
    ) -> list[ItemResult]:
        """Strong-class drafts, written in one transaction with their job counts."""
        if not strong:
            return []
        decisions: dict[int, rules.Decision] = {}
        ids = [rules.asset_id_for(ctx.tenant_id, d.qualified_name) for _, d in strong]
        counts = (
            (lambda: {job_id: counts_of(decisions) + JobCounts(accepted=len(strong))})
            if job_id
            else None
        )
        await self._transact(
            ctx.tenant_id,
            TxRequest(ids, job_counts=counts),
            ingest_plan([(i, d, ctx) for i, d in strong], decisions),
        )
        count_outcomes(Counter(dec.outcome for dec in decisions.values()), "STRONG")
        results = []
        for asset_id, (i, d) in zip(ids, strong, strict=True):
            dec = decisions[i]
            results.append(
                ItemResult(
                    i,
                    asset_id,
                    d.qualified_name,
                    dec.outcome,
                    Consistency.STRONG,
                    dec.asset.version if dec.asset else 0,
                    dec.changed_fields,
                )
            )
        return results

    async def _enqueue(
        self, ctx: WriteContext, eventual: Sequence[tuple[int, AssetDraft]], job_id: str
    ) -> None:
        """Eventual-class drafts, durably queued for the ingest worker, then counted on the
        job as accepted (the worker counts them again as it writes them)."""
        if not eventual:
            return
        work = self._encode_work(ctx, [d for _, d in eventual], job_id)

        async def queue_and_count() -> None:
            await self._bus.enqueue_ingest(ctx.tenant_id, work, dict(ctx.trace_headers))
            if job_id:
                await self._store.update_job(
                    ctx.tenant_id, job_id, JobCounts(accepted=len(eventual))
                )

        # Shielded: a caller that goes away (a client cancel, a failed sibling lane) must not
        # leave work queued that its job never counted as accepted.
        await shielded(queue_and_count())
        count_outcomes({Outcome.ACCEPTED: len(eventual)}, "EVENTUAL")

    async def create_job(self, ctx: WriteContext, description: str) -> BulkJob:
        job = BulkJob(
            tenant_id=ctx.tenant_id,
            job_id=uuid.uuid4().hex,
            created_at=ctx.now,
            updated_at=ctx.now,
            description=description,
        )
        await self._store.create_job(job)
        return job

    async def get_job(self, tenant_id: str, job_id: str) -> BulkJob:
        job = await self._store.get_job(tenant_id, job_id)
        if job is None:
            raise NotFound(f"bulk job {job_id!r} not found", metadata={"job_id": job_id})
        return job

    async def close_job(self, tenant_id: str, job_id: str) -> BulkJob | None:
        return await self._store.update_job(tenant_id, job_id, JobCounts(), close=True)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, tenant_id: str, asset_id: str, include_deleted: bool = False) -> Asset:
        asset = await self._store.get(tenant_id, asset_id)
        if asset is None or (asset.is_deleted and not include_deleted):
            raise AssetNotFound(asset_id)
        return asset

    async def read(
        self, tenant_id: str, asset_id: str, include_deleted: bool, method: str
    ) -> AssetView:
        """An asset as the caller may see it (GetMetadata)."""
        return self._shown(await self.get(tenant_id, asset_id, include_deleted), method)

    async def lookup(
        self, tenant_id: str, qualified_name: str, include_deleted: bool, method: str
    ) -> AssetView:
        """The asset of a qualified name, as the caller may see it."""
        asset = await self._store.get_by_qualified_name(tenant_id, qualified_name)
        if asset is None or (asset.is_deleted and not include_deleted):
            raise NotFound(
                f"no asset named {qualified_name!r}", metadata={"qualified_name": qualified_name}
            )
        return self._shown(asset, method)

    async def search(
        self, tenant_id: str, query: SearchQuery, size: int, token: str, method: str
    ) -> tuple[list[AssetView], str]:
        """A page of matching assets as the caller may see them (those they may not see at
        all left out), and the token of the next page ("": no more)."""
        limit = page_size(size)
        fp = PageTokens.fingerprint(
            "search",
            query.asset_type,
            query.tag,
            query.qualified_name_prefix,
            query.data_source,
            query.owner,
            query.include_deleted,
        )
        after = self._tokens.decode(token, tenant_id, fp)
        assets, cursor = await self._store.search(tenant_id, query, after, limit)
        views = [v for v in (self._view(a, method) for a in assets) if v is not None]
        return views, self._tokens.encode(tenant_id, fp, cursor) if cursor is not None else ""

    async def list_issues(
        self, tenant_id: str, asset_id: str, status: IssueStatus | None, size: int, token: str
    ) -> tuple[list[Issue], str]:
        limit = page_size(size)
        await self.get(tenant_id, asset_id, include_deleted=True)
        fp = PageTokens.fingerprint("issues", asset_id, status)
        after = self._tokens.decode(token, tenant_id, fp)
        issues = await self._store.list_issues(
            tenant_id, asset_id, status, tuple(after) if after else None, limit + 1
        )
        more = len(issues) > limit
        issues = issues[:limit]
        last = issues[-1] if issues else None
        next_token = (
            self._tokens.encode(
                tenant_id, fp, [last.opened_at.isoformat() if last.opened_at else "", last.issue_id]
            )
            if more and last
            else ""
        )
        return issues, next_token

    async def audit_trail(
        self, tenant_id: str, asset_id: str, size: int, token: str
    ) -> tuple[list[AuditEntry], str]:
        limit = page_size(size)
        await self.get(tenant_id, asset_id, include_deleted=True)
        fp = PageTokens.fingerprint("audit", asset_id)
        after = self._tokens.decode(token, tenant_id, fp) or 0
        entries = await self._store.audit_trail(tenant_id, asset_id, int(after), limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        next_token = self._tokens.encode(tenant_id, fp, entries[-1].sequence) if more else ""
        return entries, next_token

    # -- changes to one asset -------------------------------------------------------------

    async def _change(
        self, ctx: WriteContext, request: TxRequest, step: Callable[[Snapshot, Plan], T]
    ) -> T:
        """Runs a domain rule on one asset in a transaction: what the rule answered (on the
        store's last try)."""
        out: list[T] = []

        def plan(snapshot: Snapshot) -> Plan:
            out.clear()
            p = Plan()
            out.append(step(snapshot, p))
            return p

        await self._transact(ctx.tenant_id, request, plan)
        return out[0]

    async def update(
        self,
        ctx: WriteContext,
        asset_id: str,
        values: Mapping[str, object],
        expected_version: int | None,
        event_time: datetime,
    ) -> tuple[AssetView, rules.Decision]:
        """Sets fields of an asset the caller may write (see rules.masked_values)."""
        await self._may_write(ctx, asset_id)
        decision = await self._change(
            ctx,
            TxRequest([asset_id]),
            lambda s, p: rules.update(
                asset_id, s.assets.get(asset_id), values, expected_version, event_time, ctx, p
            ),
        )
        assert decision.asset is not None  # (rules.update refuses a missing asset)
        return self._shown(decision.asset, ctx.action), decision

    async def update_tags(
        self,
        ctx: WriteContext,
        asset_id: str,
        add: Sequence[TagAssignment],
        remove: Sequence[str],
        source: TagSource,
        expected_version: int | None,
    ) -> tuple[AssetView, list[str], list[str]]:
        """Adds and removes one source's tags (never PROPAGATED: rules.assignable) on an asset
        the caller may write; returns it and the tag names added and removed."""
        rules.assignable(source)
        await self._may_write(ctx, asset_id)
        asset, added, removed = await self._change(
            ctx,
            TxRequest([asset_id]),
            lambda s, p: rules.update_tags(
                asset_id, s.assets.get(asset_id), add, remove, source, expected_version, ctx, p
            ),
        )
        return self._shown(asset, ctx.action), added, removed

    async def delete(
        self, ctx: WriteContext, asset_id: str, expected_version: int | None
    ) -> tuple[AssetView, bool]:
        """Soft-deletes an asset the caller may write; says if it was deleted already."""
        await self._may_write(ctx, asset_id)
        asset, already = await self._change(
            ctx,
            TxRequest([asset_id]),
            lambda s, p: rules.delete(asset_id, s.assets.get(asset_id), expected_version, ctx, p),
        )
        return self._shown(asset, ctx.action), already

    async def attach_issue(
        self, ctx: WriteContext, asset_id: str, issue: Issue
    ) -> tuple[Issue, bool]:
        """Attaches (or updates) a data-quality issue on an asset the caller may write; says
        if it was new."""
        await self._may_write(ctx, asset_id)
        issue_id = rules.issue_id_for(asset_id, issue.source, issue.external_id)
        return await self._change(
            ctx,
            TxRequest([asset_id], [(asset_id, issue_id)]),
            lambda s, p: rules.attach_issue(
                asset_id, s.assets.get(asset_id), s.issues.get(issue_id), issue, ctx, p
            ),
        )

    async def raise_issue(self, ctx: WriteContext, asset_id: str, issue: Issue) -> None:
        """Lily's own issue on an asset, deleted or not (no caller to authorize: the
        data-quality rules). Raising the same issue again changes nothing."""
        issue_id = rules.issue_id_for(asset_id, issue.source, issue.external_id)
        await self._change(
            ctx,
            TxRequest([asset_id], [(asset_id, issue_id)]),
            lambda s, p: rules.attach_issue(
                asset_id,
                s.assets.get(asset_id),
                s.issues.get(issue_id),
                issue,
                ctx,
                p,
                of_deleted=True,
            ),
        )

    async def resolve_issue(
        self, ctx: WriteContext, asset_id: str, source: str, external_id: str
    ) -> bool:
        """Resolves Lily's own issue (see raise_issue), keeping what it said; False if it
        was not open."""
        issue_id = rules.issue_id_for(asset_id, source, external_id)
        return await self._change(
            ctx,
            TxRequest([asset_id], [(asset_id, issue_id)]),
            lambda s, p: rules.resolve_issue(
                asset_id, s.assets.get(asset_id), s.issues.get(issue_id), ctx, p
            ),
        )

    # -- live changes ---------------------------------------------------------------------

    def watch(self, tenant_id: str, flt: watch.WatchFilter) -> AsyncIterator[watch.Event]:
        """The tenant's changes that match `flt`, live from now on."""
        return watch.changes(self._bus, tenant_id, flt)
