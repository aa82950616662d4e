"""The gateway's derivations from the descriptors: routes, request building, OpenAPI."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from lily.v1 import metadata_pb2

from api_gateway import openapi
from api_gateway.routes import TemplateError, compile_template, routes
from api_gateway.transcode import BadRequest, build_request


def _route(name: str):
    return next(r for r in routes() if r.method.name == name)


def test_templates_compile_with_variables_wildcards_and_verbs():
    request = metadata_pb2.GetMetadataRequest.DESCRIPTOR
    pattern, variables, literals = compile_template("/v1/{asset_id=assets/*}/x:do", request)
    found = pattern.fullmatch("/v1/assets/a%2Fb/x:do")
    assert found and variables == (("v0", "asset_id"),) and literals == 3
    assert found.group("v0") == "assets/a%2Fb"
    assert not pattern.fullmatch("/v1/assets/a/b/x:do")
    pattern, _, _ = compile_template("/v1/{asset_id=**}", request)
    assert pattern.fullmatch("/v1/a/b/c")
    with pytest.raises(TemplateError):
        compile_template("/v1/{nosuch}", request)
    with pytest.raises(TemplateError):
        compile_template("v1/x", request)


def test_path_variables_are_decoded_and_win_over_the_body():
    route = _route("UpdateTags")
    message = build_request(
        route,
        route.match("/api/v1/metadata/ab%20c/tags") or {},
        [],
        {"assetId": "from-body", "remove": ["a", "b"], "source": "TAG_SOURCE_USER"},
    )
    assert message.asset_id == "ab c" and list(message.remove) == ["a", "b"]
    assert message.source == 2


def test_query_parameters_map_nested_repeated_enum_and_well_known_fields():
    # UpdateMetadata bound without a body: every field comes from the query
    route = dataclasses.replace(_route("UpdateMetadata"), body="")
    message = build_request(
        route,
        {"asset_id": "a1"},
        [
            ("asset.description", "d"),
            ("asset.owners", "x"),
            ("asset.owners", "y"),
            ("asset.assetType", "ASSET_TYPE_VIEW"),
            ("asset.is_deleted", "true"),
            ("update_mask", "description,owners"),
            ("expectedVersion", "7"),
            ("sourceEventTime", "2026-01-02T03:04:05Z"),
            ("asset_id", "ignored: bound by the path"),
        ],
        None,
    )
    assert message.asset_id == "a1"
    assert (message.asset.description, list(message.asset.owners)) == ("d", ["x", "y"])
    assert message.asset.asset_type == 4 and message.asset.is_deleted
    assert list(message.update_mask.paths) == ["description", "owners"]
    assert message.expected_version == 7
    assert message.source_event_time.seconds == 1767323045
    for bad in (
        [("asset.nosuch", "1")],
        [("asset.owners.x", "1")],
        [("expectedVersion", "seven")],
        [("asset.isDeleted", "maybe")],
        [("asset.assetType", "ASSET_TYPE_NOPE")],
        [("expectedVersion", "1"), ("expectedVersion", "2")],
        [("asset.attributes", "x")],
    ):
        with pytest.raises(BadRequest):
            build_request(route, {"asset_id": "a1"}, bad, None)


def test_patch_without_a_mask_updates_what_the_body_names():
    route = _route("UpdateMetadata")
    body = {"description": "d", "data_source": "s"}
    message = build_request(route, {"asset_id": "a1"}, [], body)
    assert sorted(message.update_mask.paths) == ["data_source", "description"]


def test_enums_refuse_floats_and_booleans():
    route = _route("IngestMetadata")
    for bad in ({"assets": [{"assetType": 1.5}]}, {"assets": [{"assetType": True}]}):
        with pytest.raises(BadRequest):
            build_request(route, {}, [], bad)


def test_a_new_annotated_rpc_gets_a_route_and_an_openapi_operation_without_gateway_code():
    """A service the gateway has never seen, built at run time: its annotated method is
    routed and documented."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (
        "google/protobuf/descriptor.proto",
        "google/api/http.proto",
        "google/api/annotations.proto",
    ):
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor_pool.Default().FindFileByName(dependency).CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name="x/v1/echo.proto",
        package="x.v1",
        dependency=["google/api/annotations.proto"],
        syntax="proto3",
    )
    message = file.message_type.add(name="EchoRequest")
    message.field.add(name="text", number=1, type=9, label=1, json_name="text")
    service = file.service.add(name="EchoService")
    method = service.method.add(
        name="Echo", input_type=".x.v1.EchoRequest", output_type=".x.v1.EchoRequest"
    )
    method.options.ParseFromString(_http_option_bytes(pool, get="/api/v1/echo/{text}"))
    pool.Add(file)
    echo = pool.FindServiceByName("x.v1.EchoService")
    [route] = routes([echo])
    assert (route.verb, route.grpc_path) == ("GET", "/x.v1.EchoService/Echo")
    request = build_request(route, route.match("/api/v1/echo/hi") or {}, [], None)
    assert request.text == "hi"
    assert type(request) is GetMessageClass(echo.methods[0].input_type)
    doc = openapi.document([route])
    assert doc["paths"]["/api/v1/echo/{text}"]["get"]["operationId"] == "EchoService_Echo"


def _http_option_bytes(pool: descriptor_pool.DescriptorPool, **rule: str) -> bytes:
    from google.api import annotations_pb2, http_pb2

    options = descriptor_pb2.MethodOptions()
    options.Extensions[annotations_pb2.http].CopyFrom(http_pb2.HttpRule(**rule))
    return options.SerializeToString()


def test_headers_that_travel_as_grpc_metadata():
    from starlette.requests import Request

    from api_gateway.app import GatewaySettings, _Gateway

    gateway = _Gateway(GatewaySettings(target="127.0.0.1:1", timeout=7.0), routes())
    headers = [
        (b"authorization", b"Bearer t0k"),
        (b"x-lily-tenant", b"acme"),
        (b"x-request-id", b"r-1"),
        (b"grpc-metadata-x-custom", b"v"),
        (b"content-type", b"application/json"),
        (b"cookie", b"secret=1"),
        (b"grpc-timeout", b"2S"),
    ]
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": headers})
    metadata, timeout = gateway._metadata(request, _route("GetMetadata"))
    assert sorted(metadata) == [
        ("authorization", "Bearer t0k"),
        ("x-custom", "v"),
        ("x-lily-tenant", "acme"),
        ("x-request-id", "r-1"),
    ]
    assert timeout == 2.0
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert gateway._metadata(request, _route("GetMetadata"))[1] == 7.0  # the default deadline
    assert gateway._metadata(request, _route("WatchChanges"))[1] is None  # streams: none
