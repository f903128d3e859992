"""The client's match settings: :class:`MatchSettings` (its keyword arguments) and :func:`match_config`.

Both follow the one table of match options, :data:`featuremap.options.OPTIONS`:
``match_config`` builds the message row by row, and ``MatchSettings`` is that
table written out for type checkers (a TypedDict cannot be made from data; a
test holds its keys to the table's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, TypedDict, Unpack

import grpc
import numpy as np

from featuremap.options import KEYWORDS, OPTIONS, UNSET, MatchOption
from featuremap.v1 import featuremap_pb2 as pb

from .errors import SettingTypeError, _invalid

#: The similarity measures (``featuremap.wire.METHODS``; a test keeps them equal).
Method = Literal["sqdiff", "sqdiff_normed", "ccorr", "ccorr_normed", "ccoeff", "ccoeff_normed", "ssim"]
Padding = Literal["valid", "same", "full"]
Border = Literal["constant", "reflect", "replicate"]
#: How the server sends maps back; None (the default) sends none.
MapEncoding = Literal["float32", "float16", "uint8"]

#: The score a peak must reach to be a detection, by method, when no threshold is given (the wire's
#: default is no threshold; the client applies these, and for ccoeff_normed asks the server to raise
#: it per template to the template's texture threshold: see TemplateInfo.texture_threshold). Chosen from 111 templates cut from 16
#: photographs of scikit-image and found in degraded copies (JPEG quality 60, +-10% gain, noise
#: sigma 4): the 1st percentile of the true matches' scores is 0.79 (ccoeff_normed), 0.82 (ssim) and
#: 0.925 (ccorr_normed); the 99th of sqdiff_normed 0.165 (lower is better: an upper bound). The
#: unnormalised methods have none: their scores scale with the template.
DEFAULT_THRESHOLDS: dict[str, float] = {"ccoeff_normed": 0.7, "ssim": 0.7, "ccorr_normed": 0.9, "sqdiff_normed": 0.2}


class MatchSettings(TypedDict, total=False):
    """How to match, for :func:`match_config`, :meth:`FeatureMapClient.match` and ``stream``.

    Every key is optional; the defaults are the server's. See featuremap.proto
    for each field's meaning.
    """

    templates: str | Iterable[str] | None  #: an id or name, or several; None or empty: the whole bank
    method: Method  #: default "ccoeff_normed"
    padding: Padding  #: default "valid"
    border: Border  #: default "constant"
    border_value: float  #: default 0
    stride: int  #: default 1
    top_k: int  #: peaks per template, default 1
    threshold: float | None  #: keep peaks at least this good; default: DEFAULT_THRESHOLDS[method] raised to each template's texture_threshold; None: all
    min_distance: int  #: between peaks of a template; default 0 (half the template)
    subpixel: bool  #: default False
    min_visible: float | None  #: pose templates: report parts at least this share in the frame; default 0.75
    max_overlap: float | None  #: pose templates: drop poses overlapping a better one more (IoU); default 0.5
    candidates: int | None  #: pose templates: places the search refines, 1-256; default grows with top_k
    maps: MapEncoding | None  #: send maps back in this encoding; default None (no maps)
    realtime: bool  #: streams only: skip stale frames; default False
    data_range: float | None  #: ssim only: the dynamic range L; default by dtype


def _name(template: str) -> str:
    return template if template.startswith("templates/") else f"templates/{template}"


def _choices(option: MatchOption) -> tuple[object, ...]:
    """A choice's names, with None where unset means something (``maps``: none)."""
    names = tuple(option.choices or ())
    return (None, *names) if option.default is None else names


def _check_choice(option: MatchOption, value: object) -> None:
    choices = _choices(option)
    if value not in choices:
        raise _invalid(f"unknown {option.name} {value!r}: choose one of {', '.join(str(c) for c in choices)}")


def _check_number(value: object, name: str, *, whole: bool) -> None:
    """A setting protobuf cannot carry (a string, or a negative count for an unsigned field) refused
    here with the reason; values it carries go to the server, which checks their range."""
    kinds: tuple[type, ...] = (int, np.integer) if whole else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise SettingTypeError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{name} must be a {'whole number' if whole else 'number'}, got {value!r}")
    if whole and not 0 <= int(value) < 2 ** 32:  # type: ignore[call-overload]
        raise _invalid(f"{name} must be a positive whole number within the server's limit, got {value}")


def _set_names(config: pb.MatchConfig, option: MatchOption, value: Any) -> None:
    templates = value or []
    if isinstance(templates, str):  # one name, not its letters
        templates = [templates]
    config.templates.extend(_name(t) for t in templates)


def _set_choice(config: pb.MatchConfig, option: MatchOption, value: Any) -> None:
    message, field = option.holder(config)
    # None (no maps) is the enum's UNSPECIFIED.
    setattr(message, field, 0 if value is None else (option.choices or {})[value])


def _set_value(config: pb.MatchConfig, option: MatchOption, value: Any) -> None:
    message, field = option.holder(config)  # marks peaks and maps present, as the wire has always had them
    if value is None:
        return  # unset: the server's default (optional fields: the engine's)
    if option.optional and option.name != "threshold":
        # The pose options: protobuf would refuse a string or a negative count with a reason of its
        # own (the threshold goes to protobuf as it is, as it always has).
        _check_number(value, option.name, whole=option.kind == "whole")
    setattr(message, field, value)


_SET: dict[str, Callable[[pb.MatchConfig, MatchOption, Any], None]] = {
    "names": _set_names, "choice": _set_choice, "number": _set_value, "whole": _set_value, "bool": _set_value,
}


def match_config(**settings: Unpack[MatchSettings]) -> pb.MatchConfig:
    """A MatchConfig from keyword settings (:class:`MatchSettings`; see featuremap.proto for their meaning).

    Built row by row from :data:`featuremap.options.OPTIONS`. Without a
    ``threshold``, the method's :data:`DEFAULT_THRESHOLDS` entry is sent, with
    ``template_thresholds`` (the server raises it to each template's
    texture threshold); ``threshold=None`` sends none.

    Raises
    ------
    SettingTypeError
        An unknown setting, or a pose option protobuf cannot carry.
    InvalidArgumentError
        An unknown method, padding, border or maps encoding.
    """
    given: dict[str, Any] = dict(settings)
    unknown = set(given) - set(KEYWORDS)
    if unknown:
        raise SettingTypeError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"unknown match setting(s) {', '.join(sorted(unknown))}: use {', '.join(KEYWORDS)}")
    # Not given: the table's default (UNSET: None, the server's or the engine's own).
    values = {name: given.get(name, None if OPTIONS[name].default is UNSET else OPTIONS[name].default)
              for name in KEYWORDS}
    for name in KEYWORDS:  # the choices first: a misspelt name is the mistake to report
        if OPTIONS[name].kind == "choice":
            _check_choice(OPTIONS[name], values[name])
    if "threshold" not in given:
        # The method's default decision: for ccoeff_normed, a plain template (a gradient, a flat
        # patch) must also reach its own texture threshold, which the server keeps for it.
        values["threshold"] = DEFAULT_THRESHOLDS.get(values["method"])
        values["template_thresholds"] = values["threshold"] is not None
    config = pb.MatchConfig()
    # The peak and map options before the config's own, the order protobuf has always refused them in.
    for name, value in sorted(values.items(), key=lambda item: "." not in OPTIONS[item[0]].field):
        option = OPTIONS[name]
        _SET[option.kind](config, option, value)
    return config
