"""The engine reuses its work arrays: fast in a plain ``import``, with no process-wide malloc setting."""

import subprocess
import sys
import textwrap


def test_repeated_calls_take_no_fresh_pages_without_retain_freed_memory():
    # In a fresh interpreter that never calls runtime.retain_freed_memory(): before, every 720p
    # frame faulted in ~4,200 pages (integral images, window statistics, spectra) and took 1.8x as long.
    script = textwrap.dedent("""
        import resource
        import numpy as np
        from featuremap.service.engine import Matcher

        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (720, 1280), dtype=np.uint8)
        for method, algorithm, masks in (("ccoeff_normed", "spectral", None), ("ccorr", "direct", None),
                                         ("ccoeff_normed", "direct", [np.ones((32, 32), np.uint8)] * 4)):
            templates = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(4)]
            matcher = Matcher(templates, method=method, algorithm=algorithm, masks=masks)
            for _ in range(3):
                matcher(frame)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(4):
                matcher(frame)
            print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    faults = [int(line) for line in out.stdout.split()]
    assert len(faults) == 3 and max(faults) < 400, faults
