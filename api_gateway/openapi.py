"""The OpenAPI 3 document of the gateway, built from the same descriptors as its routes.

Schemas follow the protobuf canonical JSON mapping exactly as the gateway renders it: fields by
their lowerCamelCase JSON names, 64-bit integers as strings, enums as their names, well-known
types in their JSON forms, unknown fields refused (additionalProperties: false). Every
operation documents its success reply and, as `default`, the google.rpc.Status error body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
)
from google.rpc import status_pb2
from lily.v1 import access_pb2 as access_pb

from api_gateway.routes import Route
from api_gateway.transcode import message_of

_STATUS_REF = {"$ref": "#/components/schemas/google.rpc.Status"}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
}
# Well-known types: their JSON forms (google/protobuf/*.proto).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64", "minimum": 0},
    "google.protobuf.Int64Value": _INT64,
    "google.protobuf.UInt64Value": _UINT64,
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
}
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "A token from Lily's issuer (POST /api/v1/auth/token) or a trusted OIDC "
    "issuer, or an API key (lily_...). The tenant of every call is the credential's.",
}


def document(
    routes: Sequence[Route], *, title: str = "Lily", version: str = "v1"
) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    _message(_status_descriptor(), schemas)
    for route in routes:
        paths.setdefault(route.template, {})[route.verb.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "REST/JSON for Lily's gRPC services, derived from their "
            "google.api.http annotations. Errors are google.rpc.Status objects.",
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": BEARER},
        },
    }


def _is_open(method: MethodDescriptor) -> bool:
    """Whether anyone may call the RPC without credentials (its lily.v1.access option)."""
    options = method.GetOptions()
    return options.HasExtension(access_pb.access) and options.Extensions[access_pb.access].open


def _status_descriptor() -> Descriptor:
    return status_pb2.Status.DESCRIPTOR


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    method = route.method
    request = method.input_type
    bound = {field for _, field in route.variables}
    parameters: list[dict[str, Any]] = []
    for _, field_path in route.variables:
        parameters.append(
            {
                "name": field_path,
                "in": "path",
                "required": True,
                "schema": _field(_resolve(request, field_path), schemas),
            }
        )
    if route.body != "*":
        skip = bound | ({route.body} if route.body else set())
        parameters += _query(request, "", skip, schemas, depth=0)
    operation: dict[str, Any] = {
        "operationId": f"{method.containing_service.name}_{method.name}",
        "tags": [method.containing_service.name],
        "parameters": parameters,
        "responses": {
            "200": _success(route, schemas),
            "default": {
                "description": "An error: the google.rpc.Status, with the standard HTTP status.",
                "content": {"application/json": {"schema": _STATUS_REF}},
            },
        },
    }
    if _is_open(method):
        operation["security"] = []
    if route.body:
        schema = (
            _message(request, schemas)
            if route.body == "*"
            else _field(request.fields_by_name[route.body], schemas)
        )
        operation["requestBody"] = {
            "required": route.body != "*",
            "content": {"application/json": {"schema": schema}},
        }
    return operation


def _success(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    reply = route.method.output_type
    if route.server_streaming:
        return {
            "description": "Server-Sent Events: one `data:` line per "
            f"{reply.full_name} (JSON); a failure ends the stream with an `error` event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    schema = (
        _field(reply.fields_by_name[route.response_body], schemas)
        if route.response_body
        else _message(reply, schemas)
    )
    return {"description": reply.full_name, "content": {"application/json": {"schema": schema}}}


def _query(
    message: Descriptor, prefix: str, skip: set[str], schemas: dict[str, Any], depth: int
) -> list[dict[str, Any]]:
    """Query parameters for the fields not bound by the path or body: scalars, enums and
    well-known types by dotted JSON name; repeated ones by repeating the key."""
    out: list[dict[str, Any]] = []
    for field in message.fields:
        if field.name in skip and not prefix:
            continue
        name = f"{prefix}{field.json_name}"
        if _is_map(field):
            continue
        if field.message_type is not None and field.message_type.full_name not in _WELL_KNOWN:
            if not field.is_repeated and depth < 3:
                out += _query(field.message_type, f"{name}.", set(), schemas, depth + 1)
            continue
        if field.message_type is not None and field.message_type.full_name in (
            "google.protobuf.Struct",
            "google.protobuf.Value",
            "google.protobuf.ListValue",
            "google.protobuf.Any",
        ):
            continue
        parameter: dict[str, Any] = {"name": name, "in": "query", "schema": _field(field, schemas)}
        if field.is_repeated:
            parameter.update(style="form", explode=True)
        out.append(parameter)
    return out


def _resolve(message: Descriptor, path: str) -> FieldDescriptor:
    *parents, last = path.split(".")
    for name in parents:
        message = message_of(message.fields_by_name[name])
    return message.fields_by_name[last]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if _is_map(field):
        value = message_of(field).fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, schemas)}
    single = _single(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum(field.enum_type, schemas)
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return _message(message_of(field), schemas)
    return dict(_SCALARS[field.type])


def _enum(enum: EnumDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if enum.full_name not in schemas:
        schemas[enum.full_name] = {"type": "string", "enum": [v.name for v in enum.values]}
    return {"$ref": f"#/components/schemas/{enum.full_name}"}


def _message(message: Descriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if message.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[message.full_name])
    ref = {"$ref": f"#/components/schemas/{message.full_name}"}
    if message.full_name in schemas:
        return ref
    schemas[message.full_name] = {}  # placeholder: recursive messages refer to it
    schemas[message.full_name] = {
        "type": "object",
        "properties": {f.json_name: _field(f, schemas) for f in message.fields},
        "additionalProperties": False,
    }
    return ref
