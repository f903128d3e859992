"""``make demo``: match a bank of templates cut from a generated scene and print the peaks.

For now the demo runs the engine in-process; it becomes a client of the
gRPC service once the server exists.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np

from featuremap.service.engine import Matcher, find_peaks, runtime, warmup


def scene(height: int = 480, width: int = 640, seed: int = 7) -> np.ndarray:
    """A textured BGR scene: smoothed noise with a few drawn shapes."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (0, 0), 2.0)
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(8, 40)), colour, -1)
    return image


def main() -> None:
    """Cut three templates from the scene, match them, print one JSON line per template."""
    frame = scene()
    boxes = {"circle-corner": (100, 80, 32, 32), "texture": (400, 300, 24, 24), "wide": (250, 150, 48, 32)}
    templates = [frame[y:y + h, x:x + w].copy() for x, y, w, h in boxes.values()]
    runtime.retain_freed_memory()
    started = time.perf_counter()
    warmup()
    warm = time.perf_counter() - started
    matcher = Matcher(templates, method="ccoeff_normed")
    maps = matcher(frame)  # the first frame of a size also plans the paths
    started = time.perf_counter()
    maps = matcher(frame)
    elapsed = time.perf_counter() - started
    for (name, (x, y, _, _)), score_map in zip(boxes.items(), maps):
        peak = find_peaks(score_map, method="ccoeff_normed", top_k=1)[0]
        print(json.dumps({"template": name, "truth": [x, y], "found": [peak.x, peak.y], "score": round(peak.score, 4)}))
    print(f"warm-up {warm:.1f} s; one 640x480 BGR frame x {len(templates)} templates: {elapsed * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
