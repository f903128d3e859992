"""Request messages from HTTP parts, and response messages as JSON.

Protobuf's JSON mapping throughout (``google.protobuf.json_format``): fields
by their JSON names (``topK``; the proto names, ``top_k``, are accepted too),
enums by name, bytes as base64, 64-bit integers as strings. A request is
built from, in turn, the path's variables, the body (JSON, a raw image, or a
multipart form) and the query string; a field named that the message does
not have is refused naming it, before anything is called.

Query parameters and form fields name a request field by its path
(``config.peaks.topK=3``, repeated fields by repeating the parameter, map
entries as ``template.labels[site]=gate``); a name that is not a field of the
request is looked for one level down, so ``topK`` is not enough but
``peaks.topK`` and ``templates`` are (``config.peaks.topK``,
``config.templates``), as ``displayName`` is ``template.displayName``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from featuremap.v1 import featuremap_pb2 as pb

from .statuses import HttpError

_IMAGE = pb.Image.DESCRIPTOR


def field_error(path: str, message: str) -> HttpError:
    return HttpError(grpc.StatusCode.INVALID_ARGUMENT, message, field=path)


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 5+ calls it is_repeated; older ones compare the label.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _well_known(descriptor: Descriptor) -> bool:
    """Timestamp and the like have JSON forms of their own (a string), not objects of fields."""
    return descriptor.full_name.startswith("google.protobuf.")


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    for field in descriptor.fields:
        if name in (field.json_name, field.name):
            return field
    return None


def _names(descriptor: Descriptor) -> str:
    return ", ".join(field.json_name for field in descriptor.fields)


def check_fields(value: Any, descriptor: Descriptor, path: str = "") -> None:
    """Refuse, naming it, a field of a JSON object that ``descriptor``'s message does not have.

    Also refuses a message field that is not a JSON object and a repeated one
    that is not an array (protobuf's JSON parser lets some through); every
    other value is left to the parser.
    """
    if _well_known(descriptor):
        return
    if not isinstance(value, dict):
        raise field_error(path.rstrip(".") or "(body)",
                          f"{path.rstrip('.') or 'the body'} must be a JSON object ({descriptor.name})")
    for key, item in value.items():
        field = _field(descriptor, key)
        if field is None:
            raise field_error(f"{path}{key}", f"unknown field {path}{key!s}: {descriptor.name} has "
                                              f"{_names(descriptor)}")
        if item is None or field.message_type is None:
            continue
        if _is_map(field):
            values = field.message_type.fields_by_name["value"]
            if not isinstance(item, dict):
                raise field_error(f"{path}{key}", f"{path}{key} must be a JSON object (a map)")
            if values.message_type is not None:
                for entry, member in item.items():
                    check_fields(member, values.message_type, f"{path}{key}[{entry}].")
        elif _is_repeated(field):
            if not isinstance(item, list):
                raise field_error(f"{path}{key}", f"{path}{key} must be a JSON array")
            for index, member in enumerate(item):
                check_fields(member, field.message_type, f"{path}{key}[{index}].")
        else:
            check_fields(item, field.message_type, f"{path}{key}.")


def parse_into(value: Any, message: Message, where: str = "") -> None:
    """Merge a JSON value into ``message``, or into its message field at ``where`` (proto names, dotted):
    unknown fields refused by name, then protobuf's parser."""
    for part in where.split(".") if where else ():
        message = getattr(message, part)
    check_fields(value, message.DESCRIPTOR, f"{where}." if where else "")
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as error:
        text = str(error).rstrip(".")
        found = re.search(r" at \w+\.([\w.\[\]]+)$", text)
        field = (f"{where}." if where else "") + found.group(1) if found else where or None
        raise field_error(field or "(body)", f"the JSON body: {text}") from None


def parse_json(data: bytes, message: Message, where: str = "") -> None:
    """A JSON body into ``message`` (or its field ``where``)."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, f"the body is not valid JSON: {error}") from None
    parse_into(value, message, where)


def resolve(descriptor: Descriptor, name: str) -> tuple[str, list[FieldDescriptor], str | None]:
    """A query or form name as (its full path, the fields along it, a map key or None).

    Raises HttpError (400, naming the parameter) when no field has that path,
    here or one level down.
    """
    key = None
    found = re.fullmatch(r"([A-Za-z0-9_.]+)(?:\[(.*)\])?", name)
    if found is None:
        raise field_error(name, f"unknown parameter {name!r}: not a field path such as config.peaks.topK")
    path, key = found.group(1), found.group(2)
    candidates = [path]
    first = path.split(".")[0]
    if _field(descriptor, first) is None:  # one level down: displayName is template.displayName
        candidates = [f"{field.json_name}.{path}" for field in descriptor.fields
                      if field.message_type is not None and not _well_known(field.message_type)
                      and not _is_map(field) and _field(field.message_type, first) is not None]
    if len(candidates) != 1:
        raise field_error(name, f"unknown parameter {name!r}: {descriptor.name} has {_names(descriptor)}"
                          + (" (and their fields, e.g. config.peaks.topK)" if not candidates else
                             f"; it could be {' or '.join(candidates)}: name it in full"))
    fields, current = [], descriptor
    for part in candidates[0].split("."):
        field = _field(current, part) if current is not None else None
        if field is None:
            raise field_error(name, f"unknown parameter {name!r}: {current.name if current else 'a value'} has no "
                                    f"field {part!r}" + (f" ({_names(current)})" if current else ""))
        fields.append(field)
        current = field.message_type if field.message_type is not None and not _well_known(field.message_type) \
            else None
    last = fields[-1]
    if key is not None and not _is_map(last):
        raise field_error(name, f"{name!r}: [key] is for map fields, and {last.json_name} is not one")
    if key is None and (_is_map(last) or current is not None):
        raise field_error(name, f"{name!r} is a message: name one of its fields ({_names(last.message_type)})"
                          if not _is_map(last) else f"{name!r} is a map: name an entry, {name}[key]=value")
    return ".".join(field.json_name for field in fields), fields, key


def _scalar(field: FieldDescriptor, text: str, name: str) -> Any:
    """A query or form value as the JSON value protobuf's parser takes for ``field``."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text not in ("true", "false"):
            raise field_error(name, f"{name} must be true or false, got {text[:80]!r}")
        return text == "true"
    if field.type == FieldDescriptor.TYPE_ENUM and re.fullmatch(r"-?\d+", text):
        return int(text)
    return text  # numbers, strings, bytes (base64), enum names, timestamps: the parser reads strings


def set_parameters(message: Message, parameters: list[tuple[str, str]], *, taken: frozenset[str] = frozenset(),
                   where: str = "query parameter") -> None:
    """Set fields of ``message`` from (name, value) pairs: query parameters or form fields.

    ``taken`` holds the field paths something else already set (the path, the
    body): naming one again is refused.
    """
    value: dict[str, Any] = {}
    descriptor = message.DESCRIPTOR
    for name, text in parameters:
        path, fields, key = resolve(descriptor, name)
        if any(path == t or path.startswith(t + ".") for t in taken):
            raise field_error(path, f"{where} {name!r} sets {path}, which the "
                                    f"{'path' if path in taken else 'body'} sets already")
        node = value
        for field in fields[:-1]:
            node = node.setdefault(field.json_name, {})
        last = fields[-1]
        if key is not None:
            entry = last.message_type.fields_by_name["value"]
            node.setdefault(last.json_name, {})[key] = _scalar(entry, text, name)
        elif _is_repeated(last):
            node.setdefault(last.json_name, []).append(_scalar(last, text, name))
        else:
            if last.json_name in node:
                raise field_error(path, f"{path} is given twice; it takes one value")
            node[last.json_name] = _scalar(last, text, name)
    if value:
        parse_into(value, message)


def set_path(message: Message, path: str, value: Any) -> None:
    """Set the scalar field at dotted ``path`` (proto names) of ``message``."""
    *parents, last = path.split(".")
    for part in parents:
        message = getattr(message, part)
    setattr(message, last, value)


def image_fields(descriptor: Descriptor, prefix: str = "", depth: int = 2) -> dict[str, str]:
    """The Image fields an upload may fill, by their name: {"image": "frame.image"} for a MatchRequest.

    The first is the one a raw ``image/*`` body fills; a multipart form's
    file parts are named after them (``image``, ``mask``).
    """
    found: dict[str, str] = {}
    if descriptor is _IMAGE or depth < 0:
        return found
    for field in descriptor.fields:
        if field.message_type is _IMAGE and not _is_repeated(field):
            found.setdefault(field.name, prefix + field.name)
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type is not _IMAGE and not _is_repeated(field) \
                and not _well_known(field.message_type):
            for name, path in image_fields(field.message_type, f"{prefix}{field.name}.", depth - 1).items():
                found.setdefault(name, path)
    return found


def to_json(message: Message) -> bytes:
    """A response message as JSON bytes: every field, the unset ones with their defaults (enums by name)."""
    value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return json.dumps(value, separators=(",", ":")).encode()
