"""The featuremap engine: template matching as feature maps, in Numba.

Pure functions on numpy arrays: no gRPC, no I/O, no logging. Every input or
option it refuses raises :class:`OptionError` (a ``ValueError``; wrong types
raise its subclass :class:`OptionTypeError`, also a ``TypeError``).

>>> import numpy as np
>>> from featuremap.service.engine import Matcher, find_peaks
>>> frame = np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)
>>> matcher = Matcher([frame[40:56, 70:86]], method="ccoeff_normed")
>>> find_peaks(matcher(frame)[0], method="ccoeff_normed")[0][:2]
(70, 40)
"""

from . import runtime  # noqa: F401  (sets the threading layer before any kernel runs)
from .calibration import calibrate
from .cuda.device import DEVICES, check_device, cuda_problem, gpu_memory_bytes
from .halffloat import to_float16
from .kept import Kept
from .matcher import Cancelled, Found, Matcher, match
from .options import (
    ALGORITHMS,
    BORDERS,
    LOWER_IS_BETTER,
    METHODS,
    OPENCV_METHODS,
    PADDINGS,
    OptionError,
    OptionTypeError,
    check_options,
    check_template,
    map_origin,
    map_shape,
)
from .peaks import Peak, check_peak_options, find_peaks
from .pose.grid import MIN_POSE_SIDE, check_ranges, grid_size
from .pose.parts import Pose
from .pose.search import POSE_METHODS, PoseSearch, check_search
from .texture import calibrated_threshold
from .warmup import warmup

__all__ = [
    "ALGORITHMS",
    "BORDERS",
    "Cancelled",
    "DEVICES",
    "Found",
    "Kept",
    "LOWER_IS_BETTER",
    "MIN_POSE_SIDE",
    "METHODS",
    "OPENCV_METHODS",
    "PADDINGS",
    "POSE_METHODS",
    "Matcher",
    "Pose",
    "PoseSearch",
    "calibrate",
    "calibrated_threshold",
    "OptionError",
    "OptionTypeError",
    "Peak",
    "check_device",
    "check_options",
    "cuda_problem",
    "check_peak_options",
    "check_ranges",
    "check_search",
    "check_template",
    "find_peaks",
    "gpu_memory_bytes",
    "grid_size",
    "map_origin",
    "map_shape",
    "match",
    "to_float16",
    "warmup",
]
