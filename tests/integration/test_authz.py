"""Trying to break in: every RPC (walked from the service descriptors, so a new one is covered
or this fails) called as every built-in role of the right tenant, as another tenant, and with
no, expired, tampered, wrong-audience and revoked credentials; restricted tags; scraper limits;
every denial on record."""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import pytest
from lily.v1 import common_pb2 as common_pb
from lily.v1 import (
    enforcement_pb2,
    integration_pb2,
    lineage_pb2,
    metadata_pb2,
    notification_pb2,
    policy_pb2,
    quality_pb2,
)
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc
from lily.v1 import policy_pb2 as P
from lily.v1 import policy_pb2_grpc as policy_grpc

from tests.helpers import COLUMN, TABLE, Metadata, asset, bearer, eventually, new_tenant

ROLES = ("viewer", "editor", "steward", "scraper", "admin", "pii_reader")
READ_M = {"viewer", "editor", "steward", "scraper", "admin"}
WRITE_M = {"editor", "steward", "scraper", "admin"}
READ_L = {"viewer", "editor", "steward", "admin"}
WRITE_L = {"editor", "steward", "scraper", "admin"}
EVERYONE = set(ROLES)
# Who may call what: this suite's own statement of the built-in roles, not read from the code.
EXPECTED: dict[str, frozenset[str]] = {}
for names, roles in (
    ("GetMetadata LookupMetadata SearchMetadata ListIssues GetAuditTrail GetBulkJob", READ_M),
    ("WatchChanges", READ_M),
    ("IngestMetadata IngestMetadataStream UpdateMetadata DeleteMetadata UpdateTags", WRITE_M),
    ("AttachIssue CreateBulkJob", WRITE_M),
    ("GetLineage GetPropagationJob", READ_L),
    ("IngestRelationships DeleteRelationships PropagateDownstream", WRITE_L),
    ("ListPolicies ListRoles ExportPolicies GetAssetAccess ListDenials", {"steward", "admin"}),
    ("ListGroupRoles ListPeople", {"steward", "admin"}),
    ("AddPolicies RemovePolicies AddRoles RemoveRoles ImportPolicies", {"admin"}),
    ("SetGroupRoles", {"admin"}),
    ("UpdateDirectory", set()),  # an Okta integration's own credential only
    ("CreateCredential ListCredentials", {"admin"}),
    ("CreateTenant ListTenants RotateSigningKey", set()),  # platform admins only
    ("GetTenant", {"viewer", "editor", "steward", "admin"}),
    ("CheckAccess RevokeToken ValidateToken", EVERYONE),
    ("IssueToken GetJwks StartLogin CompleteLogin RefreshSession Logout", EVERYONE),  # open
    ("CreateIntegration GetIntegration ListIntegrations UpdateIntegration", {"admin"}),
    ("RotateIntegrationSecret DeleteIntegration", {"admin"}),
    ("ListKeptDeliveries ReplayKeptDeliveries", {"admin"}),
    # the adapter runtime of the platform only
    ("ResolveIntegration ListPlatformIntegrations", set()),
    ("GetEnforcement ListEnforcement", {"steward", "admin"}),
    ("RecordEnforcement", set()),  # an enforcement target's own credential only
    ("CreateSubscription UpdateSubscription PauseSubscription DeleteSubscription", {"admin"}),
    ("RetryDelivery ReplayDeadLetters SendTestNotification", {"admin"}),
    ("GetSubscription ListSubscriptions ListDeliveries GetDelivery", {"steward", "admin"}),
    ("ListDestinationHealth", {"steward", "admin"}),
    ("Notify", {"editor", "steward", "scraper", "admin"}),
    ("ListPlatformSubscriptions RecordDeliveries", set()),
    ("RecordUsage", {"editor", "steward", "scraper", "admin"}),
    ("ListUsage", READ_M),
    ("GetRule ListRules", {"viewer", "editor", "steward", "admin"}),
    ("CreateRule UpdateRule DeleteRule EvaluateRule", {"steward", "admin"}),
):
    EXPECTED.update(dict.fromkeys(names.split(), frozenset(roles)))
OPEN = {"IssueToken", "GetJwks", "StartLogin", "CompleteLogin", "RefreshSession", "Logout"}
GATE = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def _methods():
    for module in (
        metadata_pb2,
        lineage_pb2,
        policy_pb2,
        integration_pb2,
        enforcement_pb2,
        notification_pb2,
        quality_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            yield from service.methods


async def _call(channel: grpc.aio.Channel, method, md: Metadata) -> grpc.StatusCode:
    """Calls a method with an empty request: its status code (OK if it answered)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    from google.protobuf import message_factory

    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    kwargs = {
        "request_serializer": request_cls.SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    try:
        if method.client_streaming:
            call = channel.stream_unary(path, **kwargs)
            await call(iter([request_cls()]), metadata=md, timeout=5)
        elif method.server_streaming:
            stream = channel.unary_stream(path, **kwargs)(request_cls(), metadata=md, timeout=0.5)
            await stream.read()
        else:
            await channel.unary_unary(path, **kwargs)(request_cls(), metadata=md, timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def _key(channel, md: Metadata, *roles: str) -> Metadata:
    made = await policy_grpc.PolicyServiceStub(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, roles=list(roles))
        ),
        metadata=md,
    )
    return bearer(made.secret)


def test_the_matrix_covers_every_rpc():
    assert {m.name for m in _methods()} == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["SHARED", "DEDICATED"])
async def test_every_rpc_answers_every_role_and_credential_as_it_should(
    channel, admin_md, other_md, tenant, lily, isolation
):
    md = await new_tenant(
        channel, admin_md, tenant + "-m", P.TenantIsolation.Value(f"TENANT_ISOLATION_{isolation}")
    )
    tenant += "-m"
    keys = {role: await _key(channel, md, role) for role in ROLES}
    outsider = await _key(channel, other_md, "admin")
    revoked = await _key(channel, md, "admin")
    await policy_grpc.PolicyServiceStub(channel).RevokeToken(
        P.RevokeTokenRequest(token=dict(revoked)["authorization"][7:]), metadata=revoked
    )
    client = await policy_grpc.PolicyServiceStub(channel).CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_CLIENT, roles=["admin"])
        ),
        metadata=md,
    )
    issuer, cid = lily.policy.authn.issuer, client.credential.credential_id
    good, _ = issuer.issue(
        subject=client.credential.subject, tenant_id=tenant, client_id=cid, ttl=600
    )
    head, body, sig = good.split(".")
    bad = {
        "none": (),
        "expired": bearer(
            issuer.issue(
                subject="x", tenant_id=tenant, client_id=cid, ttl=60, now=time.time() - 999
            )[0]
        ),
        "tampered": bearer(f"{head}.{body}.{sig[:-4]}AAAA"),
        "wrong audience": bearer(
            replace(issuer, audience="nope").issue(
                subject="x", tenant_id=tenant, client_id=cid, ttl=600
            )[0]
        ),
        "revoked": revoked,
    }
    wrong: list[str] = []
    for method in _methods():
        name = method.name
        for role, key in keys.items():
            code = await _call(channel, method, key)
            passed = code not in GATE
            if passed != (role in EXPECTED[name]):
                wrong.append(f"{name} as {role}: {code.name}")
        # an admin of another tenant naming this one is refused, open methods aside
        code = await _call(channel, method, (*outsider, ("x-lily-tenant", tenant)))
        if (code in GATE) == (name in OPEN):
            wrong.append(f"{name} as another tenant's admin: {code.name}")
        for what, cred in bad.items():
            code = await _call(channel, method, cred)
            expected_code = grpc.StatusCode.UNAUTHENTICATED
            if (code == expected_code) == (name in OPEN):
                wrong.append(f"{name} with {what} credentials: {code.name}")
    assert not wrong, "\n".join(wrong)


async def test_restricted_tags_are_redacted_or_refused_as_configured(channel, stub, md):
    created = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset(
                    "pg://pii/db/s/users",
                    TABLE,
                    description="the customer's email",
                    attributes={"sample": "ann@example.com"},
                    tags=[common_pb.TagAssignment(name="PII")],
                )
            ]
        ),
        metadata=md,
    )
    aid = created.results[0].asset_id
    viewer = await _key(channel, md, "viewer")
    reader = await _key(channel, md, "viewer", "pii_reader")
    got = (await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=viewer)).asset
    assert (got.description, dict(got.attributes)) == ("", {})
    assert set(got.redacted_fields) == {
        "description",
        "attributes",
        "business_terms",
        "external_id",
    }
    assert got.qualified_name == "pg://pii/db/s/users"  # identity stays
    found = (await stub.SearchMetadata(O.SearchMetadataRequest(tag="PII"), metadata=viewer)).assets
    assert [a.description for a in found] == [""]
    full = (await stub.GetMetadata(O.GetMetadataRequest(asset_id=aid), metadata=reader)).asset
    assert full.description == "the customer's email" and not full.redacted_fields
    access = await policy_grpc.PolicyServiceStub(channel).GetAssetAccess(
        P.GetAssetAccessRequest(asset_id=aid), metadata=md
    )
    assert list(access.restricted_tags) == ["PII"]
    by_roles = {frozenset(a.roles): a for a in access.access}
    only_viewer = by_roles[frozenset({"viewer"})]
    assert only_viewer.can_read and only_viewer.read_redacted and not only_viewer.can_write
    assert not by_roles[frozenset({"viewer", "pii_reader"})].read_redacted
    assert by_roles[frozenset({"admin"})].can_write


async def test_scrapers_write_only_the_types_and_prefixes_their_policies_give(channel, stub, md):
    policies = policy_grpc.PolicyServiceStub(channel)
    await policies.AddPolicies(
        P.AddPoliciesRequest(
            policies=[
                P.Policy(subject="sf", object="asset:TABLE:snowflake://acct/*", action="write"),
                P.Policy(subject="sf", object="asset:COLUMN:snowflake://acct/*", action="write"),
                P.Policy(
                    subject="sf",
                    object="asset:TABLE:snowflake://acct/hr/*",
                    action="write",
                    effect=P.POLICY_EFFECT_DENY,
                ),
            ]
        ),
        metadata=md,
    )
    made = await policies.CreateCredential(
        P.CreateCredentialRequest(
            credential=P.Credential(kind=P.CREDENTIAL_KIND_API_KEY, subject="sf", roles=["scraper"])
        ),
        metadata=md,
    )
    scraper = bearer(made.secret)
    res = await stub.IngestMetadata(
        O.IngestMetadataRequest(
            assets=[
                asset("snowflake://acct/sales/orders"),
                asset("snowflake://acct/sales/orders/id", COLUMN),
                asset("snowflake://acct/hr/salaries"),
                asset("snowflake://acct/sales/v", common_pb.ASSET_TYPE_VIEW),
                asset("bigquery://p/d/t", TABLE),
            ]
        ),
        metadata=scraper,
    )
    outcomes = [r.outcome for r in res.results]
    assert outcomes[:2] == [O.INGEST_OUTCOME_CREATED, O.INGEST_OUTCOME_ACCEPTED]
    assert outcomes[2:] == [O.INGEST_OUTCOME_REJECTED] * 3
    assert {r.error.code for r in res.results[2:]} == {grpc.StatusCode.PERMISSION_DENIED.value[0]}
    # and by id: the scraper may not touch what it could not have written
    other = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("bigquery://p/d/t2")]), metadata=md
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DeleteMetadata(
            O.DeleteMetadataRequest(asset_id=other.results[0].asset_id), metadata=scraper
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def on_record() -> bool:
        found = await policies.ListDenials(P.ListDenialsRequest(), metadata=md)
        objects = {(d.subject, d.object) for d in found.denials}
        return {
            ("sf", "asset:TABLE:snowflake://acct/hr/salaries"),
            ("sf", "asset:TABLE:bigquery://p/d/t2"),
        } <= objects

    await eventually(on_record, timeout=5)


async def test_an_unknown_caller_is_on_record_for_the_platform_admins(channel, admin_md):
    stub = metadata_grpc.MetadataServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetMetadata(O.GetMetadataRequest(asset_id="0" * 32), metadata=bearer("lily_x"))

    async def on_record() -> bool:
        found = await policy_grpc.PolicyServiceStub(channel).ListDenials(
            P.ListDenialsRequest(page_size=50), metadata=admin_md
        )
        return any(
            d.code == "UNAUTHENTICATED" and d.method.endswith("/GetMetadata") for d in found.denials
        )

    await eventually(on_record, timeout=5)
