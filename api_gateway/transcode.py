"""HTTP request <-> protobuf message, as grpc-gateway and Envoy's transcoder do it.

A request message is built from one JSON object: the body (all of it for `body: "*"`, or under
one field), then the query parameters (dotted field paths, repeated by repeating the key; only
when the body is not "*"), then the path variables, later sources winning. protobuf's own
json_format parses it, so the canonical JSON mapping (lowerCamelCase or proto names, enums by
name or number, int64 as strings, well-known types in their JSON forms) holds everywhere, and
an unknown field is refused. Replies are rendered the same way, unpopulated fields included."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from api_gateway.routes import Route

# The standard mapping (google/rpc/code.proto; grpc-gateway's HTTPStatusFromCode).
HTTP_STATUS = {
    code_pb2.OK: 200,
    code_pb2.CANCELLED: 499,
    code_pb2.UNKNOWN: 500,
    code_pb2.INVALID_ARGUMENT: 400,
    code_pb2.DEADLINE_EXCEEDED: 504,
    code_pb2.NOT_FOUND: 404,
    code_pb2.ALREADY_EXISTS: 409,
    code_pb2.PERMISSION_DENIED: 403,
    code_pb2.UNAUTHENTICATED: 401,
    code_pb2.RESOURCE_EXHAUSTED: 429,
    code_pb2.FAILED_PRECONDITION: 400,
    code_pb2.ABORTED: 409,
    code_pb2.OUT_OF_RANGE: 400,
    code_pb2.UNIMPLEMENTED: 501,
    code_pb2.INTERNAL: 500,
    code_pb2.UNAVAILABLE: 503,
    code_pb2.DATA_LOSS: 500,
}
_UPDATE_MASK = "update_mask"


class BadRequest(Exception):
    """The HTTP request cannot become the RPC's request message (an INVALID_ARGUMENT)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}" if field else description)
        self.field = field
        self.description = description

    def status(self) -> status_pb2.Status:
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=self.field, description=self.description
                )
            ]
        )
        status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(self))
        status.details.add().Pack(detail)
        return status


def build_request(
    route: Route,
    path_vars: Mapping[str, str],
    query: Iterable[tuple[str, str]],
    body: Any,
) -> Message:
    """The request message for `route` from the decoded JSON `body` (None if empty), the query
    parameters and the path variables."""
    message = route.request_class()
    descriptor: Descriptor = route.method.input_type
    document: dict[str, Any] = {}
    if route.body == "*":
        if body is not None:
            if not isinstance(body, dict):
                raise BadRequest("", "the body must be a JSON object")
            document = body
    elif route.body:
        field = descriptor.fields_by_name[route.body]
        if body is not None:
            document[field.json_name] = body
        if route.verb == "PATCH" and _UPDATE_MASK in descriptor.fields_by_name:
            _default_update_mask(document, field, body, query)
    bound = set(path_vars)
    if route.body != "*":
        for key, value in query:
            _set(document, descriptor, key, value, from_query=True, bound=bound)
    for key, value in path_vars.items():
        _set(document, descriptor, key, value, from_query=False, bound=set())
    _check_enums(document, descriptor, "")
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise BadRequest("", str(exc)) from None
    return message


def _check_enums(value: Any, descriptor: Descriptor, path: str) -> None:
    """Enum values must be names or integers (json_format would take 1.5 or true as 1)."""
    if not isinstance(value, dict) or _is_wkt(descriptor):
        return
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is None:
            continue  # json_format refuses it
        where = f"{path}.{key}" if path else key
        if _is_map(field):
            field = message_of(field).fields_by_name["value"]
            items = list(item.values()) if isinstance(item, dict) else []
        else:
            items = item if field.is_repeated and isinstance(item, list) else [item]
        for one in items:
            if field.type == FieldDescriptor.TYPE_ENUM:
                if isinstance(one, bool) or not isinstance(one, str | int):
                    raise BadRequest(where, f"{one!r} is not a name or number of {field.enum_type}")
            elif field.message_type is not None:
                _check_enums(one, field.message_type, where)


def _default_update_mask(
    document: dict[str, Any], field: FieldDescriptor, body: Any, query: Iterable[tuple[str, str]]
) -> None:
    """PATCH without an update mask updates what the body names (grpc-gateway's rule)."""
    if any(key in (_UPDATE_MASK, "updateMask") for key, _ in query):
        return
    if field.message_type is not None and isinstance(body, dict) and body:
        names = {f.json_name: f.name for f in field.message_type.fields}
        document["updateMask"] = ",".join(
            _camel(names.get(key) or key) for key in body if key in names or key in names.values()
        )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _set(
    document: dict[str, Any],
    descriptor: Descriptor,
    key: str,
    value: str,
    *,
    from_query: bool,
    bound: set[str],
) -> None:
    """Sets the field at dotted path `key` (proto or JSON names) to the string `value`."""
    if from_query and key in bound:
        return  # bound by the path already
    names = key.split(".")
    target, message = document, descriptor
    for depth, name in enumerate(names):
        field = message.fields_by_name.get(name) or _by_json_name(message, name)
        if field is None:
            raise BadRequest(key, f"no such field in {message.full_name}")
        last = depth == len(names) - 1
        if not last:
            if field.message_type is None or _is_repeated(field) or _is_wkt(field.message_type):
                raise BadRequest(key, f"{name} has no fields to set")
            child = target.setdefault(field.json_name, {})
            if not isinstance(child, dict):
                raise BadRequest(key, f"{name} is set twice")
            target, message = child, field.message_type
            continue
        scalar = _scalar(field, value, key)
        if _is_repeated(field):
            if from_query:
                target.setdefault(field.json_name, []).append(scalar)
            else:
                target[field.json_name] = [scalar]
        elif from_query and field.json_name in target:
            raise BadRequest(key, "is given more than once")
        else:
            target[field.json_name] = scalar


def _by_json_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    for field in message.fields:
        if field.json_name == name:
            return field
    return None


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated and not _is_map(field)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def message_of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def _is_wkt(message: Descriptor) -> bool:
    return message.full_name.startswith("google.protobuf.")


def _scalar(field: FieldDescriptor, value: str, key: str) -> Any:
    """A query or path string as the JSON value json_format expects for this field."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise BadRequest(key, f"{value!r} is not a boolean")
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if _is_map(field) or not _is_wkt(message_of(field)):
            raise BadRequest(key, "a message field cannot be set from a query parameter")
        return value  # Timestamp, Duration, FieldMask, wrappers: their JSON string forms
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(value)
        except ValueError:
            raise BadRequest(key, f"{value!r} is not a number") from None
    if field.type == FieldDescriptor.TYPE_ENUM and value.lstrip("-").isdigit():
        return int(value)
    return value  # strings, bytes (base64), integers (json_format parses "12"), enum names


def render(message: Message) -> dict[str, Any]:
    """A reply message in the canonical JSON mapping, unpopulated fields included."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of a failed call: the server's own (with its details) if it sent
    one, else built from the code and message."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 500)
