"""The REST gateway in front of a running core: every annotated RPC, the JSON mapping, headers,
Server-Sent Events and refusals."""

from __future__ import annotations

import asyncio
import re

import httpx
import orjson
import pytest

from api_gateway.app import GatewaySettings, create_app
from api_gateway.routes import routes
from core.domain.rules import asset_id_for
from core.stack import free_port
from tests.helpers import eventually

NO_ASSET = "0" * 32


def _url(template: str) -> str:
    return re.sub(r"\{[^}]+\}", NO_ASSET, template)


async def test_every_annotated_rpc_is_reachable(http: httpx.AsyncClient):
    """Walks every route in the descriptors: each one reaches the core (which answers with its
    request id, or for a stream its live-subscription header), none is a gateway 404/405."""
    found = routes()
    assert len(found) >= 13
    for route in found:
        body = {} if route.body else None
        if route.server_streaming:
            async with http.stream(route.verb, _url(route.template)) as response:
                assert response.status_code == 200, route.template
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["grpc-metadata-x-lily-watching"] == "1"
            continue
        response = await http.request(route.verb, _url(route.template), json=body)
        assert response.headers.get("x-request-id"), (route.verb, route.template, response.text)
        assert response.status_code < 500, (route.template, response.text)
        if response.status_code != 200:
            status = response.json()
            assert status["code"] != 0 and status["message"], route.template


async def test_the_rest_surface_round_trips_an_asset(http: httpx.AsyncClient, tenant: str):
    qn = "snowflake://acct/db/sales/orders"
    ingest = await http.post(
        "/api/v1/metadata",
        json={
            "assets": [
                {
                    "qualifiedName": qn,
                    "assetType": "ASSET_TYPE_TABLE",
                    "description": "orders",
                    "owners": ["data-eng"],
                    "attributes": {"rows": "10"},
                    "sourceEventTime": "2026-01-02T03:04:05Z",
                },
                # proto field names are accepted too, and enum numbers
                {"qualified_name": f"{qn}/id", "asset_type": 5, "parent_qualified_name": qn},
            ]
        },
    )
    assert ingest.status_code == 200, ingest.text
    first, second = ingest.json()["results"]
    asset_id = asset_id_for(tenant, qn)
    assert first["assetId"] == asset_id
    assert (first["outcome"], first["version"]) == ("INGEST_OUTCOME_CREATED", "1")  # int64: str
    assert (second["outcome"], second["consistency"]) == (
        "INGEST_OUTCOME_ACCEPTED",
        "CONSISTENCY_CLASS_EVENTUAL",
    )
    got = (await http.get(f"/api/v1/metadata/{asset_id}")).json()["asset"]
    assert (got["qualifiedName"], got["owners"], got["attributes"]) == (
        qn,
        ["data-eng"],
        {"rows": "10"},
    )
    assert got["sourceEventTime"] == "2026-01-02T03:04:05Z"
    looked = await http.get("/api/v1/metadata:lookup", params={"qualified_name": qn})
    assert looked.json()["asset"]["assetId"] == asset_id

    # PATCH: update mask from the query, or inferred from the body's fields
    patched = await http.patch(
        f"/api/v1/metadata/{asset_id}",
        params={"updateMask": "description", "expectedVersion": "1"},
        json={"description": "all orders", "name": "ignored: not in the mask"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["asset"]["description"] == "all orders"
    assert patched.json()["asset"]["name"] != "ignored: not in the mask"
    inferred = await http.patch(f"/api/v1/metadata/{asset_id}", json={"dataSource": "snowflake"})
    assert inferred.json()["changedFields"] == ["data_source"], inferred.text
    stale = await http.patch(
        f"/api/v1/metadata/{asset_id}", params={"expectedVersion": "1"}, json={"name": "x"}
    )
    assert stale.status_code == 409  # ABORTED
    info = [d for d in stale.json()["details"] if d["@type"].endswith("ErrorInfo")]
    assert info and info[0]["metadata"]["current_version"] == "3"

    tags = await http.post(
        f"/api/v1/metadata/{asset_id}/tags",
        json={"add": [{"name": "PII"}], "source": "TAG_SOURCE_USER"},
    )
    assert tags.json()["tagsAdded"] == ["PII"], tags.text
    issue = await http.post(
        f"/api/v1/metadata/{asset_id}/issues",
        json={"source": "montecarlo", "externalId": "mc-1", "title": "freshness", "severity": 2},
    )
    assert issue.status_code == 200, issue.text
    issues = await http.get(f"/api/v1/metadata/{asset_id}/issues")
    assert [i["externalId"] for i in issues.json()["issues"]] == ["mc-1"]
    audit = (await http.get(f"/api/v1/metadata/{asset_id}/audit", params={"pageSize": 2})).json()
    assert len(audit["entries"]) == 2 and audit["nextPageToken"]
    found = (
        await http.get(
            "/api/v1/metadata:search", params={"assetType": "ASSET_TYPE_TABLE", "tag": "PII"}
        )
    ).json()
    assert [a["assetId"] for a in found["assets"]] == [asset_id]
    deleted = await http.delete(f"/api/v1/metadata/{asset_id}")
    assert deleted.json()["asset"]["isDeleted"] is True
    assert (await http.get(f"/api/v1/metadata/{asset_id}")).status_code == 404
    again = await http.get(f"/api/v1/metadata/{asset_id}", params={"includeDeleted": "true"})
    assert again.status_code == 200

    job = (await http.post("/api/v1/metadata/bulk", json={"description": "nightly"})).json()
    job_id = job["job"]["jobId"]
    got_job = (await http.get(f"/api/v1/metadata/bulk/{job_id}")).json()["job"]
    assert got_job["state"] == "BULK_JOB_STATE_OPEN" and got_job["accepted"] == "0"


async def test_headers_carry_through_both_ways(http: httpx.AsyncClient, event_log, tenant):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await http.post(
        "/api/v1/metadata",
        json={"assets": [{"qualifiedName": "pg://hdr/t", "assetType": "ASSET_TYPE_TABLE"}]},
        headers={
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            "x-request-id": "req-from-the-client",
            "x-lily-tenant": tenant,
        },
    )
    assert response.status_code == 200
    # the core's trailers come back as headers (grpc-gateway's names), its request id plainly
    assert response.headers["x-request-id"] == "req-from-the-client"
    assert response.headers["grpc-trailer-x-request-id"] == "req-from-the-client"
    events = await eventually(lambda: _events(event_log))
    _, event, headers = events[0]
    assert trace_id in headers["traceparent"]  # the trace went on through the core
    assert event.actor == f"admin@{tenant}"  # Authorization became gRPC metadata
    other = await http.get("/api/v1/metadata:search", headers={"x-lily-tenant": tenant + "x"})
    assert other.status_code == 403  # so did x-lily-*: naming another tenant is refused
    # a client timeout becomes the call's deadline (seen on a stream that would never end)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with http.stream(
        "GET", "/api/v1/metadata:watch", headers={"grpc-timeout": "500m"}
    ) as stream:
        text = (await stream.aread()).decode()
    assert "event: error" in text and '"code":4' in text, text  # DEADLINE_EXCEEDED
    assert loop.time() - started < 5
    bad = await http.get(f"/api/v1/metadata/{NO_ASSET}", headers={"grpc-timeout": "soon"})
    assert bad.status_code == 400


async def _events(event_log):
    return event_log.events("asset.created")


async def test_watch_is_served_as_server_sent_events(http: httpx.AsyncClient, stack):
    import nats

    nc = await nats.connect(stack[1])
    js = nc.jetstream()

    async def consumers() -> int:
        return (await js.stream_info("LILY_CHANGES")).state.consumer_count

    try:
        async with http.stream(
            "GET",
            "/api/v1/metadata:watch",
            params=[("assetTypes", "ASSET_TYPE_TABLE"), ("tags", "PII"), ("tags", "GDPR")],
        ) as stream:
            assert stream.status_code == 200
            watching = await consumers()
            lines = stream.aiter_lines()
            for qn, tag in (("pg://sse/a", "other"), ("pg://sse/b", "GDPR")):
                await http.post(
                    "/api/v1/metadata",
                    json={
                        "assets": [{"qualifiedName": qn, "assetType": 3, "tags": [{"name": tag}]}]
                    },
                )
            line = await asyncio.wait_for(_data_line(lines), 5)
            event = orjson.loads(line[len("data: ") :])["event"]
            assert (event["qualifiedName"], event["tags"]) == ("pg://sse/b", ["GDPR"])
        # the client left: the gateway cancels the gRPC stream and its consumer goes away
        await eventually(lambda: _at_most(consumers, watching - 1), timeout=5)
    finally:
        await nc.close()


async def _data_line(lines) -> str:
    async for line in lines:
        if line.startswith("data: "):
            return line
    raise AssertionError("the stream ended")


async def _at_most(count, n: int) -> bool:
    return await count() <= n


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "http_status", "code"),
    [
        ("POST", "/api/v1/metadata", b"{not json", {}, 400, 3),
        ("POST", "/api/v1/metadata", b'{"assets": [], "surprise": 1}', {}, 400, 3),
        ("POST", "/api/v1/metadata", b'{"assets": [{"assetType": 1.5}]}', {}, 400, 3),
        ("POST", "/api/v1/metadata", b'{"assets": [{"qualifiedName": 12}]}', {}, 400, 3),
        ("POST", "/api/v1/metadata", b'{"closeBulkJob": "yes"}', {}, 400, 3),
        ("POST", "/api/v1/metadata", b'{"assets": "nope"}', {}, 400, 3),
        ("POST", "/api/v1/metadata", b"[1, 2]", {}, 400, 3),
        ("POST", "/api/v1/metadata", b"<a/>", {"content-type": "application/xml"}, 400, 3),
        ("GET", "/api/v1/metadata:search?pageSize=many", b"", {}, 400, 3),
        ("GET", "/api/v1/metadata:search?nosuch=1", b"", {}, 400, 3),
        ("GET", "/api/v1/metadata:search?includeDeleted=maybe", b"", {}, 400, 3),
        ("GET", "/api/v1/nowhere", b"", {}, 404, 5),
        ("PUT", "/api/v1/metadata", b"{}", {}, 405, 12),
    ],
)
async def test_bad_requests_get_the_right_4xx_and_a_status(
    http: httpx.AsyncClient, method, path, content, headers, http_status, code
):
    response = await http.request(method, path, content=content, headers=headers)
    assert response.status_code == http_status, response.text
    status = response.json()
    assert status["code"] == code and status["message"]
    if http_status == 405:
        assert response.headers["allow"] == "POST"


async def test_a_body_over_the_limit_is_refused_with_413(gateway: str, md):
    async with httpx.AsyncClient(base_url=gateway, headers=dict(md)) as client:
        big = b'{"assets": [{"description": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
        response = await client.post("/api/v1/metadata", content=big)
        assert response.status_code == 413
        assert response.json()["code"] == 8


async def test_a_core_that_is_down_gets_a_prompt_503():
    app = create_app(GatewaySettings(target=f"127.0.0.1:{free_port()}"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.get(
            f"/api/v1/metadata/{NO_ASSET}", headers={"authorization": "Bearer x"}
        )
        assert response.status_code == 503 and response.json()["code"] == 14
        assert loop.time() - started < 5


async def test_openapi_document_is_served(http: httpx.AsyncClient):
    doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {f"{r.method.containing_service.name}_{r.method.name}" for r in routes()} == operations
    assert "google.rpc.Status" in doc["components"]["schemas"]


async def test_the_gateway_socket_turns_nagle_off(lily):
    """A listening socket made without IPPROTO_TCP left Nagle on for every connection, and each
    keep-alive reply waited ~40 ms for a delayed ACK (found by scripts/bench_gateway.py)."""
    import socket

    from api_gateway.server import serve

    running = await serve(GatewaySettings(target=lily.address), "127.0.0.1", 0)
    try:
        assert running.socket.proto == socket.IPPROTO_TCP
        assert running.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        await running.stop()


async def test_any_content_type_is_read_as_json(http: httpx.AsyncClient):
    """As grpc-gateway does: `curl -d` sends application/x-www-form-urlencoded."""
    response = await http.post(
        "/api/v1/metadata",
        content=b'{"assets": [{"qualifiedName": "pg://form/t", "assetType": "ASSET_TYPE_TABLE"}]}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["results"][0]["outcome"] == "INGEST_OUTCOME_CREATED"


async def test_stock_oauth2_clients_get_tokens_with_a_form_body_or_basic_auth(
    http: httpx.AsyncClient, gateway: str
):
    made = await http.post(
        "/api/v1/credentials",
        json={"credential": {"kind": "CREDENTIAL_KIND_CLIENT", "roles": ["viewer"]}},
    )
    assert made.status_code == 200, made.text
    client_id, secret = made.json()["credential"]["credentialId"], made.json()["secret"]
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as anon:  # no credentials
        form = await anon.post(  # client_secret_post, form-encoded (RFC 6749 4.4.2)
            "/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
            },
        )
        assert form.status_code == 200, form.text
        assert form.json()["token_type"] == "Bearer" and form.json()["expires_in"] > 0
        basic = await anon.post(  # client_secret_basic (RFC 6749 2.3.1)
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        )
        assert basic.status_code == 200, basic.text
        token = basic.json()["access_token"]
        who = await anon.get("/api/v1/auth/validate", headers={"Authorization": f"Bearer {token}"})
        assert who.status_code == 200 and who.json()["principal"]["roles"] == ["viewer"]
        wrong = await anon.post(
            "/api/v1/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, "x")
        )
        assert wrong.status_code == 401
        twice = await anon.post(
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials", "client_secret": secret},
            auth=(client_id, secret),
        )
        assert twice.status_code == 400
        bad_form = await anon.post(
            "/api/v1/auth/token",
            content=b"grant_type=client_credentials&&=%ff",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert bad_form.status_code == 400
        assert "form" in bad_form.json()["message"]
