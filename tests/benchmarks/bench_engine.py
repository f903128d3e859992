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
from featuremap.service.engine.plan import cost_model

WORKLOADS = [  # name, height, width, channels, K, k
    ("VGA gray K=8 k=16", 480, 640, 1, 8, 16),
    ("VGA gray K=32 k=16", 480, 640, 1, 32, 16),
    ("VGA gray K=8 k=48", 480, 640, 1, 8, 48),
    ("720p gray K=8 k=32", 720, 1280, 1, 8, 32),
    ("VGA BGR K=8 k=16", 480, 640, 3, 8, 16),
]
METHODS = {"ccorr": cv2.TM_CCORR, "ccoeff_normed": cv2.TM_CCOEFF_NORMED}


def interleaved_medians(contenders: dict, repeats: int) -> dict:
    """Median seconds of each contender, timed in rotation.

    Each round runs every contender in turn, so all of them see the same
    machine load: on a shared, noisy machine this keeps the ratios honest
    even when the absolute times drift. Within its turn a contender runs once
    untimed, then once timed: the untimed call wakes its own thread pool
    (numba's, OpenCV's, BLAS's) and lets the previous contender's spinning
    threads go idle, so no one is charged for another's threads.
    """
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_gflops(repeats: int, n: int = 1024) -> float:
    """numpy's float32 matmul throughput: the machine's practical ceiling.

    Measured on its own, never in rotation with the others: BLAS threads spin
    for about 0.1 s after each call and would steal the cores of whoever ran
    next. The pause afterwards lets them go idle.
    """
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    time.sleep(0.5)
    return 2 * n**3 / statistics.median(times) / 1e9


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


def variants_row(repeats: int) -> None:
    """K=4 templates x 5 scales x 5 angles on VGA gray: featuremap's bank against OpenCV looped over it."""
    from featuremap.service.store.variants import make_variant

    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    variants = []
    for _ in range(4):
        template = rng.integers(0, 256, (24, 24, 1), dtype=np.uint8)
        for scale in (0.5, 0.75, 1.0, 1.25, 1.5):
            for angle in (-30, -15, 0, 15, 30):
                image, mask = make_variant(template, None, scale, angle)
                variants.append((image[:, :, 0], mask))
    bank = Matcher([v for v, _ in variants], masks=[m for _, m in variants], method="ccoeff_normed")
    t = interleaved_medians({
        "featuremap": lambda: bank(frame),
        "opencv": lambda: [cv2.matchTemplate(frame, v, cv2.TM_CCOEFF_NORMED, mask=m) if m is not None
                           else cv2.matchTemplate(frame, v, cv2.TM_CCOEFF_NORMED) for v, m in variants],
    }, max(3, repeats // 3))
    print(f"\nscale/rotation variants: VGA gray, K=4 templates 24x24 x 5 scales x 5 angles = {len(variants)} "
          f"variants (rotated ones masked), ccoeff_normed:\n  featuremap {t['featuremap'] * 1e3:.1f} ms/frame, "
          f"OpenCV looped {t['opencv'] * 1e3:.1f} ms/frame, ratio {t['featuremap'] / t['opencv']:.2f}x "
          "(target: at most 0.2x)")


def main() -> None:
    quick = "--quick" in sys.argv
    repeats = 3 if quick else 11
    retained = runtime.retain_freed_memory()
    warmup()
    threads = numba.get_num_threads()
    cv2.setNumThreads(threads)
    try:
        import torch

        torch_version = f"torch {torch.__version__}"
    except ImportError:
        torch_version = "torch not installed (.venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu to compare)"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; numba {numba.__version__} "
          f"({runtime.threading_layer()} layer, {threads} threads); OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads); numpy {np.__version__}; {torch_version}; "
          f"freed memory retained: {retained}")
    ceilings = [matmul_gflops(3 * repeats)]
    rng = np.random.default_rng(1)
    rows = []
    for name, height, width, channels, bank, side in WORKLOADS:
        shape = (height, width) if channels == 1 else (height, width, channels)
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        templates = [rng.integers(0, 256, (side, side) + shape[2:], dtype=np.uint8) for _ in range(bank)]
        flops = 2 * bank * channels * side * side * (height - side + 1) * (width - side + 1)
        for method, code in METHODS.items():
            auto = Matcher(templates, method=method)
            direct = Matcher(templates, method=method, algorithm="direct")
            spectral = Matcher(templates, method=method, algorithm="spectral")
            contenders = {
                "auto": lambda: auto(frame),
                "direct": lambda: direct(frame),
                "spectral": lambda: spectral(frame),
                "opencv": lambda: [cv2.matchTemplate(frame, t, code) for t in templates],
            }
            conv = torch_conv(frame, templates) if method == "ccorr" else None
            if conv:
                contenders["torch"] = conv
            if method == "ccoeff_normed":
                # ssim beside ccoeff_normed: it should cost about the same.
                ssim = Matcher(templates, method="ssim")
                contenders["ssim"] = lambda: ssim(frame)
            t = interleaved_medians(contenders, repeats)
            paths = "/".join(sorted(set(auto.algorithms((height, width)).values())))
            rows.append((name, method, paths, flops, t))
    ceilings.append(matmul_gflops(3 * repeats))
    # The higher of the two readings, so that %ceil errs on the low side.
    ceiling = max(ceilings)
    print(f"ceiling: numpy float32 matmul {ceiling:.1f} GFLOP/s (before and after: "
          f"{ceilings[0]:.1f}, {ceilings[1]:.1f}); median of {repeats} rounds, each running every "
          "contender in turn\n(one untimed call, one timed)\n")
    header = (f"{'workload':<22}{'method':<15}{'featuremap':>11}{'path':>10}{'OpenCV':>10}{'ratio':>8}"
              f"{'GFLOP/s':>9}{'direct':>9}{'%ceil':>7}{'torch':>10}")
    print(header)
    print("-" * len(header))
    for name, method, paths, flops, t in rows:
        direct_gflops = flops / t["direct"] / 1e9
        torch_ms = f"{t['torch'] * 1e3:8.1f}ms" if "torch" in t else f"{'-':>10}"
        print(f"{name:<22}{method:<15}{t['auto'] * 1e3:9.1f}ms{paths:>10}"
              f"{t['opencv'] * 1e3:8.1f}ms{t['auto'] / t['opencv']:7.2f}x{flops / t['auto'] / 1e9:9.1f}"
              f"{direct_gflops:9.1f}{100 * direct_gflops / ceiling:6.0f}%{torch_ms}")
    torch_rows = [(name, t["auto"] / t["torch"]) for name, method, _, _, t in rows if "torch" in t]
    if torch_rows:
        print(f"\nccorr beside torch's conv2d at {threads} threads (target: at most 0.7x its time): "
              + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in torch_rows))
    shares = [flops / t["direct"] / 1e9 / ceiling for _, _, _, flops, t in rows]
    print(f"direct path at {100 * min(shares):.0f}-{100 * max(shares):.0f}% of the matmul ceiling "
          "(target: at least 70% at 2 threads, 60% at 16)")
    print("\nauto beside the faster forced path (target: within 10%), calibrated for this machine and thread count"
          f" (direct x{cost_model().direct_scale:.2f}, spectral x{cost_model().spectral_frame_scale:.2f} per frame,"
          f" x{cost_model().spectral_template_scale:.2f} per template):")
    for name, method, paths, _, t in rows:
        best = min(t["direct"], t["spectral"])
        faster = "direct" if t["direct"] <= t["spectral"] else "spectral"
        # The chosen path's own forced time beside the faster one: auto runs the same code as
        # the forced path it picks, so where the two columns differ it is the machine's noise.
        chosen = f"{t[paths] / best:5.2f}x" if paths in ("direct", "spectral") else "    -"
        print(f"  {name:<22}{method:<15}auto {t['auto'] * 1e3:7.1f}ms ({paths:<8}) direct {t['direct'] * 1e3:7.1f}ms "
              f"spectral {t['spectral'] * 1e3:7.1f}ms  auto / {faster:<8} {t['auto'] / best:5.2f}x  "
              f"chosen path / {faster:<8} {chosen}")
    print("\nssim (no OpenCV peer) beside featuremap's ccoeff_normed on the same workload:")
    for name, _, _, _, t in rows:
        if "ssim" in t:
            print(f"  {name:<22} ssim {t['ssim'] * 1e3:7.1f}ms  ccoeff_normed {t['auto'] * 1e3:7.1f}ms  "
                  f"ratio {t['ssim'] / t['auto']:.2f}x")
    variants_row(repeats)
    print("\nratio: featuremap / OpenCV time (below 1 is faster). GFLOP/s: direct-equivalent work"
          " (2 K C k^2 Ho Wo) per second\nof featuremap's chosen path; direct: the same forced onto the direct"
          " path; %ceil = direct / ceiling.")


if __name__ == "__main__":
    main()
