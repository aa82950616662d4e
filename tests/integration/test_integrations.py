"""The integration registry (IntegrationService) against the session's server: a tenant's admin
manages integrations; their secrets are sealed at rest, never returned nor logged; each has a
credential of its own with its type's role; the adapter runtime alone resolves them."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.json_format import MessageToDict
from lily.v1 import integration_pb2 as I
from lily.v1 import integration_pb2_grpc as integration_grpc
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.server import Lily
from tests.helpers import Metadata, asset, bearer, runtime_key, status_of, violations

MC_SETTINGS = {"warehouses": {"9a59c6f1": "snowflake://acct"}, "poll_interval_seconds": 60}


@pytest.fixture
def integrations(channel: grpc.aio.Channel) -> integration_grpc.IntegrationServiceStub:
    return integration_grpc.IntegrationServiceStub(channel)


async def _create(stub, md: Metadata, **fields) -> I.CreateIntegrationResponse:
    integration = I.Integration(
        type=fields.pop("type", "monte_carlo"), display_name=fields.pop("display_name", "mc")
    )
    integration.settings.update(fields.pop("settings", MC_SETTINGS))
    integration.secrets.update(fields.pop("secrets", {}))
    return await stub.CreateIntegration(
        I.CreateIntegrationRequest(integration=integration), metadata=md, timeout=10
    )


async def test_an_admin_creates_lists_updates_and_deletes_an_integration(integrations, md):
    made = await _create(integrations, md, secrets={"mcd_id": "id-1", "mcd_token": "tok-1"})
    i = made.integration
    assert i.integration_id.startswith("int_") and i.type == "monte_carlo"
    assert i.webhook_path == f"/webhook/monte-carlo/{i.integration_id}"
    assert sorted(i.secret_names) == ["mcd_id", "mcd_token", "webhook_secret"]
    assert len(made.webhook_secret) >= 32 and i.credential_id and not i.disabled
    assert MessageToDict(i.settings)["warehouses"] == {"9a59c6f1": "snowflake://acct"}

    got = await integrations.GetIntegration(
        I.GetIntegrationRequest(integration_id=i.integration_id), metadata=md
    )
    listed = await integrations.ListIntegrations(I.ListIntegrationsRequest(), metadata=md)
    for answer in (got, listed):  # secrets are never returned
        wire = answer.SerializeToString()
        assert b"tok-1" not in wire and made.webhook_secret.encode() not in wire
    assert [x.integration_id for x in listed.integrations] == [i.integration_id]
    assert not (
        await integrations.ListIntegrations(
            I.ListIntegrationsRequest(type="openlineage"), metadata=md
        )
    ).integrations

    change = I.Integration(display_name="prod MC")
    change.settings.update({"default_prefix": "snowflake://other"})
    change.secrets.update({"mcd_token": "", "api_extra": "x"})  # remove one, add one
    updated = await integrations.UpdateIntegration(
        I.UpdateIntegrationRequest(
            integration_id=i.integration_id,
            integration=change,
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "settings", "secrets"]),
        ),
        metadata=md,
    )
    u = updated.integration
    assert u.display_name == "prod MC" and dict(u.settings) == {
        "default_prefix": "snowflake://other"
    }
    assert sorted(u.secret_names) == ["api_extra", "mcd_id", "webhook_secret"]
    assert u.updated_at.ToDatetime() > i.updated_at.ToDatetime()

    await integrations.DeleteIntegration(
        I.DeleteIntegrationRequest(integration_id=i.integration_id), metadata=md
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await integrations.GetIntegration(
            I.GetIntegrationRequest(integration_id=i.integration_id), metadata=md
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_integrations_are_refused_naming_the_field(integrations, md):
    cases = [
        ({"type": "spaceship"}, "integration.type"),
        ({"settings": {"warehouses": {"w": "no-scheme"}}}, "integration.settings.warehouses"),
        ({"settings": {"nope": 1}}, "integration.settings.nope"),
        ({"settings": {"poll_interval_seconds": 1}}, "integration.settings.poll_interval_seconds"),
        ({"secrets": {"Bad Name": "x"}}, "integration.secrets['Bad Name']"),
    ]
    for fields, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _create(integrations, md, **fields)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert field in violations(status_of(refused.value)), (fields, refused.value.details())
    assert not (
        await integrations.ListIntegrations(I.ListIntegrationsRequest(), metadata=md)
    ).integrations
    made = await _create(integrations, md)
    with pytest.raises(grpc.aio.AioRpcError) as no_mask:
        await integrations.UpdateIntegration(
            I.UpdateIntegrationRequest(
                integration_id=made.integration.integration_id,
                integration=I.Integration(),
                update_mask=field_mask_pb2.FieldMask(paths=["type"]),
            ),
            metadata=md,
        )
    assert "update_mask" in violations(status_of(no_mask.value))


async def test_secrets_are_sealed_at_rest_and_never_logged(
    integrations, md, lily: Lily, stack, caplog
):
    caplog.set_level(logging.DEBUG)
    token = "mc-token-" + "s3cr3t" * 4
    made = await _create(integrations, md, secrets={"mcd_token": token})
    conn = await asyncpg.connect(stack[0])
    try:
        row = await conn.fetchrow(
            "SELECT i::text AS whole FROM integrations i WHERE integration_id = $1",
            made.integration.integration_id,
        )
        # the whole row, bytea as hex: neither secret is there in the clear
        assert row is not None
        for secret in (token, made.webhook_secret):
            assert secret not in row["whole"] and secret.encode().hex() not in row["whole"]
    finally:
        await conn.close()
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "integration created" in logged  # what was done is logged ...
    assert token not in logged and made.webhook_secret not in logged  # ... its secrets are not


async def test_another_tenant_cannot_see_or_touch_it(integrations, md, other_md):
    made = await _create(integrations, md)
    iid = made.integration.integration_id
    calls = [
        integrations.GetIntegration(I.GetIntegrationRequest(integration_id=iid), metadata=other_md),
        integrations.DeleteIntegration(
            I.DeleteIntegrationRequest(integration_id=iid), metadata=other_md
        ),
        integrations.RotateIntegrationSecret(
            I.RotateIntegrationSecretRequest(integration_id=iid), metadata=other_md
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    theirs = await integrations.ListIntegrations(I.ListIntegrationsRequest(), metadata=other_md)
    assert not theirs.integrations


async def test_the_runtime_resolves_it_and_its_credential_does_only_what_its_adapter_does(
    channel, integrations, md, admin_md, tenant
):
    made = await _create(integrations, md, secrets={"mcd_token": "tok"})
    iid = made.integration.integration_id
    runtime = bearer(await runtime_key(channel, admin_md))
    resolved = await integrations.ResolveIntegration(
        I.ResolveIntegrationRequest(integration_id=iid), metadata=runtime
    )
    assert resolved.integration.tenant_id == tenant
    assert dict(resolved.secrets) == {"mcd_token": "tok", "webhook_secret": made.webhook_secret}
    assert list(resolved.webhook_secrets) == [made.webhook_secret]

    # the tenant's admin may not resolve (no secrets come back out) ...
    with pytest.raises(grpc.aio.AioRpcError) as admin:
        await integrations.ResolveIntegration(
            I.ResolveIntegrationRequest(integration_id=iid), metadata=md
        )
    assert admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # ... nor can it make itself a runtime: the role works in the system tenant only
    own_runtime = bearer(await runtime_key(channel, md))
    with pytest.raises(grpc.aio.AioRpcError) as own:
        await integrations.ResolveIntegration(
            I.ResolveIntegrationRequest(integration_id=iid), metadata=own_runtime
        )
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # the integration's own key: reads assets and attaches issues, writes nothing else
    stub = metadata_grpc.MetadataServiceStub(channel)
    key = bearer(resolved.api_key)
    ingested = await stub.IngestMetadata(
        O.IngestMetadataRequest(assets=[asset("pg://int/db/s/orders")]), metadata=md
    )
    asset_id = ingested.results[0].asset_id
    await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=key)
    from lily.v1 import common_pb2 as C

    attached = await stub.AttachIssue(
        O.AttachIssueRequest(
            asset_id=asset_id,
            issue=C.DataQualityIssue(external_id="inc-1", source="monte_carlo", title="late"),
        ),
        metadata=key,
    )
    assert attached.issue.external_id == "inc-1"
    with pytest.raises(grpc.aio.AioRpcError) as ingest:
        await stub.IngestMetadata(
            O.IngestMetadataRequest(assets=[asset("pg://int/db/s/other")]), metadata=key
        )
    assert ingest.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # deleted, its key stops working at once, and nothing resolves it
    await integrations.DeleteIntegration(
        I.DeleteIntegrationRequest(integration_id=iid), metadata=md
    )
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await stub.GetMetadata(O.GetMetadataRequest(asset_id=asset_id), metadata=key)
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await integrations.ResolveIntegration(
            I.ResolveIntegrationRequest(integration_id=iid), metadata=runtime
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_runtime_lists_the_integrations_of_every_tenant_a_page_at_a_time(
    channel, integrations, md, other_md, admin_md
):
    mine = (await _create(integrations, md)).integration.integration_id
    theirs = (await _create(integrations, other_md)).integration.integration_id
    lineage = await _create(integrations, md, type="openlineage", settings={})
    runtime = bearer(await runtime_key(channel, admin_md))
    seen: list[I.Integration] = []
    after = ""
    while True:
        page = await integrations.ListPlatformIntegrations(
            I.ListPlatformIntegrationsRequest(
                type="monte_carlo", page_size=1, after_integration_id=after
            ),
            metadata=runtime,
        )
        if not page.integrations:
            break
        assert len(page.integrations) == 1
        seen.extend(page.integrations)
        after = page.integrations[-1].integration_id
    ids = [i.integration_id for i in seen]
    assert ids == sorted(set(ids)) and {mine, theirs} <= set(ids)
    assert lineage.integration.integration_id not in ids
    assert {i.type for i in seen} == {"monte_carlo"}
    assert not any(i.secrets for i in seen)  # no secrets: ResolveIntegration gives those

    for who in (md, bearer(await runtime_key(channel, md))):  # a tenant's, even its runtime's
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await integrations.ListPlatformIntegrations(
                I.ListPlatformIntegrationsRequest(), metadata=who
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as big:
        await integrations.ListPlatformIntegrations(
            I.ListPlatformIntegrationsRequest(page_size=501), metadata=runtime
        )
    assert set(violations(status_of(big.value))) == {"page_size"}
    for call in (  # text a store cannot take is refused, not a 500
        integrations.ListPlatformIntegrations(
            I.ListPlatformIntegrationsRequest(type="a\x00b"), metadata=runtime
        ),
        integrations.ListIntegrations(I.ListIntegrationsRequest(type="a\x00b"), metadata=md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as nul:
            await call
        assert set(violations(status_of(nul.value))) == {"type"}


async def test_a_rotated_secret_keeps_the_previous_one_for_its_grace(
    channel, integrations, md, admin_md
):
    made = await _create(integrations, md)
    iid = made.integration.integration_id
    runtime = bearer(await runtime_key(channel, admin_md))
    rotated = await integrations.RotateIntegrationSecret(
        I.RotateIntegrationSecretRequest(integration_id=iid, grace_seconds=1), metadata=md
    )
    assert rotated.webhook_secret and rotated.webhook_secret != made.webhook_secret
    assert rotated.integration.HasField("secret_rotated_at")
    resolved = await integrations.ResolveIntegration(
        I.ResolveIntegrationRequest(integration_id=iid), metadata=runtime
    )
    assert list(resolved.webhook_secrets) == [rotated.webhook_secret, made.webhook_secret]
    await asyncio.sleep(1.2)
    resolved = await integrations.ResolveIntegration(
        I.ResolveIntegrationRequest(integration_id=iid), metadata=runtime
    )
    assert list(resolved.webhook_secrets) == [rotated.webhook_secret]
    given = await integrations.RotateIntegrationSecret(
        I.RotateIntegrationSecretRequest(integration_id=iid, webhook_secret="chosen-by-me"),
        metadata=md,
    )
    assert given.webhook_secret == "chosen-by-me"


async def test_integrations_over_rest(http):
    made = await http.post(
        "/api/v1/integrations",
        json={"type": "openlineage", "displayName": "airflow", "settings": {}},
    )
    assert made.status_code == 200, made.text
    body = made.json()
    iid = body["integration"]["integrationId"]
    assert body["webhookSecret"] and body["integration"]["webhookPath"].endswith(iid)
    listed = await http.get("/api/v1/integrations")
    assert [i["integrationId"] for i in listed.json()["integrations"]] == [iid]
    assert body["webhookSecret"] not in listed.text
    patched = await http.patch(
        f"/api/v1/integrations/{iid}?updateMask=displayName,disabled",
        json={"displayName": "airflow prod", "disabled": True},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["integration"]["displayName"] == "airflow prod"
    assert patched.json()["integration"]["disabled"] is True
    bad = await http.post("/api/v1/integrations", json={"type": "nope"})
    assert bad.status_code == 400 and "integration.type" in bad.text
    gone = await http.delete(f"/api/v1/integrations/{iid}")
    assert gone.status_code == 200
    assert (await http.get(f"/api/v1/integrations/{iid}")).status_code == 404
