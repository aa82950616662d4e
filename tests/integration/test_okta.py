"""Okta as the identity source, against a local stand-in for an Okta org (tests/fake_okta.py:
its authorization server with the device and token endpoints, its Management API with SSWS
auth, Link paging, rate-limit headers and 429, and event hooks as Okta sends them).

Two Lily instances share Postgres and NATS: the session's (which the adapter runtime, and so
the hooks, reach) and `second`, which trusts the fake org's issuer for tenant TENANT and signs
people in with it. What a hook makes the first instance write, the second must hold to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as P
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.server import Lily, start
from core.settings import Settings
from tests.fake_okta import FakeOkta
from tests.helpers import Metadata, asset, bearer, details, eventually, new_tenant, status_of

pytestmark = pytest.mark.usefixtures("inbound")

TENANT = "okta-" + uuid.uuid4().hex[:8]
ENGINEERS = "Data Engineers"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest_asyncio.fixture(scope="module")
async def okta() -> AsyncIterator[FakeOkta]:
    async with FakeOkta() as fake:
        fake.add_group(ENGINEERS)
        fake.add_group("Everyone")
        yield fake


@pytest_asyncio.fixture(scope="module")
async def okta_admin(channel: grpc.aio.Channel, admin_md: Metadata) -> Metadata:
    """The admin of TENANT, whose Data Engineers are editors."""
    md = await new_tenant(channel, admin_md, TENANT)
    await policy_grpc.PolicyServiceStub(channel).SetGroupRoles(
        P.SetGroupRolesRequest(mapping=P.GroupRoles(group=ENGINEERS, roles=["editor"])),
        metadata=md,
    )
    return md


@pytest_asyncio.fixture(scope="module")
async def second_lily(
    stack: tuple[str, str], okta: FakeOkta, lily: Lily, okta_admin: Metadata
) -> AsyncIterator[Lily]:
    """Another Lily instance on the same Postgres and NATS, signing TENANT's people in with the
    fake org (and accepting its access tokens)."""
    dsn, url = stack
    oidc = {
        "issuer": okta.issuer,
        "audience": "api://lily",
        "tenant": TENANT,
        "client_id": okta.client_id,
    }
    settings = Settings(
        grpc_port=0,
        shutdown_grace=1.0,
        worker_processes=0,
        workers=False,
        auth={"oidc": [oidc], "jwks_refresh": 1.0, "token_ttl": 120},
        secret_key=lily.settings.secret_key,  # (every instance seals with the same key)
    )
    server = await start(settings, postgres_dsn=dsn, nats_url=url)
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def second(second_lily: Lily) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(second_lily.address) as ch:
        yield ch


@pytest_asyncio.fixture(scope="module")
async def hook(
    channel: grpc.aio.Channel, okta_admin: Metadata, okta: FakeOkta, inbound: str
) -> tuple[str, str]:
    """TENANT's Okta integration (no API token: hooks only): its hook URL and secret."""
    made = await _integration(channel, okta_admin, okta)
    return inbound + made.integration.webhook_path, made.webhook_secret


async def _integration(
    channel: grpc.aio.Channel, md: Metadata, okta: FakeOkta, **settings: Any
) -> I.CreateIntegrationResponse:
    integration = I.Integration(type="okta", display_name="okta")
    integration.settings.update({"org_url": okta.base, **settings})
    if settings:
        integration.secrets.update({"api_token": okta.api_token})
    return await integration_grpc.IntegrationServiceStub(channel).CreateIntegration(
        I.CreateIntegrationRequest(integration=integration), metadata=md, timeout=10
    )


def _policy(ch: grpc.aio.Channel) -> policy_grpc.PolicyServiceStub:
    return policy_grpc.PolicyServiceStub(ch)


async def _refused(call: Awaitable[Any], code: grpc.StatusCode = UNAUTHENTICATED) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value
    return err.value.details() or ""


async def _sign_in(ch: grpc.aio.Channel, okta: FakeOkta, uid: str) -> P.Session:
    """The device grant, as `lily login` runs it: start, poll, the person approves, poll."""
    policy = _policy(ch)
    started = await policy.StartLogin(P.StartLoginRequest(tenant_id=TENANT))
    assert started.user_code and started.verification_uri.startswith(okta.base)
    assert started.interval == okta.interval and started.expires_in == 600
    complete = P.CompleteLoginRequest(tenant_id=TENANT, device_code=started.device_code)
    waiting = await policy.CompleteLogin(complete)
    assert waiting.pending and not waiting.HasField("session")
    okta.approve(started.user_code, uid)
    await asyncio.sleep(okta.interval)
    done = await policy.CompleteLogin(complete)
    assert not done.pending and done.session.access_token
    return done.session


async def _can(call: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await call()
    except grpc.aio.AioRpcError as err:
        if err.code() in (UNAUTHENTICATED, PERMISSION_DENIED):
            return False
        raise
    return True


def _write(ch: grpc.aio.Channel, md: Metadata) -> Callable[[], Awaitable[Any]]:
    stub = metadata_grpc.MetadataServiceStub(ch)
    name = f"pg://okta/{uuid.uuid4().hex[:8]}"
    return lambda: stub.IngestMetadata(O.IngestMetadataRequest(assets=[asset(name)]), metadata=md)


def _read(ch: grpc.aio.Channel, md: Metadata) -> Callable[[], Awaitable[Any]]:
    stub = metadata_grpc.MetadataServiceStub(ch)
    return lambda: stub.SearchMetadata(O.SearchMetadataRequest(), metadata=md)


async def _becomes(call: Callable[[], Awaitable[Any]], allowed: bool) -> None:
    async def check() -> bool:
        assert await _can(call) == allowed
        return True

    await eventually(check, timeout=5)


async def _person(channel: grpc.aio.Channel, md: Metadata, uid: str) -> P.Person:
    listed = await _policy(channel).ListPeople(P.ListPeopleRequest(page_size=1000), metadata=md)
    found = [p for p in listed.people if p.user_id == uid]
    assert found, f"{uid} is not in the directory"
    return found[0]


# -- signing in


async def test_people_sign_in_with_the_device_grant_and_their_groups_are_their_roles(
    second, channel, okta, okta_admin
):
    ann = okta.add_user(f"ann-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS, "Everyone")
    login = okta.users[ann]["profile"]["login"]
    session = await _sign_in(second, okta, ann)
    who = session.principal
    assert (who.subject, who.tenant_id, who.session_id) == (login, TENANT, session.session_id)
    assert who.roles == ["editor"] and sorted(who.groups) == [ENGINEERS, "Everyone"]
    md = bearer(session.access_token)
    # a Lily token: good on every instance, with the roles of the person's groups
    for ch in (second, channel):
        assert await _can(_write(ch, md))
        valid = await _policy(ch).ValidateToken(P.ValidateTokenRequest(), metadata=md)
        assert valid.principal.roles == ["editor"] and valid.principal.session_id
    person = await _person(channel, okta_admin, ann)
    assert (person.login, person.status, person.source) == (
        login,
        P.PERSON_STATUS_ACTIVE,
        "login",
    )

    # a refresh spends the refresh token; the provider is asked again
    refreshed = (
        await _policy(second).RefreshSession(
            P.RefreshSessionRequest(refresh_token=session.refresh_token)
        )
    ).session
    assert refreshed.session_id == session.session_id
    assert refreshed.refresh_token != session.refresh_token
    assert await _can(_write(channel, bearer(refreshed.access_token)))
    # the spent one, used again, ends the session: whoever holds it is not its owner
    assert "spent" in await _refused(
        _policy(second).RefreshSession(P.RefreshSessionRequest(refresh_token=session.refresh_token))
    )
    await _refused(
        _policy(channel).RefreshSession(
            P.RefreshSessionRequest(refresh_token=refreshed.refresh_token)
        )
    )
    await _becomes(_read(second, bearer(refreshed.access_token)), False)


async def test_logout_ends_the_session_everywhere_and_revokes_oktas_refresh_token(
    second, channel, okta
):
    bob = okta.add_user(f"bob-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    session = await _sign_in(second, okta, bob)
    upstream = {t for t, u in okta.refresh_tokens.items() if u == bob}
    assert len(upstream) == 1
    md = bearer(session.access_token)
    assert await _can(_read(channel, md))
    await _policy(second).Logout(P.LogoutRequest(refresh_token=session.refresh_token))
    for ch in (channel, second):
        assert "session has ended" in await _refused(_read(ch, md)())
    assert "ended" in await _refused(
        _policy(second).RefreshSession(P.RefreshSessionRequest(refresh_token=session.refresh_token))
    )
    assert upstream <= set(okta.revoked) and not upstream & set(okta.refresh_tokens)


async def test_a_sign_in_refused_or_impossible_says_why(second, channel, okta):
    policy = _policy(second)
    started = await policy.StartLogin(P.StartLoginRequest(tenant_id=TENANT))
    okta.deny(started.user_code)
    await _refused(
        policy.CompleteLogin(
            P.CompleteLoginRequest(tenant_id=TENANT, device_code=started.device_code)
        ),
        PERMISSION_DENIED,
    )
    for tenant, code in (
        ("no-such-tenant", grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        await _refused(policy.StartLogin(P.StartLoginRequest(tenant_id=tenant)), code)
    # the session's instance trusts no provider to sign people in with
    await _refused(
        _policy(channel).StartLogin(P.StartLoginRequest(tenant_id=TENANT)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await _refused(
        policy.RefreshSession(P.RefreshSessionRequest(refresh_token="lrt_nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await _refused(
        policy.RefreshSession(P.RefreshSessionRequest(refresh_token="lrt_" + "0" * 32 + ".x")),
    )


async def test_the_gateway_signs_in_api_only_clients(second_lily, okta):
    from api_gateway.app import GatewaySettings
    from api_gateway.server import serve

    carl = okta.add_user(f"carl-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    gateway = await serve(GatewaySettings(target=second_lily.address), "127.0.0.1", 0, {})
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway.port}", timeout=10
        ) as http:
            started = (await http.post("/api/v1/auth/login", json={"tenantId": TENANT})).json()
            form = {"tenantId": TENANT, "deviceCode": started["deviceCode"]}
            waiting = await http.post("/api/v1/auth/login:complete", json=form)
            assert waiting.status_code == 200 and waiting.json()["pending"] is True
            okta.approve(started["userCode"], carl)
            await asyncio.sleep(okta.interval)
            done = await http.post("/api/v1/auth/login:complete", json=form)
            session = done.json()["session"]
            auth = {"authorization": f"Bearer {session['accessToken']}"}
            valid = await http.get("/api/v1/auth/validate", headers=auth)
            assert valid.json()["principal"]["roles"] == ["editor"]
            out = await http.post(
                "/api/v1/auth/logout", json={"refreshToken": session["refreshToken"]}
            )
            assert out.status_code == 200
            assert (await http.get("/api/v1/auth/validate", headers=auth)).status_code == 401
            bad = await http.post("/api/v1/auth/login", json={"tenantId": "Bad Tenant!"})
            assert bad.status_code == 404
    finally:
        await gateway.stop()


# -- groups to roles


async def test_group_roles_are_the_tenants_casbin_lines_managed_by_its_admins(channel, okta_admin):
    policy = _policy(channel)
    listed = await policy.ListGroupRoles(P.ListGroupRolesRequest(), metadata=okta_admin)
    assert [(g.group, list(g.roles)) for g in listed.groups] == [(ENGINEERS, ["editor"])]
    exported = await policy.ExportPolicies(P.ExportPoliciesRequest(), metadata=okta_admin)
    assert f"g, group:{ENGINEERS}, editor, {TENANT}" in exported.policy_text.splitlines()

    for mapping, field in (
        (P.GroupRoles(group="Auditors", roles=["no_such_role"]), "mapping.roles[0]"),
        (P.GroupRoles(group="a,b", roles=["viewer"]), "mapping.group"),
        (P.GroupRoles(group="", roles=["viewer"]), "mapping.group"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await policy.SetGroupRoles(P.SetGroupRolesRequest(mapping=mapping), metadata=okta_admin)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = details(status_of(err.value))["BadRequest"].field_violations
        assert [v.field for v in violations] == [field]

    await policy.SetGroupRoles(
        P.SetGroupRolesRequest(mapping=P.GroupRoles(group="Auditors", roles=["viewer", "steward"])),
        metadata=okta_admin,
    )
    # an import carries them as any role line; an empty mapping removes one
    text = (await policy.ExportPolicies(P.ExportPoliciesRequest(), metadata=okta_admin)).policy_text
    assert f"g, group:Auditors, steward, {TENANT}" in text
    await policy.ImportPolicies(P.ImportPoliciesRequest(policy_text=text), metadata=okta_admin)
    await policy.SetGroupRoles(
        P.SetGroupRolesRequest(mapping=P.GroupRoles(group="Auditors")), metadata=okta_admin
    )
    listed = await policy.ListGroupRoles(P.ListGroupRolesRequest(), metadata=okta_admin)
    assert [g.group for g in listed.groups] == [ENGINEERS]


# -- event hooks


async def test_okta_verifies_the_hook_and_a_wrong_secret_changes_nothing(
    hook, okta, second, channel, okta_admin
):
    url, secret = hook
    answer = await okta.verify(url, secret)
    assert answer.status_code == 200
    assert answer.json() == {
        "verification": answer.request.headers["x-okta-verification-challenge"]
    }
    assert (await okta.verify(url, "wrong")).status_code == 401

    dana = okta.add_user(f"dana-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    session = await _sign_in(second, okta, dana)
    md = bearer(session.access_token)
    for bad in ("wrong", "", secret + "x"):
        refused = await okta.deliver(url, bad, okta.event("user.lifecycle.deactivate", dana))
        assert refused.status_code == 401
    bogus = await okta.deliver(url, secret, {"not": "an event"})
    assert bogus.status_code == 200  # shaped as Okta's: kept, and ignored when mapped
    async with httpx.AsyncClient(timeout=10) as http:
        malformed = await http.post(url, content=b"{}", headers={"authorization": secret})
    assert malformed.status_code == 400
    await asyncio.sleep(0.5)
    assert await _can(_write(second, md))
    person = await _person(channel, okta_admin, dana)
    assert person.status == P.PERSON_STATUS_ACTIVE and person.source == "login"


async def test_a_deactivated_person_loses_sessions_tokens_and_keys_on_every_instance(
    hook, okta, second, channel, okta_admin
):
    url, secret = hook
    eve = okta.add_user(f"eve-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    login = okta.users[eve]["profile"]["login"]
    session = await _sign_in(second, okta, eve)
    key = await _policy(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, subject=login, roles=["viewer"])
        ),
        metadata=okta_admin,
    )
    direct = bearer(okta.access_token(eve))  # Okta's own token, which `second` trusts
    held = {
        "session on second": _read(second, bearer(session.access_token)),
        "session on first": _read(channel, bearer(session.access_token)),
        "API key on second": _read(second, bearer(key.secret)),
        "Okta token on second": _read(second, direct),
    }
    for call in held.values():
        await _becomes(call, True)  # (the key's role reaches `second` by the change feed)

    delivered = await okta.deliver(url, secret, okta.lifecycle(eve, "deactivate"))
    assert delivered.status_code == 200
    for call in held.values():
        await _becomes(call, False)
    assert "deprovisioned" in await _refused(_read(second, direct)())
    await _refused(
        _policy(second).RefreshSession(P.RefreshSessionRequest(refresh_token=session.refresh_token))
    )
    person = await _person(channel, okta_admin, eve)
    assert (person.status, person.source) == (P.PERSON_STATUS_DEPROVISIONED, "hook")
    creds = await _policy(channel).ListCredentials(
        P.ListCredentialsRequest(include_revoked=True), metadata=okta_admin
    )
    assert [c.revoked_at.seconds > 0 for c in creds.credentials if c.subject == login] == [True]

    # reactivated: Okta's tokens work again; what was revoked stays revoked
    await okta.deliver(url, secret, okta.lifecycle(eve, "reactivate"))
    await _becomes(_read(second, bearer(okta.access_token(eve))), True)
    assert not await _can(held["session on second"])
    assert not await _can(held["API key on second"])


async def test_group_membership_hooks_move_roles_and_other_events_are_kept_as_unmapped(
    hook, okta, second, channel, okta_admin
):
    url, secret = hook
    fay = okta.add_user(f"fay-{uuid.uuid4().hex[:6]}@acme.com", "Everyone")
    session = await _sign_in(second, okta, fay)
    md = bearer(session.access_token)
    assert not await _can(_write(second, md)) and not await _can(_read(second, md))

    await okta.deliver(url, secret, okta.join(fay, ENGINEERS))
    await _becomes(_write(second, md), True)
    await okta.deliver(url, secret, okta.leave(fay, ENGINEERS))
    await _becomes(_read(second, md), False)
    await okta.deliver(url, secret, okta.join(fay, ENGINEERS))
    await _becomes(_read(second, md), True)
    # suspended: the session ends; unsuspended, she signs in again
    await okta.deliver(url, secret, okta.lifecycle(fay, "suspend"))
    await _becomes(_read(second, md), False)
    assert "suspended" in await _refused(_read(second, bearer(okta.access_token(fay)))())
    await okta.deliver(url, secret, okta.lifecycle(fay, "unsuspend"))
    await okta.deliver(url, secret, okta.leave(fay, ENGINEERS))
    again = bearer((await _sign_in(second, okta, fay)).access_token)
    assert await _can(_read(second, again)) is False and not await _can(_read(second, md))
    person = await _person(channel, okta_admin, fay)
    assert list(person.groups) == ["Everyone"] and person.status == P.PERSON_STATUS_ACTIVE

    ignored = await okta.deliver(url, secret, okta.event("user.session.start", fay))
    event_id = ignored.json()["deliveryId"]

    async def kept() -> bool:
        found = await integration_grpc.IntegrationServiceStub(channel).ListKeptDeliveries(
            I.ListKeptDeliveriesRequest(integration_id=url.rsplit("/", 1)[1]), metadata=okta_admin
        )
        mine = [k for k in found.deliveries if k.delivery_id == event_id]
        assert mine and mine[0].kind == I.KEPT_DELIVERY_KIND_UNMAPPED
        assert "user.session.start" in mine[0].reason
        return True

    await eventually(kept)


# -- reconciliation


async def test_reconciliation_reads_the_org_page_by_page_and_catches_missed_hooks(
    okta, channel, okta_admin, second
):
    gus = okta.add_user(f"gus-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    session = await _sign_in(second, okta, gus)
    md = bearer(session.access_token)
    assert await _can(_write(second, md))
    hal = okta.add_user(f"hal-{uuid.uuid4().hex[:6]}@acme.com")
    ida = okta.add_user(f"ida-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    await _sign_in(second, okta, ida)
    # no hook tells Lily: gus leaves the engineers, hal joins them, ida is deleted from Okta
    okta.members[okta.group_id(ENGINEERS)].remove(gus)
    okta.members[okta.group_id(ENGINEERS)].append(hal)
    del okta.users[ida]
    for ids in okta.members.values():
        if ida in ids:
            ids.remove(ida)
    okta.requests.clear()
    okta.fail(429)  # the first call: Okta's rate limit, then its reset

    made = await _integration(channel, okta_admin, okta, page_size=2, reconcile_every_seconds=10)

    async def reconciled() -> bool:
        assert (await _person(channel, okta_admin, hal)).groups == [ENGINEERS]
        assert list((await _person(channel, okta_admin, gus)).groups) == []
        gone = await _person(channel, okta_admin, ida)
        assert (gone.status, gone.source) == (P.PERSON_STATUS_DEPROVISIONED, "reconcile")
        return True

    await eventually(reconciled, timeout=20)
    await _becomes(_write(second, md), False)
    paths = [p for _, p in okta.requests]
    assert paths.count("/api/v1/users") > 2  # Link-header paging, two at a time
    assert paths[0] == paths[1] == "/api/v1/users"  # the 429, then the same call again
    await integration_grpc.IntegrationServiceStub(channel).DeleteIntegration(
        I.DeleteIntegrationRequest(integration_id=made.integration.integration_id),
        metadata=okta_admin,
    )


# -- the command line


async def test_lily_login_whoami_and_logout_from_the_command_line(second_lily, okta, tmp_path):
    import os
    import sys

    fred = okta.add_user(f"fred-{uuid.uuid4().hex[:6]}@acme.com", ENGINEERS)
    env = {
        **os.environ,
        "LILY_CONFIG_DIR": str(tmp_path / "config"),
        "LILY_ADDR": second_lily.address,
        "LILY_DATA_DIR": str(tmp_path / "nowhere"),
        "LILY_TOKEN": "",
    }

    async def lily(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "core.cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode()

    login = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core.cli",
        "login",
        "--tenant",
        TENANT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert login.stdout is not None
    shown = [(await asyncio.wait_for(login.stdout.readline(), 30)).decode() for _ in range(2)]
    assert okta.base + "/activate?user_code=" in shown[0]
    code = shown[1].split("confirm the code ")[1].split()[0]
    okta.approve(code, fred)
    rest, _ = await asyncio.wait_for(login.communicate(), 30)
    assert login.returncode == 0, rest
    login_name = okta.users[fred]["profile"]["login"]
    assert f"signed in as {login_name} to {TENANT} (roles: editor)" in rest.decode()
    kept = tmp_path / "config" / "session.json"
    assert kept.stat().st_mode & 0o777 == 0o600

    status, out = await lily("whoami")
    assert status == 0 and f'"subject": "{login_name}"' in out and '"editor"' in out
    status, out = await lily("logout")
    assert status == 0 and "signed out" in out and not kept.exists()
    status, out = await lily("whoami")
    assert status == 2 and "no credential" in out
