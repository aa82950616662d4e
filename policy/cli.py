"""`lily policy`, `lily tenant` and `lily credential`: the PolicyService from the command line.

lily policy apply policies.csv      # replace the tenant's policies and roles (validated first)
lily policy export > policies.csv   # the tenant's own policies and roles, as a Casbin file
lily policy check metadata write [--subject S]
lily policy rotate-key              # a new signing key for Lily's token issuer (platform admins)
lily tenant create acme [--dedicated] [--name "Acme Corp"]   # prints its admin key, once
lily tenant list
lily credential create --role scraper [--subject S] [--client]   # prints the secret, once
lily credential revoke <credential id>
lily login --tenant acme     # sign in with the tenant's identity provider (device grant)
lily whoami                  # who the credential in use says you are
lily logout                  # end the session `lily login` opened
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.cli.client import (
    RPC_TIMEOUT,
    Client,
    CliError,
    add_options,
    address,
    channel,
    credentials,
    forget_session,
    load_session,
    save_session,
    say,
    show,
)

# A DEDICATED tenant's stores are made within the call (core.cells.OPEN_TIMEOUT at most).
PROVISION_TIMEOUT = 200.0


async def _apply(args: argparse.Namespace) -> int:
    text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
    async with channel(args) as ch:
        done = await policy_grpc.PolicyServiceStub(ch).ImportPolicies(
            policy_pb.ImportPoliciesRequest(policy_text=text),
            metadata=await credentials(args),
            timeout=RPC_TIMEOUT,
        )
    say(f"lily: applied {done.policies} policies and {done.roles} role assignments")
    return 0


async def _export(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        found = await policy_grpc.PolicyServiceStub(ch).ExportPolicies(
            policy_pb.ExportPoliciesRequest(), metadata=await credentials(args), timeout=RPC_TIMEOUT
        )
    print(found.model_text if args.model else found.policy_text, end="")
    return 0


async def _check(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        d = await policy_grpc.PolicyServiceStub(ch).CheckAccess(
            policy_pb.CheckAccessRequest(
                subject=args.subject or "", object=args.object, action=args.action
            ),
            metadata=await credentials(args),
            timeout=RPC_TIMEOUT,
        )
    say(f"{'allowed' if d.allowed else 'denied'}: {d.reason}")
    return 0 if d.allowed else 1


async def _tenant_create(args: argparse.Namespace) -> int:
    isolation = policy_pb.TENANT_ISOLATION_SHARED
    if args.dedicated:
        isolation = policy_pb.TENANT_ISOLATION_DEDICATED
    async with channel(args) as ch:
        made = await policy_grpc.PolicyServiceStub(ch).CreateTenant(
            policy_pb.CreateTenantRequest(
                tenant=policy_pb.Tenant(
                    tenant_id=args.tenant_id, display_name=args.name or "", isolation=isolation
                )
            ),
            metadata=await credentials(args),
            timeout=PROVISION_TIMEOUT,
        )
    kind = policy_pb.TenantIsolation.Name(made.tenant.isolation).removeprefix("TENANT_ISOLATION_")
    say(
        f"lily: created tenant {made.tenant.tenant_id!r} ({kind}); "
        "its admin API key (shown this once):"
    )
    say(made.admin_api_key)
    return 0


async def _tenant_list(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        found = await policy_grpc.PolicyServiceStub(ch).ListTenants(
            policy_pb.ListTenantsRequest(), metadata=await credentials(args), timeout=RPC_TIMEOUT
        )
    for t in found.tenants:
        say(
            f"{t.tenant_id}\t{policy_pb.TenantIsolation.Name(t.isolation)[17:]}"
            f"\t{policy_pb.TenantState.Name(t.state)[13:]}"
        )
    return 0


async def _credential_create(args: argparse.Namespace) -> int:
    kind = policy_pb.CREDENTIAL_KIND_CLIENT if args.client else policy_pb.CREDENTIAL_KIND_API_KEY
    async with channel(args) as ch:
        made = await policy_grpc.PolicyServiceStub(ch).CreateCredential(
            policy_pb.CreateCredentialRequest(
                credential=policy_pb.Credential(
                    kind=kind,
                    subject=args.subject or "",
                    roles=args.role or [],
                    description=args.description or "",
                )
            ),
            metadata=await credentials(args),
            timeout=RPC_TIMEOUT,
        )
    show(made.credential)
    what = "client secret" if args.client else "API key"
    say(f"lily: its {what} (shown this once):")
    say(made.secret)
    return 0


async def _rotate_key(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        done = await policy_grpc.PolicyServiceStub(ch).RotateSigningKey(
            policy_pb.RotateSigningKeyRequest(),
            metadata=await credentials(args),
            timeout=RPC_TIMEOUT,
        )
    say(f"lily: tokens are signed with key {done.kid} from now on")
    for key in done.keys:
        if key.HasField("retires_at"):
            say(f"  {key.kid} verifies until {key.retires_at.ToDatetime():%Y-%m-%d %H:%M:%S} UTC")
    return 0


async def _credential_revoke(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        await policy_grpc.PolicyServiceStub(ch).RevokeToken(
            policy_pb.RevokeTokenRequest(credential_id=args.credential_id),
            metadata=await credentials(args),
            timeout=RPC_TIMEOUT,
        )
    say(f"lily: revoked {args.credential_id}")
    return 0


async def _login(args: argparse.Namespace) -> int:
    """The OAuth2 Device Authorization Grant through Lily: shows where to approve, then asks
    Lily every `interval` seconds until the person has (or the codes expire)."""
    async with channel(args) as ch:
        policy = policy_grpc.PolicyServiceStub(ch)
        started = await policy.StartLogin(
            policy_pb.StartLoginRequest(tenant_id=args.tenant), timeout=RPC_TIMEOUT
        )
        where = started.verification_uri_complete or started.verification_uri
        say(f"lily: to sign in to {args.tenant}, open {where}")
        say(f"lily: and confirm the code {started.user_code} (it lasts {started.expires_in} s)")
        interval = max(started.interval, 1)
        deadline = time.monotonic() + started.expires_in
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            done = await policy.CompleteLogin(
                policy_pb.CompleteLoginRequest(
                    tenant_id=args.tenant, device_code=started.device_code
                ),
                timeout=RPC_TIMEOUT,
            )
            if not done.pending:
                break
            interval = max(interval, done.interval)
        else:
            raise CliError("the sign-in was not approved in time: `lily login` again")
    save_session(address(args), done.session)
    who = done.session.principal
    roles = ", ".join(who.roles) or "none yet"
    say(f"lily: signed in as {who.subject} to {who.tenant_id} (roles: {roles})")
    return 0


async def _logout(args: argparse.Namespace) -> int:
    kept = load_session()
    if kept is None:
        say("lily: not signed in")
        return 0
    async with channel(args) as ch:
        try:
            await policy_grpc.PolicyServiceStub(ch).Logout(
                policy_pb.LogoutRequest(refresh_token=str(kept["refresh_token"])),
                timeout=RPC_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:  # (over already: forget it)
                raise
    forget_session()
    say(f"lily: signed out {kept.get('subject', '')} (session {kept.get('session_id', '')})")
    return 0


async def _whoami(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        who = await policy_grpc.PolicyServiceStub(ch).ValidateToken(
            policy_pb.ValidateTokenRequest(), metadata=await credentials(args), timeout=RPC_TIMEOUT
        )
    show(who.principal)
    return 0


def add_commands(client: Client) -> None:
    pol = client("policy", "manage the tenant's Casbin policies")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    for name, help_text, run in (
        ("apply", "replace the tenant's policies and roles with a Casbin policy file", _apply),
        ("export", "print the tenant's policies and roles as a Casbin policy file", _export),
        ("check", "would you (or --subject) be allowed ACTION on OBJECT?", _check),
        ("rotate-key", "a new signing key for Lily's token issuer (platform admins)", _rotate_key),
    ):
        c = psub.add_parser(name, help=help_text)
        c.set_defaults(run=run)
        if name == "apply":
            c.add_argument("file")
        elif name == "export":
            c.add_argument("--model", action="store_true", help="print the Casbin model instead")
        elif name == "check":
            c.add_argument("object")
            c.add_argument("action")
            c.add_argument("--subject")
    _inherit(psub)

    ten = client("tenant", "create and list tenants (platform admins)")
    tsub = ten.add_subparsers(dest="tenant_command", required=True)
    create = tsub.add_parser("create", help="create a tenant; prints its admin API key once")
    create.add_argument("tenant_id")
    create.add_argument("--name")
    create.add_argument("--dedicated", action="store_true", help="DEDICATED isolation")
    create.set_defaults(run=_tenant_create)
    tsub.add_parser("list", help="list tenants").set_defaults(run=_tenant_list)
    _inherit(tsub)

    cred = client("credential", "create and revoke API keys and OAuth2 clients")
    csub = cred.add_subparsers(dest="credential_command", required=True)
    make = csub.add_parser("create", help="create an API key (or --client); prints it once")
    make.add_argument("--client", action="store_true", help="an OAuth2 client, not an API key")
    make.add_argument("--subject", help="the principal it authenticates as")
    make.add_argument("--role", action="append", help="a role in the tenant (repeatable)")
    make.add_argument("--description")
    make.set_defaults(run=_credential_create)
    rev = csub.add_parser("revoke", help="revoke a credential by id")
    rev.add_argument("credential_id")
    rev.set_defaults(run=_credential_revoke)
    _inherit(csub)

    login = client("login", "sign in with the tenant's identity provider (e.g. Okta)")
    login.add_argument("--tenant", required=True, help="the tenant to sign in to")
    login.set_defaults(run=_login)
    client("logout", "end the session `lily login` opened").set_defaults(run=_logout)
    client("whoami", "who the credential in use says you are").set_defaults(run=_whoami)


def _inherit(sub: argparse._SubParsersAction) -> None:
    """Lets --addr, --token and --data-dir also follow the subcommand
    (`lily policy apply f --addr X`)."""
    for child in sub.choices.values():
        add_options(child, hidden=True)
