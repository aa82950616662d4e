"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from lily.v1 import common_pb2 as common_pb
from lily.v1 import lineage_pb2 as L
from lily.v1 import metadata_pb2 as O
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

TABLE = common_pb.ASSET_TYPE_TABLE
COLUMN = common_pb.ASSET_TYPE_COLUMN


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def ago(seconds: float) -> Timestamp:
    return ts(datetime.now(UTC) - timedelta(seconds=seconds))


def asset(
    qn: str, asset_type: common_pb.AssetType.ValueType = TABLE, **fields: Any
) -> common_pb.AssetInput:
    fields.setdefault("name", qn.rsplit("/", 1)[-1][:100])
    return common_pb.AssetInput(qualified_name=qn, asset_type=asset_type, **fields)


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Polls `check` until it returns a truthy value (or raises no AssertionError)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


def status_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status an error carries in its trailers (asserted present and
    consistent with the gRPC code)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == err.code().value[0]
            return status
    raise AssertionError(f"{err.code()} {err.details()!r} carries no google.rpc.Status")


def details(status: status_pb2.Status) -> dict[str, Any]:
    """The google.rpc details of a status, by type name."""
    found: dict[str, Any] = {}
    for d in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
        ):
            if d.Is(cls.DESCRIPTOR):
                msg = cls()
                d.Unpack(msg)
                found[cls.DESCRIPTOR.name] = msg
    return found


def violations(status: status_pb2.Status) -> dict[str, str]:
    bad = details(status).get("BadRequest")
    assert bad is not None, f"no BadRequest in {status}"
    return {v.field: v.description for v in bad.field_violations}


def bearer(credential: str) -> Metadata:
    """Call metadata carrying a credential (an API key or a token)."""
    return (("authorization", f"Bearer {credential}"),)


async def new_tenant(
    channel: grpc.aio.Channel,
    admin: Metadata,
    tenant_id: str,
    isolation: policy_pb.TenantIsolation.ValueType = policy_pb.TENANT_ISOLATION_SHARED,
) -> Metadata:
    """Creates a tenant (as a platform admin): its first admin's credential."""
    created = await policy_grpc.PolicyServiceStub(channel).CreateTenant(
        policy_pb.CreateTenantRequest(
            tenant=policy_pb.Tenant(tenant_id=tenant_id, isolation=isolation)
        ),
        metadata=admin,
    )
    return bearer(created.admin_api_key)


def mc_signature(secret: str, body: bytes) -> str:
    """A Monte Carlo webhook's x-mcd-signature, as Monte Carlo's reference receiver computes it
    (docs.getmontecarlo.com/docs/webhooks), written out here apart from the adapter's code."""
    encoded = urllib.parse.urlencode(json.loads(body)).encode("utf8")
    return hmac.new(secret.encode(), encoded, hashlib.sha512).hexdigest()


async def runtime_key(channel: grpc.aio.Channel, admin: Metadata) -> str:
    """A new API key with the adapter runtime's role, made by `admin` in its tenant."""
    made = await policy_grpc.PolicyServiceStub(channel).CreateCredential(
        policy_pb.CreateCredentialRequest(
            credential=policy_pb.Credential(
                kind=policy_pb.CREDENTIAL_KIND_API_KEY, roles=["adapter_runtime"]
            )
        ),
        metadata=admin,
    )
    return made.secret


@contextlib.asynccontextmanager
async def serving_runtime(
    core: str, token: str, nats_url: str, **settings: Any
) -> AsyncIterator[str]:
    """The adapter runtime (settings as given) behind a gateway that serves its webhooks, as
    `lily up` runs them: the gateway's base URL, while the block runs."""
    from adapters.runtime import Runtime, RuntimeSettings
    from api_gateway.app import GatewaySettings
    from api_gateway.server import serve

    runtime = Runtime(RuntimeSettings(core=core, token=token, nats_url=nats_url, **settings))
    await runtime.start()
    try:
        assert runtime.webhooks is not None
        gateway = await serve(
            GatewaySettings(target=core), "127.0.0.1", 0, {runtime.prefix: runtime.webhooks}
        )
        try:
            yield f"http://127.0.0.1:{gateway.port}"
        finally:
            await gateway.stop()
    finally:
        await runtime.stop()


# -- assets, lineage and tags, through the stubs


def rel(up: str, down: str) -> L.RelationshipInput:
    return L.RelationshipInput(
        upstream=L.AssetRef(qualified_name=up),
        downstream=L.AssetRef(qualified_name=down),
        source_event_time=ago(60),
    )


async def ingest_ids(stub: Any, md: Metadata, *names: str) -> dict[str, str]:
    res = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset(n) for n in names]), metadata=md
    )
    return {n: r.asset_id for n, r in zip(names, res.results, strict=True)}


async def edges(lineage: Any, md: Metadata, *pairs: tuple[str, str], delete: bool = False) -> None:
    rels = [rel(u, d) for u, d in pairs]
    if delete:
        await lineage.DeleteRelationships(
            L.DeleteRelationshipsRequest(relationships=rels), metadata=md
        )
    else:
        await lineage.IngestRelationships(
            L.IngestRelationshipsRequest(relationships=rels), metadata=md
        )


async def tag(stub: Any, md: Metadata, asset_id: str, name: str, *, remove: bool = False) -> None:
    request = O.UpdateTagsRequest(asset_id=asset_id, source=common_pb.TAG_SOURCE_USER)
    if remove:
        request.remove.append(name)
    else:
        request.add.append(common_pb.TagAssignment(name=name))
    await stub.UpdateTags(request, metadata=md)
