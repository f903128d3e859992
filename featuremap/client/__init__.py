"""The featuremap client side: the Python client, video sources, rendering and the CLI.

>>> from featuremap.client import FeatureMapClient                      # doctest: +SKIP
>>> with FeatureMapClient("localhost:50051") as client:                  # doctest: +SKIP
...     client.create_template(frame[100:132, 200:232], template_id="patch")
...     result = client.match(frame, templates=["patch"])
...     print(result.peaks)

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
        FrameResult,
        MatchSettings,
        Peak,
        TemplateInfo,
        match_config,
    )
    from .tracking import Detection, Tracker

_WHERE = {
    **dict.fromkeys(["DEFAULT_THRESHOLDS", "FeatureMap", "FeatureMapClient", "FeatureMapError", "FrameResult",
                     "MatchSettings", "Peak", "TemplateInfo", "match_config", "AccessError", "AlreadyExistsError",
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
