"""The featuremap client side: the Python client, video sources, rendering and the CLI.

With a server at ``address`` ("host:port") and ``frame`` an image (a numpy array):

>>> from featuremap.client import FeatureMapClient
>>> with FeatureMapClient(address) as client:
...     patch = client.create_template(frame[40:72, 60:92], template_id="patch")
...     result = client.match(frame, templates=["patch"])
>>> [(peak.template, peak.x, peak.y, round(peak.score, 3)) for peak in result.peaks]
[('templates/patch', 60.0, 40.0, 1.0)]

The names below load on first use, so that ``featuremap`` (the command) can
quiet gRPC's and OpenCV's own logging before they load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        DEFAULT_THRESHOLDS,
        AccessError,
        AlreadyExistsError,
        FileError,
        InvalidArgumentError,
        LimitError,
        NotFoundError,
        SettingTypeError,
        TimedOutError,
        UnavailableError,
        FeatureMap,
        FeatureMapClient,
        FeatureMapError,
        FeatureMapWarning,
        FrameResult,
        MatchSettings,
        Peak,
        TemplateInfo,
        match_config,
    )
    from .tracking import Detection, Tracker

_WHERE = {
    **dict.fromkeys(["DEFAULT_THRESHOLDS", "FeatureMap", "FeatureMapClient", "FeatureMapError", "FrameResult",
                     "MatchSettings", "Peak", "TemplateInfo", "match_config", "AccessError", "FeatureMapWarning", "AlreadyExistsError",
                     "FileError", "InvalidArgumentError", "LimitError", "NotFoundError", "SettingTypeError",
                     "TimedOutError", "UnavailableError"], ".client"),
    **dict.fromkeys(["Detection", "Tracker"], ".tracking"),
}

__all__ = [
    "DEFAULT_THRESHOLDS",
    "AccessError",
    "AlreadyExistsError",
    "FileError",
    "InvalidArgumentError",
    "LimitError",
    "NotFoundError",
    "SettingTypeError",
    "TimedOutError",
    "UnavailableError",
    "Detection",
    "FeatureMap",
    "FeatureMapClient",
    "FeatureMapError",
    "FeatureMapWarning",
    "FrameResult",
    "MatchSettings",
    "Peak",
    "TemplateInfo",
    "Tracker",
    "match_config",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too, for dir() and completion."""
    return sorted(set(globals()) | set(__all__))
