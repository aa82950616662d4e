"""A local stand-in for Monte Carlo's GraphQL API (https://api.getmontecarlo.com/graphql) as
its SDK, pycarlo, meets it:

- POST /graphql with an API key in the `x-mcd-id` and `x-mcd-token` headers; without them, or
  with a wrong one, 401.
- The query is parsed, validated and run against Monte Carlo's own schema, the one pycarlo
  ships (pycarlo/lib/schema.json, introspected from the API): a query the real API would
  refuse is refused here too, as a GraphQL error.
- getAlerts serves `alerts` as the schema documents it: a range of updatedTime or createdTime
  (or ids) is required, of at most two months, `after` inclusive and `before` exclusive;
  orderBy a field, `-` first for newest first; Relay paging by `first` and `after`, at most
  `max_page` a page.
- Errors as its gateway answers them: `fail(status, headers)` answers the next request(s) with
  that status (429 with Retry-After when throttled, 5xx) and a JSON message.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_client_schema, graphql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.doubles import Served

TWO_MONTHS = timedelta(days=62)


@cache
def schema() -> GraphQLSchema:
    import pycarlo

    path = os.path.join(os.path.dirname(pycarlo.__file__), "lib", "schema.json")
    with open(path) as f:
        raw = json.load(f)
    raw = raw.get("data", raw)
    # the introspection writes some enum defaults as Python names (graphene's), which
    # graphql-core will not build a schema with; no query here needs defaults
    for t in raw["__schema"]["types"]:
        for f in t.get("fields") or []:
            for arg in f.get("args") or []:
                arg["defaultValue"] = None
        for arg in t.get("inputFields") or []:
            arg["defaultValue"] = None
    return build_client_schema(raw)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class FakeMonteCarlo(Served):
    mcd_id: str = "mcd-id-1"
    mcd_token: str = "mcd-token-1"
    max_page: int = 100
    alerts: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)  # getAlerts' arguments, in order
    refused: list[int] = field(default_factory=list)  # statuses answered, in order
    _failing: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/graphql", self._graphql, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"{self.base}/graphql"

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        self._failing.extend([(status, headers)] * times)

    def alert(self, alert_id: str, updated: datetime, **fields: Any) -> dict[str, Any]:
        """Adds (or replaces) an alert, as getAlerts returns it."""
        alert = {
            "id": alert_id,
            "uuid": alert_id,
            "title": fields.pop("title", "Freshness anomaly"),
            "type": fields.pop("type", "ANOMALIES"),
            "subTypes": fields.pop("subTypes", ["FRESHNESS_ANOMALY"]),
            "status": fields.pop("status", None),
            "severity": fields.pop("severity", None),
            "url": f"https://getmontecarlo.com/alerts/{alert_id}",
            "createdTime": fields.pop("created", updated).isoformat(),
            "updatedTime": updated.isoformat(),
            "tables": fields.pop("tables", []),
            **fields,
        }
        self.alerts = [a for a in self.alerts if a["id"] != alert_id] + [alert]
        return alert

    async def _graphql(self, request: Request) -> JSONResponse:
        if (
            request.headers.get("x-mcd-id") != self.mcd_id
            or request.headers.get("x-mcd-token") != self.mcd_token
        ):
            self.refused.append(401)
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        if self._failing:
            status, headers = self._failing.pop(0)
            self.refused.append(status)
            message = "Too Many Requests" if status == 429 else "Internal server error"
            return JSONResponse({"message": message}, status_code=status, headers=headers)
        body = await request.json()
        result = await graphql(
            schema(),
            body["query"],
            root_value={"getAlerts": self._get_alerts},
            variable_values=body.get("variables"),
            operation_name=body.get("operationName"),
        )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [e.formatted for e in result.errors]
        return JSONResponse(answer)

    def _get_alerts(self, info: Any, **args: Any) -> dict[str, Any]:
        self.queries.append(args)
        ranged = args.get("updatedTime") or args.get("createdTime")
        if ranged is None and not args.get("ids"):
            raise GraphQLError("Either updatedTime, createdTime or ids must be provided")
        found = list(self.alerts)
        if ranged is not None:
            key = "updatedTime" if args.get("updatedTime") else "createdTime"
            after, before = _at(ranged["after"]), _at(ranged["before"])
            if before - after > TWO_MONTHS:
                raise GraphQLError("Time range must be within 2 months")
            found = [a for a in found if after <= _at(a[key]) < before]
        order = args.get("orderBy") or "-createdTime"
        by = order.lstrip("-")
        found.sort(key=lambda a: (_at(a[by]), a["id"]), reverse=order.startswith("-"))
        start = 0
        if args.get("after"):
            start = int(base64.b64decode(args["after"]).decode().split(":")[1]) + 1
        size = min(args.get("first") or self.max_page, self.max_page)
        page = found[start : start + size]

        def cursor(n: int) -> str:
            return base64.b64encode(f"arrayconnection:{n}".encode()).decode()

        return {
            "totalCount": len(found),
            "pageInfo": {
                "hasNextPage": start + size < len(found),
                "hasPreviousPage": start > 0,
                "startCursor": cursor(start) if page else None,
                "endCursor": cursor(start + len(page) - 1) if page else None,
            },
            "edges": [{"cursor": cursor(start + n), "node": a} for n, a in enumerate(page)],
        }
