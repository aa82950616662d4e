"""A local stand-in for JIRA Cloud's REST API v3 and its webhooks, as Atlassian documents them
(developer.atlassian.com/cloud/jira/platform/rest/v3: issues, search/jql, comments,
transitions; .../webhooks: admin webhooks with a secret, X-Hub-Signature):

- Basic auth with an account's e-mail and API token; anything else 401.
- POST /rest/api/3/issue: fields checked as JIRA checks them: the project and the issue type
  must exist, summary is required (at most 255, one line), a priority must be one of the
  site's, labels may not hold spaces, the description must be Atlassian Document Format (a
  doc of version 1, of block nodes it knows, text nodes with text). A wrong field is 400
  {"errorMessages": [], "errors": {field: message}}. 201 {id, key, self}.
- POST /rest/api/3/search/jql: `project = "P" AND labels = "L"` (what Lily asks), newest
  first; {"issues": [...], "isLast": true}. GET /rest/api/3/issue/{key}.
- GET and POST /rest/api/3/issue/{key}/comment (ADF bodies), GET and POST .../transitions
  (To Do, In Progress, Done; 204).
- A status change is a jira:issue_updated webhook, signed with the registered secret, to
  each registered URL: whether Lily moved the ticket or a person did (move()).
- Faults: fail(status, times, headers) answers the next requests so; crash_on_create: the
  next issue is made and then the server goes down before it answers (a restart mid-call),
  for `down` seconds; slow_create: each new issue's answer comes that long after it is made.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.doubles import Served

STATUSES = {"To Do": "new", "In Progress": "indeterminate", "Done": "done"}
TRANSITIONS = {"11": "To Do", "21": "In Progress", "31": "Done"}
PRIORITIES = {"Highest", "High", "Medium", "Low", "Lowest"}
_BLOCKS = {"paragraph", "bulletList", "orderedList", "listItem", "heading", "codeBlock", "rule"}
_JQL = re.compile(r'^project = "([A-Z0-9_]+)" AND labels = "([^"\s]+)"$')


def adf_problem(doc: Any) -> str:
    """Why JIRA would refuse a document ("" : it takes it)."""
    if not isinstance(doc, dict) or doc.get("type") != "doc" or doc.get("version") != 1:
        return "must be an Atlassian Document Format doc of version 1"

    def node(n: Any) -> str:
        if not isinstance(n, dict) or "type" not in n:
            return "a node without a type"
        if n["type"] == "text":
            return "" if isinstance(n.get("text"), str) and n["text"] else "an empty text node"
        if n["type"] not in _BLOCKS:
            return f"unknown node {n['type']!r}"
        for child in n.get("content", []):
            if problem := node(child):
                return problem
        return ""

    for n in doc.get("content", []):
        if problem := node(n):
            return problem
    return ""


@dataclass
class FakeJira(Served):
    email: str = "bot@example.com"
    api_token: str = "jira-token-1"
    projects: dict[str, set[str]] = field(default_factory=lambda: {"DQ": {"Bug", "Task"}})
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)  # by key
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    webhooks: list[tuple[str, str]] = field(default_factory=list)  # (url, secret)
    sent: list[int] = field(default_factory=list)  # the webhooks' answers
    creates: int = 0  # POST /issue calls that made an issue
    crash_on_create: bool = False
    slow_create: float = 0.0  # seconds a new issue's answer waits, once it is made
    down: float = 2.0
    _failing: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _seq: int = 0
    graceful: float | None = 0.5  # (a restart cuts the answer it was holding)

    def app(self) -> Starlette:
        base = "/rest/api/3"
        return Starlette(
            routes=[
                Route(f"{base}/issue", self._create, methods=["POST"]),
                Route(f"{base}/search/jql", self._search, methods=["POST"]),
                Route(f"{base}/issue/{{key}}", self._get, methods=["GET"]),
                Route(f"{base}/issue/{{key}}/comment", self._comment, methods=["GET", "POST"]),
                Route(
                    f"{base}/issue/{{key}}/transitions", self._transition, methods=["GET", "POST"]
                ),
            ]
        )

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        self._failing.extend([(status, headers)] * times)

    def _refusal(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        if auth != f"Basic {expected}":
            return JSONResponse(
                {"errorMessages": ["Client must be authenticated to access this resource."]},
                status_code=401,
            )
        if self._failing:
            status, headers = self._failing.pop(0)
            return JSONResponse({"errorMessages": ["failing"]}, status_code=status, headers=headers)
        return None

    def _view(self, issue: dict[str, Any]) -> dict[str, Any]:
        status = issue["status"]
        return {
            "id": issue["id"],
            "key": issue["key"],
            "fields": {
                **issue["fields"],
                "status": {"name": status, "statusCategory": {"key": STATUSES[status]}},
            },
        }

    async def _create(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        f = (await request.json()).get("fields") or {}
        errors: dict[str, str] = {}
        project = (f.get("project") or {}).get("key")
        if project not in self.projects:
            errors["project"] = "valid project is required"
        elif (f.get("issuetype") or {}).get("name") not in self.projects[project]:
            errors["issuetype"] = "Specify a valid issue type"
        summary = f.get("summary")
        if not isinstance(summary, str) or not summary or len(summary) > 255 or "\n" in summary:
            errors["summary"] = "You must specify a summary of the issue (one line, 255 at most)."
        if "priority" in f and (f["priority"] or {}).get("name") not in PRIORITIES:
            errors["priority"] = "Specify a valid priority"
        if any(not isinstance(lb, str) or " " in lb for lb in f.get("labels", [])):
            errors["labels"] = "Labels cannot contain spaces"
        if "description" in f and (problem := adf_problem(f["description"])):
            errors["description"] = f"Operation value must be an Atlassian Document: {problem}"
        if errors:
            return JSONResponse({"errorMessages": [], "errors": errors}, status_code=400)
        self._seq += 1
        key = f"{project}-{self._seq}"
        self.issues[key] = {
            "id": str(10000 + self._seq),
            "key": key,
            "fields": f,
            "status": "To Do",
            "created": time.time(),
        }
        self.creates += 1
        if self.slow_create:
            await asyncio.sleep(self.slow_create)
        if self.crash_on_create:  # made, and gone before it answers
            self.crash_on_create = False
            asyncio.get_running_loop().create_task(self.restart(self.down))
            await asyncio.sleep(30)
        return JSONResponse(
            {
                "id": self.issues[key]["id"],
                "key": key,
                "self": f"{self.base}/rest/api/3/issue/{key}",
            },
            status_code=201,
        )

    async def _search(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = await request.json()
        m = _JQL.match(body.get("jql", ""))
        if m is None:
            return JSONResponse({"errorMessages": ["Error in the JQL Query"]}, status_code=400)
        project, label = m.groups()
        if project not in self.projects:
            return JSONResponse(
                {
                    "errorMessages": [
                        f"The value '{project}' does not exist for the field 'project'."
                    ]
                },
                status_code=400,
            )
        found = [
            self._view(i)
            for i in sorted(self.issues.values(), key=lambda i: -i["created"])
            if i["key"].startswith(project + "-") and label in i["fields"].get("labels", [])
        ]
        return JSONResponse({"issues": found[: body.get("maxResults", 50)], "isLast": True})

    async def _get(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        issue = self.issues.get(request.path_params["key"])
        if issue is None:
            return JSONResponse(
                {
                    "errorMessages": [
                        "Issue does not exist or you do not have permission to see it."
                    ]
                },
                status_code=404,
            )
        return JSONResponse(self._view(issue))

    async def _comment(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        key = request.path_params["key"]
        if key not in self.issues:
            return JSONResponse({"errorMessages": ["Issue does not exist"]}, status_code=404)
        comments = self.comments.setdefault(key, [])
        if request.method == "GET":
            newest = list(reversed(comments))[: int(request.query_params.get("maxResults", 50))]
            return JSONResponse({"comments": newest, "total": len(comments)})
        body = (await request.json()).get("body")
        if problem := adf_problem(body):
            return JSONResponse(
                {"errorMessages": [], "errors": {"comment": problem}}, status_code=400
            )
        comment = {"id": str(len(comments) + 1), "body": body, "created": time.time()}
        comments.append(comment)
        return JSONResponse(comment, status_code=201)

    async def _transition(self, request: Request) -> Response:
        if (refused := self._refusal(request)) is not None:
            return refused
        key = request.path_params["key"]
        if key not in self.issues:
            return JSONResponse({"errorMessages": ["Issue does not exist"]}, status_code=404)
        if request.method == "GET":
            return JSONResponse(
                {
                    "transitions": [
                        {
                            "id": i,
                            "name": n,
                            "to": {"name": n, "statusCategory": {"key": STATUSES[n]}},
                        }
                        for i, n in TRANSITIONS.items()
                        if n != self.issues[key]["status"]
                    ]
                }
            )
        wanted = ((await request.json()).get("transition") or {}).get("id")
        if wanted not in TRANSITIONS:
            return JSONResponse(
                {"errorMessages": ["Transition id is not valid for this issue."]}, status_code=400
            )
        await self.move(key, TRANSITIONS[wanted])
        return Response(status_code=204)

    async def move(self, key: str, status: str) -> None:
        """Moves a ticket (as a person would, in JIRA), and tells the webhooks."""
        issue = self.issues[key]
        before, issue["status"] = issue["status"], status
        payload = {
            "timestamp": int(time.time() * 1000),
            "webhookEvent": "jira:issue_updated",
            "issue_event_type_name": "issue_generic",
            "issue": self._view(issue),
            "changelog": {
                "id": str(uuid.uuid4().int)[:8],
                "items": [{"field": "status", "fromString": before, "toString": status}],
            },
        }
        body = json.dumps(payload).encode()
        async with httpx.AsyncClient(timeout=10) as client:
            for url, secret in self.webhooks:
                sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                answer = await client.post(
                    url,
                    content=body,
                    headers={
                        "content-type": "application/json",
                        "x-hub-signature": sig,
                        "x-atlassian-webhook-identifier": str(uuid.uuid4()),
                    },
                )
                self.sent.append(answer.status_code)
