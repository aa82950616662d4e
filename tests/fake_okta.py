"""A local stand-in for an Okta org, as Okta documents it (developer.okta.com):

- Its custom authorization server `/oauth2/default`: the discovery document, its keys
  (`/v1/keys`), the Device Authorization endpoint (`/v1/device/authorize`: client_id and
  scope, openid required), the token endpoint (`/v1/token`: the device code grant answers
  400 authorization_pending until the person approves, slow_down when asked faster than the
  interval, access_denied, expired_token, invalid_grant; the refresh token grant rotates the
  refresh token, invalid_grant once revoked or the person is no longer active) and
  revocation (`/v1/revoke`). ID tokens carry sub (the user id), preferred_username (login),
  email and groups; access tokens aud api://lily, sub (login), uid and groups.
- The management API with `Authorization: SSWS <token>` (401 E0000011 otherwise):
  GET /api/v1/users (DEPROVISIONED users only with `search=status eq "DEPROVISIONED"`),
  /api/v1/groups and /api/v1/groups/{id}/users, paged with `limit` and `after` and a
  `Link: <...>; rel="next"` header; every answer has X-Rate-Limit-Limit, -Remaining and
  -Reset, and fail(429) answers E0000047 with Remaining 0.
- Event hooks as Okta sends them: verify() (the one-time GET with
  X-Okta-Verification-Challenge) and deliver() (a POST of events), with the hook's
  authentication secret in Authorization.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.doubles import Served

AS = "/oauth2/default"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_DEPROVISIONED = re.compile(r'^status eq "DEPROVISIONED"$')


def _oauth_error(error: str, description: str = "", status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _api_error(status: int, code: str, summary: str) -> JSONResponse:
    return JSONResponse(
        {
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": "oae" + uuid.uuid4().hex[:20],
            "errorCauses": [],
        },
        status_code=status,
    )


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (what OAuth2 clients send)."""
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return {}
    return {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Device:
    user_code: str
    client_id: str
    scope: str
    expires: float
    user_id: str = ""  # who approved
    denied: bool = False
    polled: float = 0.0


@dataclass
class FakeOkta(Served):
    api_token: str = "00Okta-api-token"
    client_id: str = "0oaLilyCli"
    interval: int = 1
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)  # group id -> user ids
    devices: dict[str, Device] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user id
    revoked: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # management API calls
    tenant: str = ""  # an ID token's lily_tenant claim, if given
    _failing: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def issuer(self) -> str:
        return self.base + AS

    # -- the org, as a test sets it up

    def add_group(self, name: str) -> str:
        gid = "00g" + uuid.uuid4().hex[:17]
        self.groups[gid] = {
            "id": gid,
            "created": _iso(time.time()),
            "lastUpdated": _iso(time.time()),
            "lastMembershipUpdated": _iso(time.time()),
            "objectClass": ["okta:user_group"],
            "type": "OKTA_GROUP",
            "profile": {"name": name, "description": ""},
            "_links": {},
        }
        self.members[gid] = []
        return gid

    def group_id(self, name: str) -> str:
        return next(g for g, v in self.groups.items() if v["profile"]["name"] == name)

    def add_user(self, login: str, *groups: str, status: str = "ACTIVE") -> str:
        uid = "00u" + uuid.uuid4().hex[:17]
        now = _iso(time.time())
        self.users[uid] = {
            "id": uid,
            "status": status,
            "created": now,
            "activated": now,
            "statusChanged": now,
            "lastLogin": None,
            "lastUpdated": now,
            "passwordChanged": None,
            "type": {"id": "oty1"},
            "profile": {
                "firstName": login.split("@")[0].title(),
                "lastName": "Example",
                "login": login,
                "email": login,
            },
            "credentials": {},
            "_links": {},
        }
        for name in groups:
            self.members[self.group_id(name)].append(uid)
        return uid

    def join(self, uid: str, group: str) -> dict[str, Any]:
        """`uid` joins `group` in the org: the event Okta's hooks deliver for it."""
        self.members[self.group_id(group)].append(uid)
        return self.event("group.user_membership.add", uid, group)

    def leave(self, uid: str, group: str) -> dict[str, Any]:
        self.members[self.group_id(group)].remove(uid)
        return self.event("group.user_membership.remove", uid, group)

    def lifecycle(self, uid: str, what: str) -> dict[str, Any]:
        """deactivate, reactivate, suspend or unsuspend `uid`: the event for it."""
        status = {"deactivate": "DEPROVISIONED", "suspend": "SUSPENDED"}.get(what, "ACTIVE")
        self.users[uid]["status"] = status
        return self.event(f"user.lifecycle.{what}", uid)

    def groups_of(self, uid: str) -> list[str]:
        return [self.groups[g]["profile"]["name"] for g, ids in self.members.items() if uid in ids]

    def fail(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        """The next `times` management API calls are answered `status`."""
        self._failing += [(status, headers or {})] * times

    # -- tokens

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}

    def _sign(self, claims: dict[str, Any]) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "iat": now, "exp": now + 3600, **claims}
        return jwt.encode(body, self._key, algorithm="RS256", headers={"kid": "k1"})

    def id_token(self, uid: str, **claims: Any) -> str:
        user = self.users[uid]
        tenant = {"lily_tenant": self.tenant} if self.tenant else {}
        return self._sign(
            {
                "aud": self.client_id,
                "sub": uid,
                "preferred_username": user["profile"]["login"],
                "email": user["profile"]["email"],
                "groups": self.groups_of(uid),
                **tenant,
                **claims,
            }
        )

    def access_token(self, uid: str, **claims: Any) -> str:
        user = self.users[uid]
        return self._sign(
            {
                "aud": "api://lily",
                "sub": user["profile"]["login"],
                "uid": uid,
                "cid": self.client_id,
                "groups": self.groups_of(uid),
                "jti": "AT." + uuid.uuid4().hex,
                **claims,
            }
        )

    def approve(self, user_code: str, uid: str) -> None:
        next(d for d in self.devices.values() if d.user_code == user_code).user_id = uid

    def deny(self, user_code: str) -> None:
        next(d for d in self.devices.values() if d.user_code == user_code).denied = True

    # -- event hooks, as Okta sends them

    def event(self, event_type: str, uid: str, group: str = "") -> dict[str, Any]:
        user = self.users[uid]
        target = [
            {
                "id": uid,
                "type": "User",
                "alternateId": user["profile"]["login"],
                "displayName": user["profile"]["firstName"],
            }
        ]
        if group:
            target.append(
                {
                    "id": self.group_id(group),
                    "type": "UserGroup",
                    "alternateId": "unknown",
                    "displayName": group,
                }
            )
        return {
            "uuid": str(uuid.uuid4()),
            "published": _iso(time.time()),
            "eventType": event_type,
            "version": "0",
            "displayMessage": event_type,
            "severity": "INFO",
            "actor": {"id": "00uAdmin", "type": "User", "alternateId": "admin@acme.com"},
            "target": target,
            "outcome": {"result": "SUCCESS"},
        }

    def hook_body(self, *events: dict[str, Any]) -> dict[str, Any]:
        return {
            "eventType": "com.okta.event_hook",
            "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1",
            "source": f"{self.base}/api/v1/eventHooks/who8example",
            "eventId": str(uuid.uuid4()),
            "data": {"events": list(events)},
            "eventTime": _iso(time.time()),
            "contentType": "application/json",
        }

    async def verify(self, url: str, secret: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(
                url,
                headers={
                    "X-Okta-Verification-Challenge": secrets.token_urlsafe(24),
                    "Authorization": secret,
                },
            )

    async def deliver(self, url: str, secret: str, *events: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                url,
                content=json.dumps(self.hook_body(*events)),
                headers={"Content-Type": "application/json", "Authorization": secret},
            )

    # -- the server

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"{AS}/.well-known/openid-configuration", self._discovery),
                Route(f"{AS}/v1/keys", self._keys),
                Route(f"{AS}/v1/device/authorize", self._device, methods=["POST"]),
                Route(f"{AS}/v1/token", self._token, methods=["POST"]),
                Route(f"{AS}/v1/revoke", self._revoke, methods=["POST"]),
                Route("/api/v1/users", self._users),
                Route("/api/v1/groups", self._groups),
                Route("/api/v1/groups/{gid}/users", self._group_users),
            ]
        )

    async def _discovery(self, request: Request) -> JSONResponse:
        i = self.issuer
        return JSONResponse(
            {
                "issuer": i,
                "jwks_uri": f"{i}/v1/keys",
                "token_endpoint": f"{i}/v1/token",
                "device_authorization_endpoint": f"{i}/v1/device/authorize",
                "revocation_endpoint": f"{i}/v1/revoke",
                "grant_types_supported": ["refresh_token", DEVICE_GRANT],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _keys(self, request: Request) -> JSONResponse:
        return JSONResponse(self.jwks())

    async def _device(self, request: Request) -> JSONResponse:
        form = await _form(request)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", "Invalid value for 'client_id' parameter.", 401)
        scope = str(form.get("scope", ""))
        if "openid" not in scope.split():
            return _oauth_error("invalid_scope", "The authorization request must include openid.")
        code = secrets.token_urlsafe(24)
        user_code = f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}"
        self.devices[code] = Device(user_code, self.client_id, scope, time.time() + 600)
        return JSONResponse(
            {
                "device_code": code,
                "user_code": user_code,
                "verification_uri": f"{self.base}/activate",
                "verification_uri_complete": f"{self.base}/activate?user_code={user_code}",
                "expires_in": 600,
                "interval": self.interval,
            }
        )

    def _tokens(self, uid: str, scope: str) -> JSONResponse:
        refresh = secrets.token_urlsafe(32)
        self.refresh_tokens[refresh] = uid
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": 3600,
                "access_token": self.access_token(uid),
                "scope": scope,
                "refresh_token": refresh,
                "id_token": self.id_token(uid),
            }
        )

    async def _token(self, request: Request) -> JSONResponse:
        form = await _form(request)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", "Invalid value for 'client_id' parameter.", 401)
        grant = form.get("grant_type")
        if grant == DEVICE_GRANT:
            device = self.devices.get(str(form.get("device_code", "")))
            if device is None:
                return _oauth_error("invalid_grant", "The device code is invalid.")
            now = time.time()
            if now > device.expires:
                return _oauth_error("expired_token", "The device code has expired.")
            if device.denied:
                return _oauth_error("access_denied", "The resource owner denied the request.")
            too_soon = now - device.polled < self.interval * 0.8
            device.polled = now
            if not device.user_id:
                if too_soon:
                    return _oauth_error("slow_down", "Polling too quickly.")
                return _oauth_error("authorization_pending", "Awaiting the user's approval.")
            del self.devices[str(form["device_code"])]
            return self._tokens(device.user_id, device.scope)
        if grant == "refresh_token":
            uid = self.refresh_tokens.pop(str(form.get("refresh_token", "")), "")
            if not uid or self.users[uid]["status"] != "ACTIVE":
                return _oauth_error("invalid_grant", "The refresh token is invalid or expired.")
            return self._tokens(uid, str(form.get("scope", "")))
        return _oauth_error("unsupported_grant_type", f"{grant!r} is not supported.")

    async def _revoke(self, request: Request) -> Response:
        form = await _form(request)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", "Invalid value for 'client_id' parameter.", 401)
        token = str(form.get("token", ""))
        self.refresh_tokens.pop(token, None)
        self.revoked.append(token)
        return Response(status_code=200)

    # -- the management API

    def _refused(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"SSWS {self.api_token}":
            return _api_error(401, "E0000011", "Invalid token provided")
        if self._failing:
            status, headers = self._failing.pop(0)
            if status == 429:
                answer = _api_error(
                    429, "E0000047", "API call exceeded rate limit due to too many requests."
                )
                answer.headers.update(self._limits(remaining=0))
            else:
                answer = _api_error(status, "E0000009", "Internal Server Error")
            answer.headers.update(headers)
            return answer
        return None

    @staticmethod
    def _limits(remaining: int = 599) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": "600",
            "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(int(time.time()) + 1),
        }

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        try:
            limit = min(int(request.query_params.get("limit", "200")), 200)
        except ValueError:
            return _api_error(400, "E0000001", "Api validation failed: limit")
        after = request.query_params.get("after", "")
        ordered = sorted(items, key=lambda i: i["id"])
        start = next((n for n, i in enumerate(ordered) if i["id"] > after), len(ordered))
        page = ordered[start : start + limit] if after else ordered[:limit]
        headers = self._limits()
        links = [f'<{request.url}>; rel="self"']
        if page and ordered.index(page[-1]) + 1 < len(ordered):
            query = {k: v for k, v in request.query_params.items() if k != "after"}
            nxt = f"{self.base}{request.url.path}?{urlencode({**query, 'after': page[-1]['id']})}"
            links.append(f'<{nxt}>; rel="next"')
        answer = JSONResponse(page, headers=headers)
        for link in links:
            answer.headers.append("Link", link)
        return answer

    async def _users(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        search = request.query_params.get("search", "")
        if search and not _DEPROVISIONED.match(search):
            return _api_error(400, "E0000031", "Invalid search.")
        gone = bool(search)
        users = [u for u in self.users.values() if (u["status"] == "DEPROVISIONED") == gone]
        return self._page(request, users)

    async def _groups(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return self._page(request, list(self.groups.values()))

    async def _group_users(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        gid = request.path_params["gid"]
        if gid not in self.groups:
            return _api_error(404, "E0000007", f"Not found: Resource not found: {gid} (UserGroup)")
        return self._page(request, [self.users[u] for u in self.members[gid]])
