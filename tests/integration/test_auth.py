"""Authentication: OAuth2 client credentials, Lily's tokens and every way a JWT can be bad,
API keys, revocation on every instance, and an Okta org's OIDC tokens (a local server that
serves Okta's discovery document and key set, with a key rotation)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import jwt
import pytest
import pytest_asyncio
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import lineage_pb2_grpc as lineage_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as P
from lily.v1 import policy_pb2_grpc as policy_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.server import Lily, start
from core.settings import Settings
from core.stack import free_port
from policy.tokens import Issuer
from tests.helpers import (
    Metadata,
    ago,
    asset,
    bearer,
    details,
    eventually,
    new_tenant,
    status_of,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


class FakeOkta:
    """An Okta org's custom authorization server as its API documents it: the issuer
    `<base>/oauth2/default`, its discovery document, and its keys at `/v1/keys`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/oauth2/default"
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.served: list[str] = []  # the kids /v1/keys serves
        self.key_fetches = 0
        app = Starlette(
            routes=[
                Route("/oauth2/default/.well-known/openid-configuration", self._discovery),
                Route("/oauth2/default/v1/keys", self._jwks),
            ]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )

    def new_key(self, serve: bool = True) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if serve:
            self.served.append(kid)
        return kid

    def token(self, kid: str, **claims: object) -> str:
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": "api://lily",
            "sub": "ann@acme.com",
            "cid": "0oa1okta",
            "groups": ["Data Viewers", "Everyone"],
            "iat": now,
            "exp": now + 600,
            "jti": "AT." + uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def _discovery(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/v1/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: Request) -> JSONResponse:
        self.key_fetches += 1
        keys = []
        for kid in self.served:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return JSONResponse({"keys": keys})

    async def __aenter__(self) -> FakeOkta:
        self._task = asyncio.create_task(self._server.serve())
        await eventually(lambda: _true(self._server.started), timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        await self._task


async def _true(value: bool) -> bool:
    return value


@pytest_asyncio.fixture(scope="module")
async def okta() -> AsyncIterator[FakeOkta]:
    async with FakeOkta() as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def second(
    stack: tuple[str, str], okta: FakeOkta, lily: Lily
) -> AsyncIterator[grpc.aio.Channel]:
    """A second server instance on the same Postgres and NATS, trusting the fake Okta (tenant
    `oktatenant`) and refusing restricted reads: its channel."""
    dsn, url = stack
    settings = Settings(
        grpc_port=0,
        shutdown_grace=1.0,
        worker_processes=0,
        workers=False,
        auth={
            "oidc": [{"issuer": okta.issuer, "audience": "api://lily", "tenant": "oktatenant"}],
            "jwks_refresh": 1.0,
            "restricted_read": "refuse",
        },
    )
    server = await start(settings, postgres_dsn=dsn, nats_url=url)
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch
    await server.stop()


def _policy(channel: grpc.aio.Channel) -> policy_grpc.PolicyServiceStub:
    return policy_grpc.PolicyServiceStub(channel)


async def _refused(call, code: grpc.StatusCode = UNAUTHENTICATED) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value
    info = details(status_of(err.value))["ErrorInfo"]
    assert info.reason == code.name
    return err.value.details() or ""


async def _client(channel, md: Metadata, *roles: str) -> tuple[str, str]:
    made = await _policy(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_CLIENT, roles=list(roles))
        ),
        metadata=md,
    )
    return made.credential.credential_id, made.secret


async def _token(channel, client_id: str, secret: str) -> str:
    got = await _policy(channel).IssueToken(
        P.IssueTokenRequest(
            grant_type="client_credentials", client_id=client_id, client_secret=secret
        )
    )
    assert got.token_type == "Bearer" and 60 <= got.expires_in <= 86400
    return got.access_token


async def test_client_credentials_buy_a_token_that_acts_with_the_clients_roles(
    channel, stub, md, tenant
):
    client_id, secret = await _client(channel, md, "viewer")
    token = await _token(channel, client_id, secret)
    who = await _policy(channel).ValidateToken(P.ValidateTokenRequest(), metadata=bearer(token))
    assert (who.principal.tenant_id, who.principal.roles) == (tenant, ["viewer"])
    assert who.principal.credential_id == client_id and who.principal.expires_at.seconds
    await stub.SearchMetadata(O.SearchMetadataRequest(), metadata=bearer(token))
    await _refused(
        stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://a/t")]), metadata=bearer(token)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    for bad in (
        P.IssueTokenRequest(
            grant_type="client_credentials", client_id=client_id, client_secret="x"
        ),
        P.IssueTokenRequest(
            grant_type="client_credentials", client_id="nobody", client_secret=secret
        ),
    ):
        await _refused(_policy(channel).IssueToken(bad))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _policy(channel).IssueToken(
            P.IssueTokenRequest(grant_type="password", client_id=client_id, client_secret=secret)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_every_kind_of_bad_jwt_is_refused(channel, stub, md, lily, tenant):
    client_id, secret = await _client(channel, md, "viewer")
    good = await _token(channel, client_id, secret)
    search = O.SearchMetadataRequest()
    await stub.SearchMetadata(search, metadata=bearer(good))
    issuer: Issuer = lily.policy.authn.issuer
    kid, pem = next(iter(issuer.keys.items()))
    public = serialization.load_pem_private_key(pem.encode(), None).public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(good, options={"verify_signature": False})
    head, _body, sig = good.split(".")
    forged_body = (
        base64.urlsafe_b64encode(json.dumps({**claims, "tid": "default"}).encode())
        .rstrip(b"=")
        .decode()
    )
    expired, _ = issuer.issue(
        subject=claims["sub"], tenant_id=tenant, client_id=client_id, ttl=60, now=time.time() - 3600
    )
    early, _ = issuer.issue(
        subject=claims["sub"], tenant_id=tenant, client_id=client_id, ttl=600, now=time.time() + 600
    )
    elsewhere, _ = replace(issuer, audience="another-api").issue(
        subject=claims["sub"], tenant_id=tenant, client_id=client_id, ttl=600
    )
    stranger, _ = replace(issuer, url="https://evil.example").issue(
        subject=claims["sub"], tenant_id=tenant, client_id=client_id, ttl=600
    )
    unsigned = jwt.encode(claims, None, algorithm="none")
    hs256 = _hs256(claims, public_pem, kid)  # "signed" with the public key as an HMAC secret
    cases = {
        "expired": (expired, "expired"),
        "not valid yet": (early, "not valid yet"),
        "another audience": (elsewhere, "audience"),
        "untrusted issuer": (stranger, "issuer"),
        "tampered": (f"{head}.{forged_body}.{sig}", "invalid"),
        "alg none": (unsigned, "algorithm"),
        "HS256 with the public key": (hs256, "algorithm"),
        "garbage": ("not.a.jwt", "malformed"),
    }
    for name, (token, why) in cases.items():
        message = await _refused(stub.SearchMetadata(search, metadata=bearer(token)))
        assert why in message, (name, message)
    # revoking the token stops it; the client's next token works until the client is revoked
    # RFC 7009: a token that is no valid token of ours is answered OK, and nothing changes
    for junk in ("not-a-jwt", good[:-4] + "AAAA"):
        await _policy(channel).RevokeToken(P.RevokeTokenRequest(token=junk), metadata=md)
    await stub.SearchMetadata(search, metadata=bearer(good))
    await _policy(channel).RevokeToken(P.RevokeTokenRequest(token=good), metadata=bearer(good))
    assert "revoked" in await _refused(stub.SearchMetadata(search, metadata=bearer(good)))
    again = await _token(channel, client_id, secret)
    await stub.SearchMetadata(search, metadata=bearer(again))
    await _policy(channel).RevokeToken(P.RevokeTokenRequest(credential_id=client_id), metadata=md)
    assert "revoked" in await _refused(stub.SearchMetadata(search, metadata=bearer(again)))
    await _refused(
        _policy(channel).IssueToken(
            P.IssueTokenRequest(
                grant_type="client_credentials", client_id=client_id, client_secret=secret
            )
        )
    )


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing}.{b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


async def test_api_keys_are_shown_once_kept_hashed_and_revocable(channel, stub, md, lily, stack):
    made = await _policy(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, roles=["editor"])
        ),
        metadata=md,
    )
    key, key_id = made.secret, made.credential.credential_id
    listed = await _policy(channel).ListCredentials(P.ListCredentialsRequest(), metadata=md)
    assert key_id in {c.credential_id for c in listed.credentials}
    assert key not in str(listed)  # never shown again
    import asyncpg

    conn = await asyncpg.connect(stack[0])
    try:
        row = await conn.fetchrow("SELECT * FROM credentials WHERE credential_id = $1", key_id)
    finally:
        await conn.close()
    secret = key.split("_", 2)[2]  # lily_<id>_<secret> (the secret may hold "_" itself)
    assert key not in str(dict(row)) and secret not in str(dict(row))
    search = O.SearchMetadataRequest()
    await stub.SearchMetadata(search, metadata=bearer(key))
    await _refused(stub.SearchMetadata(search, metadata=bearer(key[:-2] + "xx")))
    await _policy(channel).RevokeToken(P.RevokeTokenRequest(token=key), metadata=bearer(key))
    assert "revoked" in await _refused(stub.SearchMetadata(search, metadata=bearer(key)))


async def test_changes_on_one_instance_hold_on_the_other_within_a_second(
    channel, second, md, tenant
):
    other = _policy(second)
    me = P.CheckAccessRequest(object="policy", action="read")
    await eventually(lambda: _allowed(other, me, md), timeout=1.0)  # the new tenant, there too
    check = P.CheckAccessRequest(subject="carol", object="lineage", action="write")
    assert not (await other.CheckAccess(check, metadata=md)).allowed
    started = time.perf_counter()
    await _policy(channel).AddRoles(
        P.AddRolesRequest(roles=[P.RoleAssignment(subject="carol", role="editor")]), metadata=md
    )

    await eventually(lambda: _allowed(other, check, md), timeout=1.0, interval=0.01)
    took = time.perf_counter() - started
    assert took < 1.0
    # a key revoked on one instance stops working on the other
    made = await _policy(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, roles=["viewer"])
        ),
        metadata=md,
    )
    search = O.SearchMetadataRequest()

    async def served() -> bool:  # its role reaches the other instance within moments
        try:
            await metadata_grpc.MetadataServiceStub(second).SearchMetadata(
                search, metadata=bearer(made.secret)
            )
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            return False
        return True

    await eventually(served, timeout=1.0, interval=0.01)
    await _policy(channel).RevokeToken(
        P.RevokeTokenRequest(credential_id=made.credential.credential_id), metadata=md
    )

    async def refused() -> bool:
        try:
            await metadata_grpc.MetadataServiceStub(second).SearchMetadata(
                search, metadata=bearer(made.secret)
            )
        except grpc.aio.AioRpcError as err:
            return err.code() == UNAUTHENTICATED
        return False

    await eventually(refused, timeout=1.0, interval=0.01)


async def test_refuse_mode_hides_restricted_assets_everywhere_from_who_may_not_read_them(
    channel, second, md
):
    """On the instance configured with restricted_read=refuse: GetMetadata is refused,
    searches and lineage walks leave the asset (and its edges) out; pii_reader sees it all."""
    here, there = (
        metadata_grpc.MetadataServiceStub(channel),
        metadata_grpc.MetadataServiceStub(second),
    )
    made = await here.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset("r/raw"),
                asset("r/users", tags=[common_pb.TagAssignment(name="PII")]),
                asset("r/report"),
            ]
        ),
        metadata=md,
    )
    raw, users, report = (r.asset_id for r in made.results)
    # (PII on a leaf: it would propagate to anything downstream of it)
    edge = [("r/raw", "r/users"), ("r/raw", "r/report")]
    await lineage_grpc.LineageServiceStub(channel).IngestRelationships(
        L.IngestRelationshipsRequest(
            relationships=[
                L.RelationshipInput(
                    upstream=L.AssetRef(qualified_name=u),
                    downstream=L.AssetRef(qualified_name=d),
                    source_event_time=ago(5),
                )
                for u, d in edge
            ]
        ),
        metadata=md,
    )
    keys = []
    for roles in (["viewer"], ["viewer", "pii_reader"]):
        made = await _policy(channel).CreateCredential(
            P.CreateCredentialRequest(
                credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, roles=roles)
            ),
            metadata=md,
        )
        keys.append(bearer(made.secret))
    viewer, reader = keys
    walk = L.GetLineageRequest(asset_id=raw, depth=3)
    lineage = lineage_grpc.LineageServiceStub(second)

    async def walked(who: Metadata) -> L.GetLineageResponse | None:
        try:
            return await lineage.GetLineage(walk, metadata=who)
        except grpc.aio.AioRpcError as err:  # until the new key's roles reach that instance
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            return None

    full = await eventually(lambda: walked(reader), timeout=2)  # (roles reach it in moments)
    assert {n.asset_id for n in full.nodes} == {raw, users, report}
    seen = await eventually(lambda: walked(viewer), timeout=2)
    assert {n.asset_id for n in seen.nodes} == {raw, report}
    assert [(r.upstream_asset_id, r.downstream_asset_id) for r in seen.relationships] == [
        (raw, report)
    ]
    for call in (
        there.GetMetadata(O.GetMetadataRequest(asset_id=users), metadata=viewer),
        lineage.GetLineage(L.GetLineageRequest(asset_id=users), metadata=viewer),
    ):
        assert (await _refused(call, grpc.StatusCode.PERMISSION_DENIED)).startswith("asset")
    found = await there.SearchMetadata(
        O.SearchMetadataRequest(qualified_name_prefix="r/"), metadata=viewer
    )
    assert {a.asset_id for a in found.assets} == {raw, report}
    got = await there.GetMetadata(O.GetMetadataRequest(asset_id=users), metadata=reader)
    assert got.asset.qualified_name == "r/users"


async def test_rotating_the_signing_key_keeps_earlier_tokens_valid_on_every_instance(
    channel, second, md, admin_md
):
    client_id, secret = await _client(channel, md, "viewer")
    before = await _token(channel, client_id, secret)
    old_kid = jwt.get_unverified_header(before)["kid"]
    rotated = await _policy(channel).RotateSigningKey(
        P.RotateSigningKeyRequest(), metadata=admin_md
    )
    assert rotated.kid != old_kid and rotated.keys[-1].kid == rotated.kid
    assert not rotated.keys[-1].HasField("retires_at")
    retiring = {k.kid: k.retires_at.ToSeconds() for k in rotated.keys[:-1]}
    assert old_kid in retiring
    assert retiring[old_kid] >= time.time() + 900  # the token lifetime (and leeway) to go
    after = await _token(channel, client_id, secret)
    assert jwt.get_unverified_header(after)["kid"] == rotated.kid
    jwks = await _policy(second).GetJwks(P.GetJwksRequest())
    assert {old_kid, rotated.kid} <= {k.kid for k in jwks.keys}

    async def valid(where, token: str) -> bool:
        who = await _policy(where).ValidateToken(P.ValidateTokenRequest(), metadata=bearer(token))
        return who.principal.credential_id == client_id

    for where in (channel, second):
        for token in (before, after):
            assert await eventually(lambda w=where, t=token: valid(w, t), timeout=1.0)
    # the other instance signs with the new key too
    signed_there = await _token(second, client_id, secret)
    assert jwt.get_unverified_header(signed_there)["kid"] == rotated.kid
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a tenant's admin is no platform admin
        await _policy(channel).RotateSigningKey(P.RotateSigningKeyRequest(), metadata=md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _allowed(stub, check: P.CheckAccessRequest, md: Metadata) -> bool:
    return (await stub.CheckAccess(check, metadata=md)).allowed


async def test_okta_tokens_are_verified_against_the_orgs_keys_and_rotation_needs_no_restart(
    okta, second, channel, admin_md
):
    okta_admin = await new_tenant(channel, admin_md, "oktatenant")
    first = okta.new_key()
    stub = metadata_grpc.MetadataServiceStub(second)
    search = O.SearchMetadataRequest()
    token = okta.token(first)
    # a group is no role until the tenant's admins map it to one
    await _refused(stub.SearchMetadata(search, metadata=bearer(token)), PERMISSION_DENIED)
    await _policy(channel).SetGroupRoles(
        P.SetGroupRolesRequest(mapping=P.GroupRoles(group="Data Viewers", roles=["viewer"])),
        metadata=okta_admin,
    )

    async def allowed() -> O.SearchMetadataResponse:
        try:
            return await stub.SearchMetadata(search, metadata=bearer(token))
        except grpc.aio.AioRpcError as err:
            raise AssertionError(err) from err

    await eventually(allowed)  # on the second instance once the change feed says so
    who = await _policy(second).ValidateToken(P.ValidateTokenRequest(), metadata=bearer(token))
    assert (who.principal.subject, who.principal.tenant_id) == ("ann@acme.com", "oktatenant")
    assert who.principal.issuer == okta.issuer and who.principal.roles == ["viewer"]
    assert list(who.principal.groups) == ["Data Viewers", "Everyone"]
    await _refused(
        stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://okta/t")]), metadata=bearer(token)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    for bad, why in (
        (okta.token(first, aud="api://other"), "audience"),
        (okta.token(first, exp=int(time.time()) - 600), "expired"),
        (okta.token(first, iss=okta.issuer + "x"), "issuer"),
    ):
        assert why in await _refused(stub.SearchMetadata(search, metadata=bearer(bad)))
    # the org rotates: a token signed by a key it does not publish yet is refused ...
    rotated = okta.new_key(serve=False)
    assert "does not publish" in await _refused(
        stub.SearchMetadata(search, metadata=bearer(okta.token(rotated)))
    )
    # ... and accepted once it does (fetched again on an unknown kid, at most every second)
    okta.served.append(rotated)
    await asyncio.sleep(1.1)
    await stub.SearchMetadata(search, metadata=bearer(okta.token(rotated)))
    # the Lily admin's own tenant is not Okta's
    await _refused(
        stub.SearchMetadata(search, metadata=(*bearer(token), ("x-lily-tenant", "default"))),
        grpc.StatusCode.PERMISSION_DENIED,
    )
