"""Write docs/api.md, the API reference, from the public names' signatures and docstrings.

    python docs/api_reference.py            # rewrite docs/api.md
    python docs/api_reference.py --check    # exit 1 if docs/api.md is stale

The names are the client's public ones (``featuremap.client.__all__``) and the
engine's main ones (``ENGINE`` below, each of which must be in
``featuremap.service.engine.__all__``). Each is written with its signature
(:func:`inspect.signature`, annotations as written in the source) and its
docstring as is (numpydoc), in fenced blocks; a class also with its public
methods and properties. Only the standard library and featuremap are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
import typing
from pathlib import Path

OUT = Path(__file__).resolve().parent / "api.md"

#: The client's names come first in this order, then the rest of its ``__all__`` in that order.
CLIENT_FIRST = ["FeatureMapClient", "MatchSettings", "match_config", "FrameResult", "Peak", "FeatureMap",
                "TemplateInfo", "DEFAULT_THRESHOLDS", "Tracker", "Detection", "FeatureMapError"]

#: The engine's names documented here (the package exports more helpers; these are what a user calls).
ENGINE = ["Matcher", "match", "find_peaks", "Peak", "Found", "PoseSearch", "Pose", "warmup", "OptionError",
          "OptionTypeError"]

WIDTH = 100  # a signature longer than this is written one parameter a line

HEADER = """\
# API reference

Generated from the docstrings by `docs/api_reference.py`; do not edit by hand. After changing a
public name or its docstring, run `python docs/api_reference.py` (`--check` exits 1 while this page
is stale). The guides say how the pieces fit: [client.md](client.md) (the client and the
`featuremap` command), [engine.md](engine.md) and [pose.md](pose.md) (the engine).
"""


class _Text:
    """A value shown as the text it holds (an annotation as written, a default's cleaned repr)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _annotation(value: object) -> object:
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, str):
        return _Text(value)
    if isinstance(value, typing.ForwardRef):
        return _Text(value.__forward_arg__)
    return _Text(inspect.formatannotation(value))


def _default(value: object) -> object:
    if value is inspect.Parameter.empty:
        return value
    return _Text(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value)))  # no addresses: the page must be stable


def _signature(obj: object, name: str, *, drop_self: bool = False) -> str | None:
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    if drop_self and parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    parameters = [p.replace(annotation=_annotation(p.annotation), default=_default(p.default)) for p in parameters
                  if not p.name.startswith("_")]  # a dataclass's private fields are not for callers
    tokens: list[str] = []
    positional_only, keyword_marker = False, True
    for parameter in parameters:
        if parameter.kind is parameter.POSITIONAL_ONLY:
            positional_only = True
        elif positional_only:
            tokens.append("/")
            positional_only = False
        if parameter.kind is parameter.VAR_POSITIONAL:
            keyword_marker = False
        elif parameter.kind is parameter.KEYWORD_ONLY and keyword_marker:
            tokens.append("*")
            keyword_marker = False
        tokens.append(str(parameter))
    if positional_only:
        tokens.append("/")
    returns = signature.return_annotation
    tail = "" if returns is inspect.Signature.empty or inspect.isclass(obj) else f" -> {_annotation(returns)!r}"
    line = f"{name}({', '.join(tokens)}){tail}"
    if len(line) <= WIDTH or not tokens:
        return line
    return f"{name}(\n" + "".join(f"    {token},\n" for token in tokens) + f"){tail}"


def _doc(obj: object) -> str:
    """The object's own docstring (not one inherited from a base class), dedented."""
    text = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ if obj.fget else None)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and text and re.match(rf"{obj.__name__}\(", text):
        text = None  # the text dataclasses writes when a class has none
    return inspect.cleandoc(text) if text else ""


def _block(language: str, text: str) -> list[str]:
    return [f"```{language}", text, "```", ""] if text else []


def _defining_module(package: str, name: str) -> object:
    """The module of ``package`` (or the package) whose source assigns ``name`` at its top level."""
    for module_name, module in sorted(sys.modules.items()):
        if module_name == package or module_name.startswith(package + "."):
            try:
                source = inspect.getsource(module)
            except (OSError, TypeError):
                continue
            if re.search(rf"^{re.escape(name)}\s*(:[^=]*)?=", source, re.M):
                return module
    return sys.modules[package]


def _comments(module: object, name: str) -> tuple[list[str], dict[str, str]]:
    """``#:`` comments: the lines above ``name = ...`` in ``module``, and those after a class's fields."""
    lines = inspect.getsource(module).splitlines()  # type: ignore[arg-type]
    above: list[str] = []
    fields: dict[str, str] = {}
    for index, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            back = index - 1
            while back >= 0 and lines[back].startswith("#:"):
                above.insert(0, lines[back][2:].strip())
                back -= 1
        if re.match(rf"class {re.escape(name)}\b", line):
            for field_line in lines[index + 1:]:
                if field_line and not field_line.startswith((" ", "\t")):
                    break
                match = re.match(r"\s+(\w+)\s*:.*#:\s*(.*)$", field_line)
                if match:
                    fields[match.group(1)] = match.group(2).strip()
    return above, fields


def _members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself, in the order of its source."""
    members: list[tuple[str, object]] = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((name, value))
    return members


def _entry(module: object, import_from: str, name: str) -> list[str]:
    obj = getattr(module, name)
    out = [f"### `{name}`", "", f"`from {import_from} import {name}`", ""]
    if inspect.isclass(obj):
        bases = [base.__name__ for base in obj.__bases__ if base not in (object, tuple, dict)]
        if typing.is_typeddict(obj):
            out += ["A `TypedDict`: keyword arguments, every key optional.", ""]
            out += _block("text", _doc(obj))
            _, meanings = _comments(sys.modules[obj.__module__], name)
            out += ["| key | type | meaning |", "|---|---|---|"]
            for key, annotation in obj.__annotations__.items():
                shown = repr(_annotation(annotation)).replace("|", "\\|")
                out.append(f"| `{key}` | `{shown}` | {meanings.get(key, '').replace('|', '/')} |")
            return out + [""]
        signature = _signature(obj, name)
        head = signature if signature is not None else name
        out += _block("python", f"class {head}")
        if bases and issubclass(obj, BaseException):
            out += ["Bases: " + ", ".join(f"`{base}`" for base in bases), ""]
        out += _block("text", _doc(obj))
        for member_name, member in _members(obj):
            shown = f"{name}.{member_name}"
            out += [f"#### `{shown}`", ""]
            if isinstance(member, property):
                out += _block("python", f"{shown}  # property")
            else:
                out += _block("python", _signature(member, shown, drop_self=True) or shown)
            out += _block("text", _doc(member))
        return out
    if callable(obj):
        out += _block("python", _signature(obj, name) or name)
        return out + _block("text", _doc(obj))
    comments, _ = _comments(_defining_module(import_from, name), name)
    out += _block("python", f"{name} = {_default(obj)!r}")
    return out + ([" ".join(comments), ""] if comments else [])


def render() -> str:
    client = importlib.import_module("featuremap.client")
    engine = importlib.import_module("featuremap.service.engine")
    missing = [name for name in ENGINE if name not in engine.__all__]
    if missing:
        raise SystemExit(f"featuremap.service.engine no longer exports {missing}: update ENGINE in {__file__}")
    client_names = [n for n in CLIENT_FIRST if n in client.__all__] + [n for n in client.__all__
                                                                       if n not in CLIENT_FIRST]
    sections = [
        ("The client: `featuremap.client`", client, "featuremap.client", client_names,
         "The Python client of the service (no Numba). Its errors are `FeatureMapError`s, each also the "
         "builtin exception it refines."),
        ("The engine: `featuremap.service.engine`", engine, "featuremap.service.engine", ENGINE,
         "The Numba core, usable without a server: pure functions on arrays. Every input or option it "
         "refuses raises `OptionError`."),
    ]
    lines = [HEADER]
    for title, _, _, names, _ in sections:
        lines.append(f"- {title}: " + ", ".join(f"`{name}`" for name in names))
    lines.append("")
    for title, module, import_from, names, intro in sections:
        lines += [f"## {title}", "", intro, ""]
        for name in names:
            lines += _entry(module, import_from, name)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not what this writes")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python docs/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
