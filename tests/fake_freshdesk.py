"""A local stand-in for Freshdesk's API v2, as Freshdesk documents it
(developers.freshdesk.com/api: Tickets, Search, Conversations):

- Basic auth with an agent's API key as the user (any password); else 401
  {"code": "invalid_credentials", ...}.
- POST /api/v2/tickets: a requester (email) is required, and a subject and an HTML
  description; priority 1-4, status 2-5, tags of at most 32 characters. A wrong field is 400
  {"description": "Validation failed", "errors": [{"field", "message", "code"}]}. 201 with
  the ticket. GET and PUT /api/v2/tickets/{id}.
- GET /api/v2/search/tickets?query="tag:'x'" (the query in double quotes, else 400):
  {"results": [...], "total": n}.
- POST /api/v2/tickets/{id}/notes, GET /api/v2/tickets/{id}/conversations.
- fail(status, times, headers): the next requests answered so (429 with Retry-After, 5xx).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.doubles import Served

_QUERY = re.compile(r"^\"tag:'([^']+)'\"$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _invalid(field: str, message: str, code: str = "invalid_value") -> JSONResponse:
    return JSONResponse(
        {
            "description": "Validation failed",
            "errors": [{"field": field, "message": message, "code": code}],
        },
        status_code=400,
    )


@dataclass
class FakeFreshdesk(Served):
    api_key: str = "fd-key-1"
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    creates: int = 0
    _failing: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v2/tickets", self._create, methods=["POST"]),
                Route("/api/v2/tickets/{id:int}", self._ticket, methods=["GET", "PUT"]),
                Route("/api/v2/tickets/{id:int}/notes", self._note, methods=["POST"]),
                Route(
                    "/api/v2/tickets/{id:int}/conversations", self._conversations, methods=["GET"]
                ),
                Route("/api/v2/search/tickets", self._search, methods=["GET"]),
            ]
        )

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        self._failing.extend([(status, headers)] * times)

    def _refusal(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        try:
            user = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)[0]
        except ValueError:
            user = ""
        if not auth.startswith("Basic ") or user != self.api_key:
            return JSONResponse(
                {
                    "code": "invalid_credentials",
                    "message": "You have to be logged in to perform this action.",
                },
                status_code=401,
            )
        if self._failing:
            status, headers = self._failing.pop(0)
            return JSONResponse({"message": "failing"}, status_code=status, headers=headers)
        return None

    async def _create(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        t = await request.json()
        if not _EMAIL.match(str(t.get("email", ""))):
            return _invalid(
                "requester_id", "Please fill at least 1 of requester_id, email", "missing"
            )
        if not t.get("subject"):
            return _invalid("subject", "It should be a/an String", "missing_field")
        if not t.get("description"):
            return _invalid("description", "It should be a/an String", "missing_field")
        if t.get("priority") not in (1, 2, 3, 4):
            return _invalid("priority", "It should be one of these values: '1,2,3,4'")
        if t.get("status") not in (2, 3, 4, 5):
            return _invalid("status", "It should be one of these values: '2,3,4,5'")
        if any(not isinstance(x, str) or len(x) > 32 for x in t.get("tags", [])):
            return _invalid("tags", "Has 33 characters, it can have maximum of 32 characters")
        ticket_id = len(self.tickets) + 1
        self.tickets[ticket_id] = {**t, "id": ticket_id, "created_at": time.time()}
        self.creates += 1
        return JSONResponse(self.tickets[ticket_id], status_code=201)

    def _missing(self, request: Request) -> Response | None:
        if request.path_params["id"] not in self.tickets:
            return JSONResponse({"code": "access_denied"}, status_code=404)
        return None

    async def _ticket(self, request: Request) -> Response:
        if (refused := self._refusal(request) or self._missing(request)) is not None:
            return refused
        ticket = self.tickets[request.path_params["id"]]
        if request.method == "PUT":
            change = await request.json()
            if "status" in change and change["status"] not in (2, 3, 4, 5):
                return _invalid("status", "It should be one of these values: '2,3,4,5'")
            ticket.update(change)
        return JSONResponse(ticket)

    async def _note(self, request: Request) -> Response:
        if (refused := self._refusal(request) or self._missing(request)) is not None:
            return refused
        note = await request.json()
        if not note.get("body"):
            return _invalid("body", "It should be a/an String", "missing_field")
        notes = self.notes.setdefault(request.path_params["id"], [])
        notes.append({"id": len(notes) + 1, "body": note["body"], "private": note.get("private")})
        return JSONResponse(notes[-1], status_code=201)

    async def _conversations(self, request: Request) -> Response:
        if (refused := self._refusal(request) or self._missing(request)) is not None:
            return refused
        return JSONResponse(self.notes.get(request.path_params["id"], []))

    async def _search(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        m = _QUERY.match(request.query_params.get("query", ""))
        if m is None:
            return _invalid("query", "Given query is invalid", "invalid_value")
        found = [t for t in self.tickets.values() if m.group(1) in t.get("tags", [])]
        return JSONResponse({"results": found, "total": len(found)})
