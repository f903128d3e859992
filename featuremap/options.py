"""featuremap.options: the one table of match options.

Every option a ``MatchConfig`` carries has one row in :data:`OPTIONS`: its
keyword name, where the proto keeps it, its kind, what unset means, its
choices or range, and how the ``featuremap`` command spells it. What used to
spell the list out by hand is walked from here:

- the client's :func:`featuremap.client.match_config` builds the message row by
  row, and its ``MatchSettings`` keys are the table's keyword names (a test
  holds them equal: a TypedDict must be written out for type checkers);
- the ``featuremap`` command adds its match flags from the rows' :class:`Flag`
  and turns them back into keyword settings (``runs.match_settings``);
- the server reads a config into ``MatchOptions`` by the rows
  (``service/pipeline/frames.py``), whose fields carry the same names.

A test holds the table to the proto's descriptors, so a field added to
``MatchConfig``, ``PeakOptions`` or ``MapOptions`` without a row fails. Like
:mod:`featuremap.wire` it imports only the wire module and the stubs, so the
client and the service both may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb


class _Unset:
    """The type of :data:`UNSET`."""

    def __repr__(self) -> str:
        return "UNSET"


#: A row's default when unset has no value of its own here: the engine's default (the pose options),
#: or, for the threshold, no threshold on the wire (the client applies DEFAULT_THRESHOLDS itself).
UNSET: Final = _Unset()

#: What a row holds: template names, one of an enum's names, a float, a whole number, a yes or no.
Kind = Literal["names", "choice", "number", "whole", "bool"]


@dataclass(frozen=True)
class Flag:
    """How the ``featuremap`` command spells an option.

    Attributes
    ----------
    name : str
        The flag, e.g. ``--top-k``; its argparse destination is the name
        without dashes (``top_k``; ``--template``'s is ``template``).
    help : str, optional
        The text ``--help`` shows.
    metavar : str, optional
        The value's name in ``--help``.
    none : bool
        ``none`` is a value of it (``--threshold none``: no threshold), so
        leaving the flag out is told apart from it.
    commands : tuple of str
        The subcommands that take it.
    """

    name: str
    help: str | None = None
    metavar: str | None = None
    none: bool = False
    commands: tuple[str, ...] = ("match", "watch")

    @property
    def dest(self) -> str:
        """The argparse destination: ``--top-k`` -> ``top_k``."""
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class MatchOption:
    """One match option: a row of :data:`OPTIONS`.

    Attributes
    ----------
    name : str
        The keyword name: the client's ``MatchSettings`` key and the
        server's ``MatchOptions`` field.
    field : str
        Its path in ``MatchConfig``, e.g. ``peaks.top_k``.
    kind : {"names", "choice", "number", "whole", "bool"}
        What it holds (a test holds it to the proto field's type).
    default : object
        What unset (proto3's zero, or an ``optional`` field left out) means,
        by name; :data:`UNSET` where that is the engine's (or, for the
        threshold, none).
    choices : mapping of str to int, optional
        A choice's names and wire numbers (featuremap.wire's tables).
    low, high : float, optional
        The range the ``featuremap`` command checks (the engine and the
        server check their own, which may be narrower).
    open_low : bool
        ``low`` itself is out of range.
    keyword : bool
        The caller sets it (a ``MatchSettings`` key); False: the client sets
        it itself (``template_thresholds``, with the method's default threshold).
    flag : Flag, optional
        Its flag in the ``featuremap`` command; None: not a flag (see
        ``why_no_flag``).
    why_no_flag : str
        Why it has no flag, for a row without one.
    """

    name: str
    field: str
    kind: Kind
    default: object = UNSET
    choices: Mapping[str, int] | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    keyword: bool = True
    flag: Flag | None = None
    why_no_flag: str = ""

    @property
    def descriptor(self) -> FieldDescriptor:
        """The proto's field descriptor of this option."""
        *parents, last = self.field.split(".")
        message: Any = pb.MatchConfig.DESCRIPTOR
        for part in parents:
            message = message.fields_by_name[part].message_type
        found: FieldDescriptor = message.fields_by_name[last]
        return found

    @property
    def optional(self) -> bool:
        """Whether the wire tells unset from zero (proto3 ``optional``)."""
        return bool(self.descriptor.has_presence) and self.kind != "names"

    @property
    def what(self) -> str:
        """A choice's enum as messages name it: ``MapEncoding`` -> ``map encoding``."""
        enum = self.descriptor.enum_type
        name = enum.name if enum is not None else self.name
        return "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()

    def holder(self, config: pb.MatchConfig) -> tuple[Message, str]:
        """The message of ``config`` that holds this option (a sub-message marked present) and its field."""
        *parents, last = self.field.split(".")
        message: Message = config
        for part in parents:
            message = getattr(message, part)
            message.SetInParent()
        return message, last

    def wire_value(self, config: pb.MatchConfig) -> Any:
        """The value as the config carries it (enum numbers, zeros); :data:`UNSET` for an optional left out."""
        *parents, last = self.field.split(".")
        message: Message = config
        for part in parents:
            message = getattr(message, part)  # reading marks nothing present
        if self.optional and not message.HasField(last):
            return UNSET
        return getattr(message, last)


_POSE = "pose templates: "

#: The match options, in the order ``MatchSettings`` lists them (and ``--help`` shows their flags).
OPTIONS: Final[Mapping[str, MatchOption]] = {option.name: option for option in (
    MatchOption("templates", "templates", "names", default=None,
                flag=Flag("--template", "match this template (repeat; default: the whole bank)", metavar="ID")),
    MatchOption("method", "method", "choice", default=wire.DEFAULT_METHOD, choices=wire.METHODS,
                flag=Flag("--method")),
    MatchOption("padding", "padding", "choice", default=wire.DEFAULT_PADDING, choices=wire.PADDINGS,
                why_no_flag="the command reports peaks, the same under every padding"),
    MatchOption("border", "border", "choice", default=wire.DEFAULT_BORDER, choices=wire.BORDERS,
                why_no_flag="goes with padding"),
    MatchOption("border_value", "border_value", "number", default=0.0, why_no_flag="goes with padding"),
    MatchOption("stride", "stride", "whole", default=1, low=1,
                why_no_flag="the command reports peaks, which a stride only coarsens"),
    MatchOption("top_k", "peaks.top_k", "whole", default=1, low=1,
                flag=Flag("--top-k", "peaks per template (default 1)")),
    MatchOption("threshold", "peaks.threshold", "number",
                flag=Flag("--threshold", "keep peaks scoring at least this (at most, for the sqdiff pair); 'none' "
                                         "keeps every peak (default: the method's, DEFAULT_THRESHOLDS in "
                                         "docs/client.md)", none=True)),
    MatchOption("min_distance", "peaks.min_distance", "whole", default=0, low=0,
                why_no_flag="the default (half the template) suits the command's detections"),
    MatchOption("subpixel", "peaks.subpixel", "bool", default=False,
                why_no_flag="pose templates are sub-pixel already; the rest are drawn to the pixel"),
    MatchOption("min_visible", "peaks.min_visible", "number", low=0.0, high=1.0, open_low=True,
                flag=Flag("--min-visible", _POSE + "report a part partly outside the frame when at least this "
                                                   "share of its box is inside, above 0 and at most 1; 1: whole "
                                                   "parts only (default 0.75)", metavar="SHARE")),
    MatchOption("max_overlap", "peaks.max_overlap", "number", low=0.0, high=1.0,
                flag=Flag("--max-overlap", _POSE + "drop a pose whose box overlaps a better one's by more than "
                                                   "this (intersection over union), 0 to 1 (default 0.5)",
                          metavar="IOU")),
    MatchOption("candidates", "peaks.candidates", "whole", low=1,
                flag=Flag("--candidates", _POSE + "places the search refines per template, 1 to 256; more finds "
                                                  "close or similar parts at more work (default: grows with "
                                                  "--top-k)", metavar="N")),
    MatchOption("template_thresholds", "peaks.template_thresholds", "bool", default=False, keyword=False,
                why_no_flag="the client sets it with the method's default threshold"),
    MatchOption("maps", "maps.encoding", "choice", default=None, choices=wire.MAP_ENCODINGS,
                why_no_flag="asked for by --heatmap (match) and --heatmap-out (watch)"),
    MatchOption("realtime", "realtime", "bool", default=False,
                flag=Flag("--realtime", "skip stale frames (default: on for cameras and streams, off for files)",
                          commands=("watch",))),
    MatchOption("data_range", "data_range", "number", default=None,
                why_no_flag="ssim only, and its default (by the frame's type) suits images and video"),
)}

#: The options a caller sets, by keyword name (``MatchSettings``' keys, in its order).
KEYWORDS: Final[tuple[str, ...]] = tuple(name for name, option in OPTIONS.items() if option.keyword)


def config_values(config: pb.MatchConfig) -> dict[str, Any]:
    """A config's options by keyword name, as the server reads them.

    Unset is the row's default: proto3's zero for the plain fields (``stride``
    0 is 1), None for an ``optional`` left out (the engine's default, or no
    threshold); choices by name (``maps``: None for no maps); the
    templates as the names given.

    Raises
    ------
    featuremap.wire.WireError
        A choice's number that the enum does not have.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS.values():
        value = option.wire_value(config)
        if option.kind == "names":
            value = list(value)
        elif option.choices is not None:
            default = option.default if isinstance(option.default, str) else None
            value = wire.name_of(dict(option.choices), value, option.what, default)
        elif value is UNSET:
            value = None
        elif not value and option.default not in (UNSET, 0):
            value = option.default  # a zero that means something else (stride 0 is 1, data_range 0 by dtype)
        values[option.name] = value
    return values
