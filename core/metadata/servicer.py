"""MetadataService over gRPC: decode, take the caller, call the service, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from lily.v1 import common_pb2 as common_pb
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from opentelemetry import propagate

from core.cells import current_cell
from core.domain.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from core.domain.model import (
    Asset,
    AssetDraft,
    IssueStatus,
    SearchQuery,
    TagSource,
    WriteContext,
)
from core.domain.rules import MUTABLE_FIELDS
from core.errors import rejection_status
from core.metadata import mapping
from core.metadata.service import ItemResult, MetadataService, WatchFilter
from core.ports import Access
from core.requestctx import Principal, current_request_id, principal_ctx

MAX_BATCH = 1000
MAX_STREAM_REJECTIONS = 100
REDACTED_FIELDS = ("description", "attributes", "business_terms", "external_id")


def principal_of(context: grpc.aio.ServicerContext) -> Principal:
    """The caller, as the interceptor authenticated them before the handler ran."""
    principal = principal_ctx.get()
    if principal is None:
        raise Unauthenticated("no principal")
    return principal


def tenant_of(context: grpc.aio.ServicerContext) -> str:
    """The caller's tenant: always the principal's, never the payload's."""
    return principal_of(context).tenant_id


def write_context(context: grpc.aio.ServicerContext, action: str) -> WriteContext:
    principal = principal_of(context)
    rid = current_request_id()
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return WriteContext(
        tenant_id=principal.tenant_id,
        actor=principal.subject[:256],
        action=action,
        now=datetime.now(UTC),
        request_id=rid,
        origin=context.peer() or "",
        trace_headers=headers,
    )


def _batch(
    assets: list,
    now: datetime,
    access: Access,
    method: str,
    offset: int = 0,
) -> tuple[list[tuple[int, AssetDraft]], list[metadata_pb.IngestResult]]:
    """The valid drafts the caller may write, and a REJECTED result for each other asset."""
    drafts, rejected = [], []
    for i, pb in enumerate(assets, start=offset):
        problems: list[FieldViolation] = []
        draft = mapping.draft_from_pb(pb, f"assets[{i - offset}]", now, problems)
        error: InvalidArgument | PermissionDenied | None = None
        if draft is None:
            error = InvalidArgument(problems)
        elif not access.may_write(draft.asset_type, draft.qualified_name, method):
            error = PermissionDenied(
                f"may not write {draft.asset_type.name} {draft.qualified_name!r}",
                metadata={"qualified_name": draft.qualified_name[:256]},
            )
        if error is None:
            assert draft is not None
            drafts.append((i, draft))
        else:
            rejected.append(
                metadata_pb.IngestResult(
                    index=i,
                    qualified_name=pb.qualified_name[:2048],
                    outcome=metadata_pb.INGEST_OUTCOME_REJECTED,
                    error=rejection_status(error),
                )
            )
    return drafts, rejected


def _result_pb(r: ItemResult) -> metadata_pb.IngestResult:
    return metadata_pb.IngestResult(
        index=r.index,
        asset_id=r.asset_id,
        qualified_name=r.qualified_name,
        outcome=int(r.outcome),
        version=r.version,
        consistency=int(r.consistency),
        changed_fields=r.changed_fields,
    )


def _too_many(n: int) -> InvalidArgument:
    return InvalidArgument(
        [FieldViolation("assets", f"has {n} assets; at most {MAX_BATCH} per batch")]
    )


def _expected(request: object) -> int | None:
    return request.expected_version if request.HasField("expected_version") else None  # type: ignore[attr-defined]


class MetadataServicer(metadata_grpc.MetadataServiceServicer):
    def __init__(self, access: Access) -> None:
        self._access = access

    @property
    def _svc(self) -> MetadataService:
        """The service of the cell this call was routed to (core.cells)."""
        return current_cell().metadata

    def _asset_pb(self, asset: Asset, method: str) -> common_pb.Asset:
        """The asset as the caller may see it (PermissionDenied if not at all)."""
        found = self._visible(asset, method)
        if found is None:
            raise PermissionDenied(
                f"asset {asset.asset_id!r} carries a tag you may not read",
                metadata={"asset_id": asset.asset_id},
            )
        return found

    def _visible(self, asset: Asset, method: str) -> common_pb.Asset | None:
        view = self._access.read_view({t.name for t in asset.tags}, method)
        if view == "refused":
            return None
        pb = mapping.asset_to_pb(asset, self._svc.consistency_of(asset.asset_type))
        if view == "redacted":
            for name in REDACTED_FIELDS:
                pb.ClearField(name)
            pb.redacted_fields.extend(REDACTED_FIELDS)
        return pb

    async def _may_write(self, ctx: WriteContext, asset_id: str) -> None:
        asset = await self._svc.get(ctx.tenant_id, asset_id, include_deleted=True)
        if not self._access.may_write(asset.asset_type, asset.qualified_name, ctx.action):
            raise PermissionDenied(
                f"may not write {asset.asset_type.name} {asset.qualified_name!r}",
                metadata={"asset_id": asset_id},
            )

    async def IngestMetadata(
        self, request: metadata_pb.IngestMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.IngestMetadataResponse:
        ctx = write_context(context, "IngestMetadata")
        if len(request.assets) > MAX_BATCH:
            raise _too_many(len(request.assets))
        if request.close_bulk_job and not request.bulk_job_id:
            raise InvalidArgument([FieldViolation("close_bulk_job", "needs bulk_job_id")])
        if request.bulk_job_id:
            require_id("bulk_job_id", request.bulk_job_id)
            await self._svc.check_job(ctx.tenant_id, request.bulk_job_id)
        drafts, rejected = _batch(list(request.assets), ctx.now, self._access, ctx.action)
        results = await self._svc.ingest(
            ctx,
            drafts,
            job_id=request.bulk_job_id,
            rejected=len(rejected),
            close_job=request.close_bulk_job,
        )
        merged = sorted([*map(_result_pb, results), *rejected], key=lambda r: r.index)
        return metadata_pb.IngestMetadataResponse(results=merged)

    async def IngestMetadataStream(
        self,
        requests: AsyncIterator[metadata_pb.IngestMetadataStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> metadata_pb.IngestMetadataStreamResponse:
        ctx = write_context(context, "IngestMetadataStream")
        summary = metadata_pb.IngestMetadataStreamResponse()
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is not None and first.bulk_job_id:
            require_id("bulk_job_id", first.bulk_job_id)
            job_id = (await self._svc.check_job(ctx.tenant_id, first.bulk_job_id)).job_id
        else:
            job_id = (await self._svc.create_job(ctx, "IngestMetadataStream")).job_id
        summary.bulk_job_id = job_id

        async def batches() -> AsyncIterator[tuple[list[tuple[int, AssetDraft]], int]]:
            request = first
            while request is not None:
                if len(request.assets) > MAX_BATCH:
                    raise _too_many(len(request.assets))
                drafts, rejected = _batch(
                    list(request.assets),
                    datetime.now(UTC),
                    self._access,
                    ctx.action,
                    summary.received,
                )
                summary.received += len(request.assets)
                summary.rejected += len(rejected)
                room = MAX_STREAM_REJECTIONS - len(summary.rejections)
                summary.rejections.extend(rejected[: max(room, 0)])
                yield drafts, len(rejected)
                request = await anext(incoming, None)

        outcomes = await self._svc.ingest_stream(ctx, job_id, batches())
        for outcome, n in outcomes.items():
            setattr(summary, outcome.name.lower(), n)
        await self._svc.close_job(ctx.tenant_id, job_id)
        return summary

    async def GetMetadata(
        self, request: metadata_pb.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetMetadataResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        asset = await self._svc.get(tenant, request.asset_id, request.include_deleted)
        return metadata_pb.GetMetadataResponse(asset=self._asset_pb(asset, "GetMetadata"))

    async def LookupMetadata(
        self, request: metadata_pb.LookupMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.LookupMetadataResponse:
        tenant = tenant_of(context)
        problems: list[FieldViolation] = []
        mapping.check_text(
            "qualified_name",
            request.qualified_name,
            mapping.MAX_QUALIFIED_NAME_BYTES,
            problems,
            required=True,
        )
        if problems:
            raise InvalidArgument(problems)
        asset = await self._svc.lookup(tenant, request.qualified_name, request.include_deleted)
        return metadata_pb.LookupMetadataResponse(asset=self._asset_pb(asset, "LookupMetadata"))

    async def UpdateMetadata(
        self, request: metadata_pb.UpdateMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.UpdateMetadataResponse:
        ctx = write_context(context, "UpdateMetadata")
        require_id("asset_id", request.asset_id)
        problems: list[FieldViolation] = []
        paths = list(request.update_mask.paths)
        if not paths:
            problems.append(FieldViolation("update_mask", "is required"))
        for i, path in enumerate(paths):
            if path not in MUTABLE_FIELDS:
                problems.append(
                    FieldViolation(
                        f"update_mask.paths[{i}]",
                        f"{path!r} is not one of {', '.join(MUTABLE_FIELDS)}",
                    )
                )
        a = request.asset
        for name in ("name", "data_source", "external_id"):
            mapping.check_text(f"asset.{name}", getattr(a, name), mapping.MAX_TEXT_BYTES, problems)
        mapping.check_text(
            "asset.description", a.description, mapping.MAX_DESCRIPTION_BYTES, problems
        )
        mapping.check_strings("asset.owners", list(a.owners), problems)
        mapping.check_strings("asset.business_terms", list(a.business_terms), problems)
        mapping.check_attributes("asset.attributes", a.attributes, problems)
        event_time = mapping.timestamp_or(
            "source_event_time", request.source_event_time, ctx.now, problems
        )
        if problems:
            raise InvalidArgument(problems)
        values: dict[str, object] = {}
        for path in dict.fromkeys(paths):
            value = getattr(a, path)
            values[path] = (
                dict(value)
                if path == "attributes"
                else (tuple(value) if path in ("owners", "business_terms") else value)
            )
        await self._may_write(ctx, request.asset_id)
        decision = await self._svc.update(
            ctx, request.asset_id, values, _expected(request), event_time
        )
        assert decision.asset is not None
        return metadata_pb.UpdateMetadataResponse(
            asset=self._asset_pb(decision.asset, ctx.action),
            outcome=int(decision.outcome),
            changed_fields=decision.changed_fields,
        )

    async def DeleteMetadata(
        self, request: metadata_pb.DeleteMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.DeleteMetadataResponse:
        ctx = write_context(context, "DeleteMetadata")
        require_id("asset_id", request.asset_id)
        await self._may_write(ctx, request.asset_id)
        asset, already = await self._svc.delete(ctx, request.asset_id, _expected(request))
        return metadata_pb.DeleteMetadataResponse(
            asset=self._asset_pb(asset, ctx.action), already_deleted=already
        )

    async def SearchMetadata(
        self, request: metadata_pb.SearchMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.SearchMetadataResponse:
        tenant = tenant_of(context)
        problems: list[FieldViolation] = []
        asset_type = mapping.asset_type_of(
            "asset_type", request.asset_type, problems, required=False
        )
        mapping.check_text("tag", request.tag, 128, problems)
        mapping.check_text(
            "qualified_name_prefix",
            request.qualified_name_prefix,
            mapping.MAX_QUALIFIED_NAME_BYTES,
            problems,
        )
        for name in ("data_source", "owner"):
            mapping.check_text(name, getattr(request, name), mapping.MAX_TEXT_BYTES, problems)
        if problems:
            raise InvalidArgument(problems)
        query = SearchQuery(
            asset_type,
            request.tag,
            request.qualified_name_prefix,
            request.data_source,
            request.owner,
            request.include_deleted,
        )
        assets, token = await self._svc.search(tenant, query, request.page_size, request.page_token)
        visible = (self._visible(a, "SearchMetadata") for a in assets)
        return metadata_pb.SearchMetadataResponse(
            assets=[pb for pb in visible if pb is not None],
            next_page_token=token,
        )

    async def UpdateTags(
        self, request: metadata_pb.UpdateTagsRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.UpdateTagsResponse:
        ctx = write_context(context, "UpdateTags")
        require_id("asset_id", request.asset_id)
        problems: list[FieldViolation] = []
        try:
            source = TagSource(request.source) if request.source else TagSource.USER
        except ValueError:
            problems.append(
                FieldViolation("source", f"is not a known tag source ({request.source})")
            )
            source = TagSource.USER
        add = mapping.tag_assignments("add", request.add, source, problems)
        if source == TagSource.PROPAGATED:
            problems.append(
                FieldViolation(
                    "source",
                    "PROPAGATED tags come from lineage (the propagation worker owns them): "
                    "tag the upstream asset instead",
                )
            )
        mapping.check_strings("remove", list(request.remove), problems)
        if not add and not request.remove:
            problems.append(FieldViolation("add", "add or remove at least one tag"))
        if problems:
            raise InvalidArgument(problems)
        await self._may_write(ctx, request.asset_id)
        asset, added, removed = await self._svc.update_tags(
            ctx, request.asset_id, add, list(request.remove), source, _expected(request)
        )
        return metadata_pb.UpdateTagsResponse(
            asset=self._asset_pb(asset, ctx.action), tags_added=added, tags_removed=removed
        )

    async def AttachIssue(
        self, request: metadata_pb.AttachIssueRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.AttachIssueResponse:
        ctx = write_context(context, "AttachIssue")
        require_id("asset_id", request.asset_id)
        problems: list[FieldViolation] = []
        if not request.HasField("issue"):
            raise InvalidArgument([FieldViolation("issue", "is required")])
        issue = mapping.issue_from_pb(
            request.issue, ctx.tenant_id, request.asset_id, ctx.now, problems
        )
        if problems:
            raise InvalidArgument(problems)
        await self._may_write(ctx, request.asset_id)
        stored, created = await self._svc.attach_issue(ctx, request.asset_id, issue)
        return metadata_pb.AttachIssueResponse(issue=mapping.issue_to_pb(stored), created=created)

    async def ListIssues(
        self, request: metadata_pb.ListIssuesRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.ListIssuesResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        try:
            status = IssueStatus(request.status) if request.status else None
        except ValueError as exc:
            raise InvalidArgument([FieldViolation("status", "is not a known status")]) from exc
        issues, token = await self._svc.list_issues(
            tenant, request.asset_id, status, request.page_size, request.page_token
        )
        return metadata_pb.ListIssuesResponse(
            issues=[mapping.issue_to_pb(i) for i in issues], next_page_token=token
        )

    async def GetAuditTrail(
        self, request: metadata_pb.GetAuditTrailRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetAuditTrailResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        entries, token = await self._svc.audit_trail(
            tenant, request.asset_id, request.page_size, request.page_token
        )
        return metadata_pb.GetAuditTrailResponse(
            entries=[mapping.audit_to_pb(e) for e in entries], next_page_token=token
        )

    async def CreateBulkJob(
        self, request: metadata_pb.CreateBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.CreateBulkJobResponse:
        ctx = write_context(context, "CreateBulkJob")
        problems: list[FieldViolation] = []
        mapping.check_text("description", request.description, mapping.MAX_TEXT_BYTES, problems)
        if problems:
            raise InvalidArgument(problems)
        job = await self._svc.create_job(ctx, request.description)
        return metadata_pb.CreateBulkJobResponse(job=mapping.job_to_pb(job))

    async def GetBulkJob(
        self, request: metadata_pb.GetBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetBulkJobResponse:
        tenant = tenant_of(context)
        require_id("job_id", request.job_id)
        job = await self._svc.get_job(tenant, request.job_id)
        return metadata_pb.GetBulkJobResponse(job=mapping.job_to_pb(job))

    async def WatchChanges(
        self,
        request: metadata_pb.WatchChangesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[metadata_pb.WatchChangesResponse]:
        tenant = tenant_of(context)
        problems: list[FieldViolation] = []
        for i, t in enumerate(request.asset_types):
            mapping.asset_type_of(f"asset_types[{i}]", t, problems)
        for i, tag in enumerate(request.tags):
            mapping.check_text(f"tags[{i}]", tag, 128, problems, required=True)
        if problems:
            raise InvalidArgument(problems)
        flt = WatchFilter(
            frozenset(request.entities),
            frozenset(request.changes),
            frozenset(request.asset_types),
            frozenset(request.tags),
        )
        # Tell the client the subscription is live before the first event arrives.
        await context.send_initial_metadata((("x-lily-watching", "1"),))
        async for event in self._svc.watch(tenant, flt):
            yield metadata_pb.WatchChangesResponse(event=event)


def require_id(field: str, value: str) -> None:
    """Refuses (INVALID_ARGUMENT) a value that is not a Lily id."""
    problems: list[FieldViolation] = []
    mapping.check_asset_id(field, value, problems)
    if problems:
        raise InvalidArgument(problems)
