"""The benchmarks' shared timer."""

from __future__ import annotations

import statistics
import time


def median_ms(run, repeats: int) -> float:
    """Median milliseconds of ``run()`` over ``repeats`` calls, after one untimed call (compiles, warms caches)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
