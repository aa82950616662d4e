"""MetadataService over gRPC: decode, take the caller, call the service, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.domain.errors import FieldViolation, InvalidArgument
from core.domain.model import AssetDraft
from core.metadata import mapping
from core.metadata.ingest import Rejection
from core.metadata.service import MetadataService
from core.wire.common import issue_from_pb, issue_to_pb
from core.wire.context import tenant_of, write_context
from core.wire.validation import check_batch, refuse, require_id

MAX_STREAM_REJECTIONS = 100


class MetadataServicer(metadata_grpc.MetadataServiceServicer):
    def __init__(self, service: Callable[[], MetadataService]) -> None:
        # The service of the cell the call was routed to (core.cells, by the interceptor).
        self._service = service

    async def IngestMetadata(
        self, request: metadata_pb.IngestMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.IngestMetadataResponse:
        ctx = write_context(context, "IngestMetadata")
        check_batch("assets", len(request.assets))
        if request.close_bulk_job and not request.bulk_job_id:
            raise InvalidArgument([FieldViolation("close_bulk_job", "needs bulk_job_id")])
        svc = self._service()
        if request.bulk_job_id:
            require_id("bulk_job_id", request.bulk_job_id)
            await svc.check_job(ctx.tenant_id, request.bulk_job_id)
        drafts, invalid = mapping.drafts_from_pb(request.assets, ctx.now)
        results, rejections = await svc.ingest(
            ctx, drafts, invalid, job_id=request.bulk_job_id, close_job=request.close_bulk_job
        )
        return metadata_pb.IngestMetadataResponse(
            results=mapping.results_to_pb(results, rejections)
        )

    async def IngestMetadataStream(
        self,
        requests: AsyncIterator[metadata_pb.IngestMetadataStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> metadata_pb.IngestMetadataStreamResponse:
        ctx = write_context(context, "IngestMetadataStream")
        svc = self._service()
        reply = metadata_pb.IngestMetadataStreamResponse()
        incoming = aiter(requests)
        first = await anext(incoming, None)
        if first is not None and first.bulk_job_id:
            require_id("bulk_job_id", first.bulk_job_id)
            job_id = (await svc.check_job(ctx.tenant_id, first.bulk_job_id)).job_id
        else:
            job_id = (await svc.create_job(ctx, "IngestMetadataStream")).job_id
        reply.bulk_job_id = job_id

        async def batches() -> AsyncIterator[tuple[list[tuple[int, AssetDraft]], list[Rejection]]]:
            request = first
            while request is not None:
                check_batch("assets", len(request.assets))
                batch = mapping.drafts_from_pb(request.assets, datetime.now(UTC), reply.received)
                reply.received += len(request.assets)
                yield batch
                request = await anext(incoming, None)

        summary = await svc.ingest_stream(ctx, job_id, batches(), keep=MAX_STREAM_REJECTIONS)
        for outcome, n in summary.outcomes.items():
            setattr(reply, outcome.name.lower(), n)
        reply.rejected = summary.rejected
        reply.rejections.extend(map(mapping.rejection_to_pb, summary.rejections))
        await svc.close_job(ctx.tenant_id, job_id)
        return reply

    async def GetMetadata(
        self, request: metadata_pb.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetMetadataResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        view = await self._service().read(
            tenant, request.asset_id, request.include_deleted, "GetMetadata"
        )
        return metadata_pb.GetMetadataResponse(asset=mapping.view_to_pb(view))

    async def LookupMetadata(
        self, request: metadata_pb.LookupMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.LookupMetadataResponse:
        tenant = tenant_of(context)
        name = mapping.qualified_name_from_pb(request)
        view = await self._service().lookup(tenant, name, request.include_deleted, "LookupMetadata")
        return metadata_pb.LookupMetadataResponse(asset=mapping.view_to_pb(view))

    async def UpdateMetadata(
        self, request: metadata_pb.UpdateMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.UpdateMetadataResponse:
        ctx = write_context(context, "UpdateMetadata")
        require_id("asset_id", request.asset_id)
        values, event_time = mapping.update_from_pb(request, ctx.now)
        view, decision = await self._service().update(
            ctx, request.asset_id, values, mapping.expected_version(request), event_time
        )
        return metadata_pb.UpdateMetadataResponse(
            asset=mapping.view_to_pb(view),
            outcome=metadata_pb.IngestOutcome.ValueType(decision.outcome),
            changed_fields=decision.changed_fields,
        )

    async def DeleteMetadata(
        self, request: metadata_pb.DeleteMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.DeleteMetadataResponse:
        ctx = write_context(context, "DeleteMetadata")
        require_id("asset_id", request.asset_id)
        view, already = await self._service().delete(
            ctx, request.asset_id, mapping.expected_version(request)
        )
        return metadata_pb.DeleteMetadataResponse(
            asset=mapping.view_to_pb(view), already_deleted=already
        )

    async def SearchMetadata(
        self, request: metadata_pb.SearchMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.SearchMetadataResponse:
        tenant = tenant_of(context)
        query = mapping.search_from_pb(request)
        views, token = await self._service().search(
            tenant, query, request.page_size, request.page_token, "SearchMetadata"
        )
        return metadata_pb.SearchMetadataResponse(
            assets=[mapping.view_to_pb(v) for v in views], next_page_token=token
        )

    async def UpdateTags(
        self, request: metadata_pb.UpdateTagsRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.UpdateTagsResponse:
        ctx = write_context(context, "UpdateTags")
        require_id("asset_id", request.asset_id)
        source, add, remove = mapping.tags_from_pb(request)
        view, added, removed = await self._service().update_tags(
            ctx, request.asset_id, add, remove, source, mapping.expected_version(request)
        )
        return metadata_pb.UpdateTagsResponse(
            asset=mapping.view_to_pb(view), tags_added=added, tags_removed=removed
        )

    async def AttachIssue(
        self, request: metadata_pb.AttachIssueRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.AttachIssueResponse:
        ctx = write_context(context, "AttachIssue")
        require_id("asset_id", request.asset_id)
        if not request.HasField("issue"):
            raise InvalidArgument([FieldViolation("issue", "is required")])
        problems: list[FieldViolation] = []
        issue = issue_from_pb(request.issue, ctx.tenant_id, request.asset_id, ctx.now, problems)
        refuse(problems)
        stored, created = await self._service().attach_issue(ctx, request.asset_id, issue)
        return metadata_pb.AttachIssueResponse(issue=issue_to_pb(stored), created=created)

    async def ListIssues(
        self, request: metadata_pb.ListIssuesRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.ListIssuesResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        status = mapping.issue_status_from_pb(request.status)
        issues, token = await self._service().list_issues(
            tenant, request.asset_id, status, request.page_size, request.page_token
        )
        return metadata_pb.ListIssuesResponse(
            issues=[issue_to_pb(i) for i in issues], next_page_token=token
        )

    async def GetAuditTrail(
        self, request: metadata_pb.GetAuditTrailRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetAuditTrailResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        entries, token = await self._service().audit_trail(
            tenant, request.asset_id, request.page_size, request.page_token
        )
        return metadata_pb.GetAuditTrailResponse(
            entries=[mapping.audit_to_pb(e) for e in entries], next_page_token=token
        )

    async def CreateBulkJob(
        self, request: metadata_pb.CreateBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.CreateBulkJobResponse:
        ctx = write_context(context, "CreateBulkJob")
        job = await self._service().create_job(ctx, mapping.description_from_pb(request))
        return metadata_pb.CreateBulkJobResponse(job=mapping.job_to_pb(job))

    async def GetBulkJob(
        self, request: metadata_pb.GetBulkJobRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb.GetBulkJobResponse:
        tenant = tenant_of(context)
        require_id("job_id", request.job_id)
        job = await self._service().get_job(tenant, request.job_id)
        return metadata_pb.GetBulkJobResponse(job=mapping.job_to_pb(job))

    async def WatchChanges(
        self,
        request: metadata_pb.WatchChangesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[metadata_pb.WatchChangesResponse]:
        tenant = tenant_of(context)
        flt = mapping.watch_filter_from_pb(request)
        # Tell the client the subscription is live before the first event arrives.
        await context.send_initial_metadata((("x-lily-watching", "1"),))
        async for event in self._service().watch(tenant, flt):
            yield metadata_pb.WatchChangesResponse(event=event)
