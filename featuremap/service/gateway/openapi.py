"""The gateway's OpenAPI document, generated from the proto when the server starts.

Nothing here is written by hand about the API: the paths are the methods'
``google.api.http`` rules, the schemas the messages' descriptors (JSON names,
types as protobuf's JSON mapping writes them, enums by name, unknown fields
refused: ``additionalProperties: false``), and the descriptions the proto's
own comments, read from ``featuremap.proto`` as the package ships it.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

import featuremap
from featuremap.v1 import featuremap_pb2 as pb

from .messages import _is_map, _is_repeated, image_fields
from .rules import Route, routes

_INTEGERS = {FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_SINT32: "int32",
             FieldDescriptor.TYPE_SFIXED32: "int32", FieldDescriptor.TYPE_UINT32: "uint32",
             FieldDescriptor.TYPE_FIXED32: "uint32"}
_LONGS = {FieldDescriptor.TYPE_INT64: "int64", FieldDescriptor.TYPE_SINT64: "int64",
          FieldDescriptor.TYPE_SFIXED64: "int64", FieldDescriptor.TYPE_UINT64: "uint64",
          FieldDescriptor.TYPE_FIXED64: "uint64"}
_ERROR = {"type": "object", "description": "A gRPC status as JSON (google.rpc.Status).", "properties": {
    "code": {"type": "integer", "description": "The gRPC status code's number (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...)."},
    "message": {"type": "string", "description": "What went wrong and what to fix."},
    "details": {"type": "array", "items": {"type": "object"},
                "description": "google.rpc.ErrorInfo (reason: the code's name), and google.rpc.BadRequest naming "
                               "the field at fault where there is one."}}}


def proto_comments(text: str, package: str) -> dict[str, str]:
    """Each element's leading comment in a .proto file, by full name (``featuremap.v1.MatchConfig.stride``)."""
    comments: dict[str, str] = {}
    stack: list[str | None] = []  # names of the enclosing messages, enums and services (None: other braces)
    pending: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            pending.append(line[2:].strip())
            continue
        code = re.sub(r'"[^"]*"', '""', line.split("//")[0])
        scope = [package, *(name for name in stack if name)]
        element = re.match(r"(message|enum|service)\s+(\w+)", code)
        member = (re.match(r"rpc\s+(\w+)", code) or re.match(r"(?:repeated\s+|optional\s+)?(?:map<[^>]*>|[\w.]+)\s+(\w+)\s*=", code)
                  or re.match(r"(\w+)\s*=\s*-?\d+", code))
        if element:
            name = element.group(2)
            if pending:
                comments[".".join([*scope, name])] = " ".join(pending)
            stack.append(name)
            opened = code.count("{") - 1
        else:
            if member and pending:
                comments[".".join([*scope, member.group(1)])] = " ".join(pending)
            opened = code.count("{")
        for _ in range(opened):
            stack.append(None)
        for _ in range(code.count("}")):
            if stack:
                stack.pop()
        pending = []
    return comments


def _comments() -> dict[str, str]:
    try:
        text = (resources.files("featuremap.v1") / "featuremap.proto").read_text()
    except (FileNotFoundError, OSError):
        return {}
    return proto_comments(text, pb.DESCRIPTOR.package)


class _Schemas:
    """components.schemas, filled as messages and enums are referred to."""

    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, Any] = {}

    def ref(self, descriptor: Descriptor | EnumDescriptor) -> dict[str, Any]:
        if descriptor.full_name == "google.protobuf.Timestamp":
            return {"type": "string", "format": "date-time", "description": "RFC 3339, e.g. 2026-01-01T12:00:00Z"}
        name = descriptor.full_name
        if name not in self.schemas:
            self.schemas[name] = {}  # placed first: a message may refer to itself
            self.schemas[name] = (self._enum(descriptor) if isinstance(descriptor, EnumDescriptor)
                                  else self._message(descriptor))
        return {"$ref": f"#/components/schemas/{name}"}

    def _described(self, schema: dict[str, Any], full_name: str) -> dict[str, Any]:
        if full_name in self.comments:
            schema["description"] = self.comments[full_name]
        return schema

    def _enum(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        values = [value.name for value in descriptor.values]
        said = {value.name: self.comments.get(f"{descriptor.full_name}.{value.name}") for value in descriptor.values}
        lines = [f"{name}: {text}" for name, text in said.items() if text]
        schema = self._described({"type": "string", "enum": values}, descriptor.full_name)
        if lines:
            schema["description"] = " ".join([schema.get("description", ""), *lines]).strip()
        return schema

    def _message(self, descriptor: Descriptor) -> dict[str, Any]:
        properties = {field.json_name: self.field(field) for field in descriptor.fields}
        return self._described({"type": "object", "properties": properties, "additionalProperties": False},
                               descriptor.full_name)

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if _is_map(field):
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value)}
        elif _is_repeated(field):
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
        if "$ref" in schema:  # OpenAPI 3.0: no siblings beside $ref
            schema = {"allOf": [schema]}
        return self._described(schema, field.full_name)

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return self.ref(field.enum_type)
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return {"type": "number", "format": "double" if kind == FieldDescriptor.TYPE_DOUBLE else "float"}
        if kind in _INTEGERS:
            return {"type": "integer", "format": _INTEGERS[kind]}
        if kind in _LONGS:
            return {"type": "string", "format": _LONGS[kind], "description": "a 64-bit integer, as a string"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}


def _query(descriptor: Descriptor, schemas: _Schemas, skip: set[str], prefix: str = "") -> list[dict[str, Any]]:
    """Query parameters: the request's fields as dotted JSON paths, those the path or body sets left out."""
    found = []
    for field in descriptor.fields:
        path = prefix + field.json_name
        if path in skip or field.message_type is pb.Image.DESCRIPTOR:
            continue
        if field.message_type is not None and not _is_map(field) and \
                not field.message_type.full_name.startswith("google.protobuf."):
            found += _query(field.message_type, schemas, skip, path + ".")
            continue
        schema = schemas.field(field)
        name = f"{path}[key]" if _is_map(field) else path
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False,
                                     "schema": {k: v for k, v in schema.items() if k != "description"}}
        if "description" in schema:
            parameter["description"] = schema["description"]
        if _is_repeated(field) and not _is_map(field):
            parameter["explode"] = True
        found.append(parameter)
    return found


def _operation(route: Route, schemas: _Schemas, comments: dict[str, str]) -> dict[str, Any]:
    method = route.method
    request = method.input_type
    operation: dict[str, Any] = {"operationId": method.name, "tags": ["FeatureMapService"],
                                 "description": comments.get(method.full_name, "")}
    parameters = [{"name": variable, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": f"sets {variable} to {_variable_pattern(route.template, variable)}"}
                  for variable in route.variables]
    if route.streaming:
        operation["description"] += (" A WebSocket (this GET with Upgrade: websocket): send StreamMatchRequests "
                                     "as binary protobuf or JSON text messages; each answer is a text message, a "
                                     "StreamMatchResponse as JSON. A browser sends its token as the subprotocol "
                                     "bearer.<token in base64url>, beside featuremap.v1.")
        operation["parameters"] = parameters
        operation["responses"] = {"101": {"description": "Switching to the WebSocket protocol."},
                                  "default": {"description": "An error.", "content": {
                                      "application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}}
        return operation
    skip = set(route.variables)
    if route.body == "*":
        skip |= {field.json_name for field in request.fields}
    elif route.body:
        skip.add(request.fields_by_name[route.body].json_name)
    if route.body:
        target = request if route.body == "*" else request.fields_by_name[route.body].message_type
        uploads = image_fields(target)
        content: dict[str, Any] = {"application/json": {"schema": schemas.ref(target)}}
        if uploads:
            form = {name: {"type": "string", "format": "binary"} for name in uploads}
            form["(fields)"] = {"type": "string", "description": "any other part names a request field, as a query "
                                                                 "parameter does"}
            content["multipart/form-data"] = {"schema": {"type": "object", "properties": form}}
            content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
            upload = next(iter(uploads.values()))
            operation["description"] += (f" The body: the {target.name} as JSON; or an image file (image/jpeg, "
                                         f"image/png, image/webp) as {upload}, with the other fields as query "
                                         "parameters; or a multipart form whose file parts are "
                                         f"{', '.join(uploads)} and whose other parts name fields.")
        operation["requestBody"] = {"required": True, "content": content}
        if route.body == "*":  # an upload's other fields come as query parameters
            parameters += _query(request, schemas, set(route.variables))
    parameters += _query(request, schemas, skip) if route.body != "*" else []
    operation["parameters"] = parameters
    operation["responses"] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": schemas.ref(method.output_type)}}},
        "default": {"description": "An error: the gRPC status as HTTP (400, 401, 403, 404, 409, 413, 415, 429, 503, "
                                   "504).", "content": {"application/json": {
                                       "schema": {"$ref": "#/components/schemas/Status"}}}}}
    return operation


def openapi_path(template: str) -> str:
    """An HTTP rule's path template as an OpenAPI path: ``/v1/{name=templates/*}`` is
    ``/v1/templates/{name}`` (OpenAPI's variables hold one segment; the rest are literal)."""
    return re.sub(r"\{([\w.]+)=([^}]*)\}", lambda m: m.group(2).replace("*", "{" + m.group(1) + "}", 1),
                  template)


def _variable_pattern(template: str, variable: str) -> str:
    found = re.search(r"\{" + re.escape(variable) + r"=([^}]*)\}", template)
    return found.group(1).replace("*", "{" + variable + "}", 1) if found else "{" + variable + "}"


def openapi_document() -> bytes:
    """The OpenAPI 3.0 document of the gateway, as JSON bytes."""
    comments = _comments()
    schemas = _Schemas(comments)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes():
        path = openapi_path(route.template)
        verb = "get" if route.streaming else route.verb.lower()
        paths.setdefault(path, {})[verb] = _operation(route, schemas, comments)
    schemas.schemas["Status"] = _ERROR
    document = {
        "openapi": "3.0.3",
        "info": {"title": "featuremap", "version": featuremap.__version__,
                 "description": comments.get(pb.DESCRIPTOR.services_by_name["FeatureMapService"].full_name, "")
                 + " Generated from featuremap.proto (package featuremap.v1): its google.api.http rules, "
                   "messages and comments."},
        "paths": paths,
        "components": {"schemas": schemas.schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "Where the server has a tokens file."}}},
        "security": [{}, {"bearer": []}],
    }
    return json.dumps(document, indent=1).encode()
