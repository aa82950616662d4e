"""The REST routes, read from the google.api.http annotations of every lily.v1 service.

Nothing here names an RPC: a method gains a route by carrying the annotation in proto/. Path
templates follow google/api/http.proto: literal segments, `*`, `**`, `{field}` and
`{field=segments}` variables, and a custom verb after a colon (`/api/v1/metadata:search`)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import lily.v1
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

_VERBS = ("get", "put", "post", "delete", "patch")


class TemplateError(ValueError):
    """A path template in proto/ that this gateway cannot serve."""


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    method: MethodDescriptor
    verb: str  # upper case: GET, POST, ...
    template: str
    body: str  # "", "*" or a top-level field name
    response_body: str
    pattern: re.Pattern[str]
    variables: tuple[tuple[str, str], ...]  # (regex group, field path)
    literals: int  # literal segments: the more, the more specific

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def request_class(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return GetMessageClass(self.method.output_type)

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (field path -> decoded value) if `path` fits the template."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {field: unquote(found.group(group)) for group, field in self.variables}


def services() -> list[ServiceDescriptor]:
    """Every service of every lily.v1 module (imported here, so a new file needs no code)."""
    found: dict[str, ServiceDescriptor] = {}
    for info in pkgutil.iter_modules(lily.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"lily.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found[service.full_name] = service
    return [found[name] for name in sorted(found)]


def routes(service_list: list[ServiceDescriptor] | None = None) -> list[Route]:
    """All routes, most specific first (more literal segments, then fewer variables)."""
    out = [
        route
        for service in (service_list if service_list is not None else services())
        for method in service.methods
        for route in _method_routes(method)
    ]
    return sorted(out, key=lambda r: (-r.literals, len(r.variables), r.template))


def _method_routes(method: MethodDescriptor) -> Iterator[Route]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return
    if method.client_streaming:
        raise TemplateError(f"{method.full_name}: client-streaming RPCs cannot have HTTP routes")
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    for binding in (rule, *rule.additional_bindings):
        kind = binding.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            verb, template = binding.custom.kind.upper(), binding.custom.path
        else:
            verb, template = kind.upper(), getattr(binding, kind)
        pattern, variables, literals = compile_template(template, method.input_type)
        _check_body(method, binding.body)
        yield Route(
            method,
            verb,
            template,
            binding.body,
            binding.response_body,
            pattern,
            variables,
            literals,
        )


def _check_body(method: MethodDescriptor, body: str) -> None:
    if body not in ("", "*") and body not in method.input_type.fields_by_name:
        raise TemplateError(f"{method.full_name}: body {body!r} is not a field of the request")


def compile_template(
    template: str, message: Descriptor
) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...], int]:
    """A path template as a regex, its variables (group, field path) and its literal count."""
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    path, verb = template, ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.split(":", 1)[1]:
        path, verb = template[: -(len(last.split(":", 1)[1]) + 1)], last.split(":", 1)[1]
    regex, literals = "", 0
    variables: list[tuple[str, str]] = []
    for segment in _segments(path[1:]):
        if segment.startswith("{"):
            field, _, inner = segment[1:-1].partition("=")
            _check_field(field, message, template)
            group = f"v{len(variables)}"
            variables.append((group, field))
            regex += f"/(?P<{group}>{_segments_regex(inner or '*')})"
        else:
            regex += "/" + _segments_regex(segment)
            literals += segment not in ("*", "**")
    if verb:
        regex += ":" + re.escape(verb)
        literals += 1
    return re.compile(regex), tuple(variables), literals


def _segments(path: str) -> list[str]:
    """Splits on '/' outside braces."""
    out, depth, current = [], 0, ""
    for ch in path:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "/" and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    return out


def _segments_regex(segments: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append(r"[^/:]+")
        elif segment == "**":
            parts.append(r"[^:]+")
        elif segment and "{" not in segment and "}" not in segment:
            parts.append(re.escape(segment))
        else:
            raise TemplateError(f"bad path segment {segment!r}")
    return "/".join(parts)


def _check_field(path: str, message: Descriptor, template: str) -> None:
    for name in path.split("."):
        field = message.fields_by_name.get(name)
        if field is None:
            raise TemplateError(f"{template}: {path!r} is not a field of {message.full_name}")
        if field.message_type is not None:
            message = field.message_type
