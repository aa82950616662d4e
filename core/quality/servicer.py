"""DataQualityService over gRPC: decode, take the caller, call the service, encode."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from lily.v1 import quality_pb2 as quality_pb
from lily.v1 import quality_pb2_grpc as quality_grpc

from core.domain.errors import FieldViolation
from core.events.nats import NatsChangeBus
from core.quality import mapping
from core.quality.service import QualityService
from core.wire.context import tenant_of, write_context
from core.wire.validation import optional_timestamp, refuse, require_id


class QualityServicer(quality_grpc.DataQualityServiceServicer):
    def __init__(self, service: QualityService, bus: Callable[[], NatsChangeBus]) -> None:
        self._service = service
        # The bus of the cell the call was routed to (core.cells, by the interceptor).
        self._bus = bus

    async def RecordUsage(
        self, request: quality_pb.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.RecordUsageResponse:
        ctx = write_context(context, "RecordUsage")
        windows = mapping.usage_from_pb(ctx.tenant_id, request.usage, ctx.now)
        accepted = await self._service.record_usage(ctx, self._bus(), windows)
        return quality_pb.RecordUsageResponse(accepted=accepted)

    async def ListUsage(
        self, request: quality_pb.ListUsageRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.ListUsageResponse:
        tenant = tenant_of(context)
        require_id("asset_id", request.asset_id)
        problems: list[FieldViolation] = []
        since = optional_timestamp("since", request.since, problems)
        refuse(problems)
        windows = await self._service.usage(tenant, request.asset_id, since, datetime.now(UTC))
        return quality_pb.ListUsageResponse(usage=[mapping.usage_to_pb(w) for w in windows])

    async def CreateRule(
        self, request: quality_pb.CreateRuleRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.CreateRuleResponse:
        ctx = write_context(context, "CreateRule")
        kind, values = mapping.new_rule_from_pb(request)
        rule = await self._service.create_rule(ctx, kind, values)
        return quality_pb.CreateRuleResponse(rule=mapping.rule_to_pb(rule))

    async def GetRule(
        self, request: quality_pb.GetRuleRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.GetRuleResponse:
        tenant = tenant_of(context)
        require_id("rule_id", request.rule_id)
        rule = await self._service.get_rule(tenant, request.rule_id)
        return quality_pb.GetRuleResponse(rule=mapping.rule_to_pb(rule))

    async def ListRules(
        self, request: quality_pb.ListRulesRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.ListRulesResponse:
        tenant = tenant_of(context)
        problems: list[FieldViolation] = []
        kind = mapping.rule_type_of("type", request.type, problems) if request.type else None
        refuse(problems)
        rules = await self._service.list_rules(tenant, kind)
        return quality_pb.ListRulesResponse(rules=[mapping.rule_to_pb(r) for r in rules])

    async def UpdateRule(
        self, request: quality_pb.UpdateRuleRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.UpdateRuleResponse:
        ctx = write_context(context, "UpdateRule")
        rule_id, values = mapping.update_from_pb(request)
        rule = await self._service.update_rule(ctx, rule_id, values)
        return quality_pb.UpdateRuleResponse(rule=mapping.rule_to_pb(rule))

    async def DeleteRule(
        self, request: quality_pb.DeleteRuleRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.DeleteRuleResponse:
        ctx = write_context(context, "DeleteRule")
        require_id("rule_id", request.rule_id)
        resolved = await self._service.delete_rule(ctx, request.rule_id)
        return quality_pb.DeleteRuleResponse(resolved=resolved)

    async def EvaluateRule(
        self, request: quality_pb.EvaluateRuleRequest, context: grpc.aio.ServicerContext
    ) -> quality_pb.EvaluateRuleResponse:
        tenant = tenant_of(context)
        require_id("rule_id", request.rule_id)
        counts = await self._service.evaluate(tenant, request.rule_id)
        return quality_pb.EvaluateRuleResponse(
            evaluated=counts.evaluated, raised=counts.raised, resolved=counts.resolved
        )
