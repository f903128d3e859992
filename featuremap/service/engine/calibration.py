"""``auto`` made right for the machine it runs on: both paths timed here, once, and remembered.

The cost model's constants were fitted on a 2-core machine; on 16 cores the
direct path gains more than the transforms do, and ``auto`` chose the slower
path (VGA BGR, 8 templates of 16x16: spectral 11.8 ms where direct took
about 8 ms). :func:`calibrate` times both paths on a few small workloads at
the current thread count, sets the model's two factors from the measured
over predicted times, and keeps them in a JSON file beside Numba's cache,
keyed by the CPU model, the target the kernels compile for (CPU name,
features, lanes), the thread count and the engine's source, so a restart
reuses them and an upgraded kernel is timed afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numba
import numpy as np

from . import plan
from .lanes import LANES
from .matcher import Matcher

#: Workloads timed (frame height, width, channels, templates, template side): small templates
#: on gray and colour frames, where the paths are closest, a large one where the spectral path
#: wins, and a bank of 32, whose time is mostly the spectral path's cost per template (fitted
#: on banks of 4 and 8 alone, that cost came out 1.4x too steep for 32). VGA frames, as served:
#: on 320x240 the transforms' fixed costs weigh more, and fitted there the spectral path was
#: predicted 1.3-1.5x slower on VGA than it ran.
WORKLOADS = ((480, 640, 1, 4, 16), (480, 640, 1, 32, 16), (480, 640, 3, 4, 16), (480, 640, 1, 4, 40))
REPEATS = 9


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _engine_source() -> bytes:
    """The engine's code: a change to any kernel or to the cost model makes an earlier fit stale."""
    return b"".join(path.read_bytes() for path in sorted(Path(__file__).parent.glob("*.py")))


def _target() -> str:
    """What the kernels are compiled for: the CPU name and features Numba targets, and the tiles' lanes.

    The same CPU model runs different code as another target (NUMBA_CPU_NAME: an x86-64 level from
    an image's warm cache, or an emulated CPU in the tests), at other speeds.
    """
    return f"{numba.config.CPU_NAME or 'host'}|{numba.config.CPU_FEATURES}|{LANES}"


def cache_file(threads: int | None = None) -> Path:
    """Where the calibration for this CPU model, target, thread count and engine is kept (beside Numba's cache)."""
    threads = threads or numba.get_num_threads()
    digest = hashlib.sha256(f"{_cpu_model()}|{_target()}|{threads}|{numba.__version__}|".encode())
    digest.update(_engine_source())
    key = digest.hexdigest()[:16]
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(__file__).with_name("__pycache__"))
    return folder / f"featuremap-cost-{key}.json"


def _seconds(calls: dict[str, object]) -> dict[str, float]:
    """Each call's median time of :data:`REPEATS`, the calls timed in turn.

    In turn, so that a load that comes and goes (a server warming up beside
    other work) falls on both paths alike. The median, not the fastest: the
    spectral path's times spread wide (VGA, 8 templates of 16x16: fastest
    6.9 ms, median 10.5, where the direct path's were 6.7 and 6.9), and fitted
    to its fastest, auto took it where the direct path ran 1.8x faster as a rule.
    """
    for call in calls.values():
        call()  # the first call plans and allocates
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(REPEATS):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def measure() -> plan.CostModel:
    """Time both paths on :data:`WORKLOADS` and fit the cost model's factors.

    The direct factor is the geometric mean of measured / predicted; the
    spectral path's two come from :func:`fit_spectral`.
    """
    rng = np.random.default_rng(0)
    direct: list[float] = []
    spectral: list[tuple[float, float, float]] = []  # (frame's part, templates' part, measured)
    for height, width, channels, count, side in WORKLOADS:
        frame = rng.random((height, width, channels)).astype(np.float32)
        templates = [rng.random((side, side, channels)).astype(np.float32) for _ in range(count)]
        matchers = {algorithm: Matcher(templates, method="ccorr", algorithm=algorithm)
                    for algorithm in ("direct", "spectral")}
        measured = _seconds({algorithm: (lambda m=m: m(frame)) for algorithm, m in matchers.items()})
        direct_estimate, frame_part, templates_part = matchers["direct"].estimates((height, width))
        direct.append(measured["direct"] / direct_estimate)
        spectral.append((frame_part, templates_part, measured["spectral"]))
    frame_scale, template_scale = fit_spectral(spectral)
    return plan.CostModel(direct_scale=_geometric_mean(direct), spectral_frame_scale=frame_scale,
                          spectral_template_scale=template_scale)


def _geometric_mean(values) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def fit_spectral(timings: list[tuple[float, float, float]]) -> tuple[float, float]:
    """The spectral path's (per-frame, per-template) factors from (frame's part, templates' part, measured) rows.

    Least squares of measured = frame x a + templates x b, each row divided by
    its measured time so that a workload of 3 ms weighs as much as one of 30.
    Where that leaves a factor at or below 0 (too few or too noisy rows), one
    factor for both: the geometric mean of measured / predicted.
    """
    rows = np.array([[frame / measured, templates / measured] for frame, templates, measured in timings])
    (frame_scale, template_scale), *_ = np.linalg.lstsq(rows, np.ones(len(rows)), rcond=None)
    if frame_scale > 0 and template_scale > 0:
        return float(frame_scale), float(template_scale)
    one = _geometric_mean(measured / (frame + templates) for frame, templates, measured in timings)
    return one, one


def calibrate(*, refresh: bool = False) -> plan.CostModel:
    """Set ``auto``'s cost model for this machine and thread count: from the cache file, or measured (~2-3 s).

    Parameters
    ----------
    refresh : bool
        Measure again even when a cached calibration exists.
    """
    path = cache_file()
    model = None
    if not refresh:
        try:
            model = plan.CostModel(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            model = None
    if model is None:
        model = measure()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(dataclasses.asdict(model)))
        except OSError:
            pass  # a read-only install: measured again at the next start
    plan.use_cost_model(model)
    return model
