"""featuremap's engine beside its peers, in one process: ``make bench``.

For each workload (frame size, channels, bank size K, template side k) and
method, prints the median ms per frame of

- featuremap (``algorithm="auto"``) and featuremap forced onto its direct path,
- cv2.matchTemplate looped over the bank (same method, same thread count),
- torch.nn.functional.conv2d with the bank as output channels (ccorr only,
  where torch is importable; it is not a dependency),

with the ratio featuremap / OpenCV, and featuremap's direct-equivalent
GFLOP/s (2 K C k^2 Ho Wo / time) beside numpy's float32 matmul, the ceiling.
Absolute times vary with the machine's load; compare the ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import cv2
import numba
import numpy as np

from featuremap.service.engine import Matcher, runtime, warmup

WORKLOADS = [  # name, height, width, channels, K, k
    ("VGA gray K=8 k=16", 480, 640, 1, 8, 16),
    ("VGA gray K=32 k=16", 480, 640, 1, 32, 16),
    ("VGA gray K=8 k=48", 480, 640, 1, 8, 48),
    ("720p gray K=8 k=32", 720, 1280, 1, 8, 32),
    ("VGA BGR K=8 k=16", 480, 640, 3, 8, 16),
]
METHODS = {"ccorr": cv2.TM_CCORR, "ccoeff_normed": cv2.TM_CCOEFF_NORMED}
SMALL = {"VGA gray K=8 k=16", "VGA gray K=32 k=16", "VGA BGR K=8 k=16"}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm caches (and the plan of a Matcher)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(repeats: int) -> float:
    n = 1536
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    return 2 * n**3 / median_seconds(lambda: a @ a, repeats) / 1e9


def torch_conv(frame: np.ndarray, templates: list[np.ndarray]):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numba.get_num_threads())
    x = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(frame).transpose(2, 0, 1), np.float32))[None]
    w = torch.from_numpy(np.stack([np.atleast_3d(t).transpose(2, 0, 1) for t in templates]).astype(np.float32))

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w)

    return run


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 9
    retained = runtime.retain_freed_memory()
    warmup()
    threads = numba.get_num_threads()
    cv2.setNumThreads(threads)
    ceiling = matmul_gflops(repeats)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; numba {numba.__version__} "
          f"({runtime.threading_layer()} layer, {threads} threads); OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); numpy {np.__version__}; freed memory retained: {retained}")
    print(f"ceiling: numpy float32 matmul {ceiling:.1f} GFLOP/s\n")
    header = (f"{'workload':<22}{'method':<15}{'featuremap':>11}{'path':>10}{'OpenCV':>10}{'ratio':>8}"
              f"{'GFLOP/s':>9}{'direct':>9}{'%ceil':>7}{'torch':>9}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(1)
    for name, height, width, channels, bank, side in WORKLOADS:
        shape = (height, width) if channels == 1 else (height, width, channels)
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        templates = [rng.integers(0, 256, shape[:0] + (side, side) + shape[2:], dtype=np.uint8)
                     for _ in range(bank)]
        flops = 2 * bank * channels * side * side * (height - side + 1) * (width - side + 1)
        for method, code in METHODS.items():
            auto = Matcher(templates, method=method)
            direct = Matcher(templates, method=method, algorithm="direct")
            paths = set(auto.algorithms((height, width)).values())
            t_auto = median_seconds(lambda: auto(frame), repeats)
            t_direct = median_seconds(lambda: direct(frame), max(3, repeats // 3))
            t_cv = median_seconds(lambda: [cv2.matchTemplate(frame, t, code) for t in templates], repeats)
            conv = torch_conv(frame, templates) if method == "ccorr" else None
            t_torch = f"{median_seconds(conv, repeats) * 1e3:8.1f}" if conv else f"{'-':>8}"
            direct_gflops = flops / t_direct / 1e9
            print(f"{name:<22}{method:<15}{t_auto * 1e3:9.1f}ms{'/'.join(sorted(paths)):>10}"
                  f"{t_cv * 1e3:8.1f}ms{t_auto / t_cv:7.2f}x{flops / t_auto / 1e9:9.1f}"
                  f"{direct_gflops:9.1f}{100 * direct_gflops / ceiling:6.0f}%{t_torch}")
    print("\nfeaturemap/OpenCV ratio: below 1 is faster. GFLOP/s: direct-equivalent work of the auto path;"
          "\ndirect: the direct path's own GFLOP/s, %ceil of the matmul ceiling"
          f" (small-template workloads: {', '.join(sorted(SMALL))}).")


if __name__ == "__main__":
    main()
