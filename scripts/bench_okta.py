"""Benchmark: an Okta deactivation, from the event hook's delivery until the person's next call
is refused on a second Lily instance, against Lily's own revocation measured in the same run.

    .venv/bin/python scripts/bench_okta.py [--people 100] [--rounds 2]

Starts an embedded Postgres and NATS, two `lily up` on them (A and B: each with its REST
gateway and adapter runtime, both with the same secret key), and, in this process, the local
Okta org the tests use (tests/fake_okta.py). B trusts that org's issuer for the tenant and
signs its people in with it (the device grant); A serves the tenant's Okta event hook.

In rounds that alternate the two ways (the machine is shared), for each of `--people`:

- Okta: the person signs in on B (a Lily session; their group makes them a viewer); then, from
  t0, the group.user_membership.remove event hook is POSTed to A's webhook URL (A's runtime
  keeps it, maps it, and A's core writes the directory) while the person searches on B, back to
  back, until B refuses for want of the role: t1 - t0; then the same for the
  user.lifecycle.deactivate hook, with ValidateToken until B refuses the session.
- Baseline: an API key of a person, revoked with RevokeToken on A from t0, and called on B
  until refused: Lily's own revocation across instances, with no adapter in the way.

Prints p50/p99/max of each and their ratios, and the CPU each process used per deactivation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
import httpx
import orjson
import psutil
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as metadata_pb
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

from core.stack import EmbeddedStack, free_port
from policy.secretbox import new_key
from scripts.benchkit import CpuMeter, cpu_delta, lily_up, new_tenant, pct, progress
from tests.fake_okta import FakeOkta

Metadata = tuple[tuple[str, str], ...]
GROUP = "Data Engineers"


def _bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def _until(call: Callable[[], Awaitable[Any]], code: grpc.StatusCode) -> float:
    """Makes the call back to back until it is refused with `code`: when (perf_counter)."""
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            if err.code() != code:
                raise
            return time.perf_counter()


def _validate(b: policy_grpc.PolicyServiceStub, md: Metadata) -> Callable[[], Awaitable[Any]]:
    return lambda: b.ValidateToken(policy_pb.ValidateTokenRequest(), metadata=md, timeout=5)


def _search(b: metadata_grpc.MetadataServiceStub, md: Metadata) -> Callable[[], Awaitable[Any]]:
    request = metadata_pb.SearchMetadataRequest(page_size=1)
    return lambda: b.SearchMetadata(request, metadata=md, timeout=5)


async def _sign_in(
    b: policy_grpc.PolicyServiceStub, okta: FakeOkta, tenant: str
) -> tuple[str, str]:
    """A new person of the org, signed in on B: (their Okta id, their session's access token)."""
    uid = okta.add_user(f"p{uuid.uuid4().hex[:10]}@acme.com", GROUP)
    started = await b.StartLogin(policy_pb.StartLoginRequest(tenant_id=tenant), timeout=10)
    okta.approve(started.user_code, uid)
    done = await b.CompleteLogin(
        policy_pb.CompleteLoginRequest(tenant_id=tenant, device_code=started.device_code),
        timeout=10,
    )
    assert done.session.access_token, done
    return uid, done.session.access_token


class Tally:
    """CPU each process used over the measured parts of the rounds."""

    def __init__(self, meter: CpuMeter) -> None:
        self.meter = meter
        self.cpu: dict[str, float] = {}
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = self.meter.read()

    def stop(self) -> None:
        for k, v in cpu_delta(self._before, self.meter.read()).items():
            self.cpu[k] = self.cpu.get(k, 0.0) + v


async def _hooked(
    http: httpx.AsyncClient,
    a_hook: str,
    secret: str,
    body: bytes,
    refused: Awaitable[float],
) -> float:
    """POSTs an event hook to A from t0 while `refused` waits for B to refuse: t1 - t0."""
    start = time.perf_counter()
    post = http.post(
        a_hook, content=body, headers={"content-type": "application/json", "authorization": secret}
    )
    answer, when = await asyncio.gather(post, refused)
    assert answer.status_code == 200, answer.text
    return when - start


async def _okta_round(
    n: int,
    a_hook: str,
    secret: str,
    b_ch: grpc.aio.Channel,
    okta: FakeOkta,
    tenant: str,
    http: httpx.AsyncClient,
    tally: Tally,
) -> tuple[list[float], list[float]]:
    """(group removals, deactivations) of `n` people signed in on B."""
    b = policy_grpc.PolicyServiceStub(b_ch)
    search = metadata_grpc.MetadataServiceStub(b_ch)
    people = []
    for i in range(n):
        people.append(await _sign_in(b, okta, tenant))
        progress(f"okta: signed in {i + 1}/{n}")
    left, gone = [], []
    tally.start()
    for i, (uid, token) in enumerate(people):
        md = _bearer(token)
        await search.SearchMetadata(metadata_pb.SearchMetadataRequest(page_size=1), metadata=md)
        leave = orjson.dumps(okta.hook_body(okta.leave(uid, GROUP)))
        denied = _until(_search(search, md), grpc.StatusCode.PERMISSION_DENIED)
        left.append(await _hooked(http, a_hook, secret, leave, denied))
        off = orjson.dumps(okta.hook_body(okta.lifecycle(uid, "deactivate")))
        refused = _until(_validate(b, md), grpc.StatusCode.UNAUTHENTICATED)
        gone.append(await _hooked(http, a_hook, secret, off, refused))
        progress(f"okta: removed from the group and deactivated {i + 1}/{n}")
    tally.stop()
    return left, gone


async def _baseline_round(
    n: int,
    a: policy_grpc.PolicyServiceStub,
    b: policy_grpc.PolicyServiceStub,
    md: Metadata,
    tally: Tally,
) -> list[float]:
    keys = []
    for i in range(n):
        made = await a.CreateCredential(
            policy_pb.CreateCredentialRequest(
                credential=policy_pb.Credential(
                    kind=policy_pb.CREDENTIAL_KIND_API_KEY,
                    subject=f"k{uuid.uuid4().hex[:10]}@acme.com",
                    roles=["viewer"],
                )
            ),
            metadata=md,
        )
        keys.append((made.credential.credential_id, made.secret))
        progress(f"baseline: keys {i + 1}/{n}")
    took = []
    tally.start()
    for i, (key_id, secret) in enumerate(keys):
        await b.ValidateToken(policy_pb.ValidateTokenRequest(), metadata=_bearer(secret))
        start = time.perf_counter()
        revoke = a.RevokeToken(policy_pb.RevokeTokenRequest(credential_id=key_id), metadata=md)
        refusal = _until(_validate(b, _bearer(secret)), grpc.StatusCode.UNAUTHENTICATED)
        _, refused = await asyncio.gather(revoke, refusal)
        took.append(refused - start)
        progress(f"baseline: revoked {i + 1}/{n}")
    tally.stop()
    return took


def _line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {name:<32} p50 {pct(ms, 50):7.1f} ms  p99 {pct(ms, 99):7.1f} ms  "
        f"max {max(ms):7.1f} ms  (n={len(ms)})"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description="Lily Okta deactivation benchmark")
    parser.add_argument("--people", type=int, default=100, help="deactivations a round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lily-bench-okta-"))
    print(f"lily bench: Okta deactivation across instances; data under {root}")
    stack = EmbeddedStack(root / "stack")
    dsn, url = await stack.start()
    tenant = "okta" + uuid.uuid4().hex[:8]
    okta = FakeOkta(interval=0, tenant=tenant)
    okta.add_group(GROUP)
    key = new_key()
    a_port, a_http, b_port = free_port(), free_port(), free_port()
    (root / "a").mkdir()
    (root / "b").mkdir()
    servers: list[asyncio.subprocess.Process] = []
    try:
        async with okta:
            progress("starting lily A")
            servers.append(await lily_up(root / "a", dsn, url, a_port, a_http, LILY_SECRET_KEY=key))
            oidc = [
                {
                    "issuer": okta.issuer,
                    "audience": "api://lily",
                    "tenant": tenant,
                    "client_id": okta.client_id,
                }
            ]
            progress("starting lily B")
            servers.append(
                await lily_up(
                    root / "b",
                    dsn,
                    url,
                    b_port,
                    LILY_SECRET_KEY=key,
                    LILY_AUTH__OIDC=orjson.dumps(oidc).decode(),
                )
            )
            meter = CpuMeter(servers[0].pid, root)
            meter.groups["lily A"] = meter.groups.pop("lily server")
            meter.groups["lily A workers"] = meter.groups.pop("lily workers")
            b_proc = psutil.Process(servers[1].pid)
            meter.groups["lily B"] = [b_proc, *b_proc.children(recursive=True)]
            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{a_port}") as a_ch,
                grpc.aio.insecure_channel(f"127.0.0.1:{b_port}") as b_ch,
                httpx.AsyncClient(timeout=30) as http,
            ):
                md = await new_tenant(a_ch, root / "a", tenant)
                a = policy_grpc.PolicyServiceStub(a_ch)
                b = policy_grpc.PolicyServiceStub(b_ch)
                await a.SetGroupRoles(
                    policy_pb.SetGroupRolesRequest(
                        mapping=policy_pb.GroupRoles(group=GROUP, roles=["viewer"])
                    ),
                    metadata=md,
                )
                hook = integration_pb.Integration(type="okta", display_name="okta")
                hook.settings.update({"org_url": okta.base})
                made = await integration_grpc.IntegrationServiceStub(a_ch).CreateIntegration(
                    integration_pb.CreateIntegrationRequest(integration=hook), metadata=md
                )
                a_hook = f"http://127.0.0.1:{a_http}{made.integration.webhook_path}"
                verified = await okta.verify(a_hook, made.webhook_secret)
                assert verified.status_code == 200, verified.text
                # a warm-up of each way (connections, caches), not counted
                warm = Tally(meter)
                await _okta_round(3, a_hook, made.webhook_secret, b_ch, okta, tenant, http, warm)
                await _baseline_round(3, a, b, md, warm)

                hooked: list[float] = []
                regrouped: list[float] = []
                revoked: list[float] = []
                on_hook, on_base = Tally(meter), Tally(meter)
                for r in range(args.rounds):
                    progress(f"round {r + 1}/{args.rounds}")
                    left, gone = await _okta_round(
                        args.people, a_hook, made.webhook_secret, b_ch, okta, tenant, http, on_hook
                    )
                    regrouped += left
                    hooked += gone
                    revoked += await _baseline_round(args.people, a, b, md, on_base)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            await server.wait()
        await stack.stop()

    print("\nfrom the deactivation until the person's next call on B is refused:")
    print(_line("okta deactivation hook on A -> B", hooked))
    print(_line("baseline: RevokeToken on A -> B", revoked))
    print(_line("okta group removal hook on A -> B", regrouped))
    for p in (50, 99):
        ratio = pct(hooked, p) / pct(revoked, p)
        print(f"  p{p} ratio (okta / baseline): {ratio:.2f}")
    target = "met" if pct(hooked, 99) < 1.0 else "NOT met"
    print(f"  target p99 < 1 s: {target}")
    print(
        f"  group removal p99 ratio (okta / baseline): {pct(regrouped, 99) / pct(revoked, 99):.2f}"
    )
    print("\nCPU per person (ms) of each process: okta, a group removal and a deactivation;")
    print("baseline, a revocation (sign-ins and key making left out; the bench client calls B")
    print("back to back until refused):")
    for name in on_hook.cpu:
        per_hook = on_hook.cpu[name] / len(hooked) * 1000
        per_base = on_base.cpu[name] / len(revoked) * 1000
        print(f"  {name:<16} okta {per_hook:6.2f}   baseline {per_base:6.2f}")
    return 0


def _run() -> Any:
    return asyncio.run(main())


if __name__ == "__main__":
    raise SystemExit(_run())
