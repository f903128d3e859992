"""The gateway's routes, read from the proto's ``google.api.http`` options.

Each method of FeatureMapService carries its HTTP rule in the proto (the
single source of truth): a verb, a path template such as
``/v1/{name=templates/*}`` and the request field the body fills (``*``: the
whole request). This module turns those rules into :class:`Route`\\ s that
match a request path and say which request fields its variables set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor

from featuremap.v1 import featuremap_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["FeatureMapService"]


class RuleError(ValueError):
    """A path template this gateway cannot serve (a bug in the proto's options, found at start)."""


@dataclass(frozen=True)
class Route:
    """One HTTP rule: ``verb`` on ``template`` calls ``method``.

    ``variables`` are the request field paths the template's variables set,
    in the order of the pattern's groups; ``body`` the request field the HTTP
    body fills ("" none, "*" the whole request).
    """

    method: MethodDescriptor
    verb: str
    template: str
    pattern: re.Pattern[str]
    variables: tuple[str, ...]
    body: str

    @property
    def rpc(self) -> str:
        """The method's name (``Match``)."""
        return self.method.name

    @property
    def streaming(self) -> bool:
        """Whether the method streams (served as a WebSocket)."""
        return self.method.client_streaming or self.method.server_streaming

    def match(self, path: str) -> dict[str, str] | None:
        """The variables' values if ``path`` is this route's, else None."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return dict(zip(self.variables, found.groups()))


def _segments(text: str) -> str:
    """A path template's segments (``templates/*``) as a regular expression."""
    parts = []
    for segment in text.split("/"):
        if segment == "*":
            parts.append(r"[^/]+")
        elif segment == "**":
            parts.append(r".+")
        elif re.fullmatch(r"[A-Za-z0-9._~-]+", segment):
            parts.append(re.escape(segment))
        else:
            raise RuleError(f"unsupported path segment {segment!r}")
    return "/".join(parts)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A ``google.api.http`` path template as a regular expression and its variables' field paths.

    The syntax of ``google/api/http.proto``: literal segments, ``*``, ``**``,
    ``{field.path}`` (one segment) or ``{field.path=segments}``, and a final
    ``:verb``.
    """
    if not template.startswith("/"):
        raise RuleError(f"path template {template!r} must start with /")
    verb = ""
    head, _, tail = template.rpartition("}")
    if ":" in tail:  # the custom verb: after the last variable, if any
        tail, verb = tail.split(":", 1)
        template = head + ("}" if head else "") + tail
    variables: list[str] = []
    pattern = ""
    position = 0
    for found in re.finditer(r"\{([A-Za-z0-9_.]+)(?:=([^}]*))?\}", template):
        pattern += _literal(template[position:found.start()])
        variables.append(found.group(1))
        pattern += "(" + _segments(found.group(2) or "*") + ")"
        position = found.end()
    pattern += _literal(template[position:])
    if verb:
        pattern += re.escape(":" + verb)
    return re.compile(pattern), tuple(variables)


def _literal(text: str) -> str:
    """Literal segments between variables, slashes kept."""
    return "/".join(_segments(part) if part else "" for part in text.split("/"))


def routes() -> list[Route]:
    """Every method's HTTP rule (and its additional bindings), in the service's order."""
    found = []
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        for binding in (rule, *rule.additional_bindings):
            kind = binding.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, template = binding.custom.kind.upper(), binding.custom.path
            else:
                verb, template = kind.upper(), getattr(binding, kind)
            pattern, variables = compile_template(template)
            found.append(Route(method, verb, template, pattern, variables, binding.body))
    return found
