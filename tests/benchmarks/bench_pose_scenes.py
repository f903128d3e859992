"""Pose search on real-photograph scenes, held to an independent truth (``make bench``).

The scenes (``tests/pose_scenes.py``) paste real crops of scikit-image's
photographs at known poses and degrade the frame as a camera would; the truth
(``tests/data/pose_truth.json``) is an exhaustive OpenCV search over the pose
grid at 0.5 degrees with sub-pixel refinement (``tests/benchmarks/pose_truth.py``),
independent of featuremap. Per scene this prints:

- instances found right (within 1 px and 0.5 degrees of the truth, 1.5 px for
  a part clipped at the frame's edge), false detections (poses matching no
  instance), and the worst position and angle error of the right ones, at
  the client's default decision (ccoeff_normed: 0.7 raised to the part's
  texture threshold for the frame's size, as the server raises it; the fixed
  0.7's false count beside it) with ``top_k`` the instance count plus 3 (room for false ones
  to show);
- featuremap's time (median of 3), and beside it the time of an exhaustive
  search over the same grid (0.5 degree steps, the scene's scales) by OpenCV's
  masked matchTemplate and by featuremap's own variant bank (one Matcher of
  every variant). Both are far too slow to run whole on large scenes: they
  are timed on ``SAMPLE`` evenly spaced variants of the grid and scaled to the
  whole grid (printed with ~).

Targets (2-core machine): every instance right, no false detection, median
time at most 0.05x the exhaustive OpenCV search.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import pose_scenes  # noqa: E402

from featuremap.service.engine import Matcher, PoseSearch, calibrated_threshold  # noqa: E402
from featuremap.service.engine.texture import for_frame  # noqa: E402

#: Variants of the exhaustive grid actually timed (the rest extrapolated).
SAMPLE = 6
#: The client's default threshold for ccoeff_normed.
THRESHOLD = 0.7


def truth() -> dict:
    return json.loads((HERE.parent / "data" / "pose_truth.json").read_text())


def judge(poses, instances: list[dict], clipped: set[int]) -> tuple[int, int, float, float]:
    """(right, false, worst px, worst degrees) of ``poses`` against the truth's ``instances``."""
    used, right, false, worst_px, worst_deg = set(), 0, 0, 0.0, 0.0
    for pose in poses:
        match = None
        for i, inst in enumerate(instances):
            if i in used:
                continue
            px = math.hypot(pose.cx - inst["cx"], pose.cy - inst["cy"])
            deg = abs((pose.angle - inst["angle"] + 180.0) % 360.0 - 180.0)
            if px <= (1.5 if i in clipped else 1.0) and deg <= 0.5:
                match = (i, px, deg)
                break
        if match is None:
            false += 1
            continue
        used.add(match[0])
        right += 1
        worst_px, worst_deg = max(worst_px, match[1]), max(worst_deg, match[2])
    return right, false, worst_px, worst_deg


def variant(template: np.ndarray, angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The template rotated and scaled on a canvas holding it, and the mask of the pixels it covers whole."""
    h, w = template.shape[:2]
    rad = math.radians(angle)
    cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
    side_w = int(math.ceil(scale * (w * cos + h * sin))) | 1
    side_h = int(math.ceil(scale * (w * sin + h * cos))) | 1
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
    matrix[:, 2] += np.array([(side_w - 1) / 2.0, (side_h - 1) / 2.0]) - ((w - 1) / 2.0, (h - 1) / 2.0)
    image = cv2.warpAffine(template, matrix, (side_w, side_h), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(np.ones((h, w), np.float32), matrix, (side_w, side_h), flags=cv2.INTER_LINEAR)
    return image, (cover >= 0.999).astype(np.uint8)


def exhaustive_seconds(scene, grid: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds of an exhaustive search over ``grid`` by OpenCV and by featuremap's bank, from a sample of it."""
    chosen = [grid[int(i)] for i in np.linspace(0, len(grid) - 1, min(SAMPLE, len(grid)))]
    variants = [variant(scene.template, angle, scale) for angle, scale in chosen]
    frame = scene.frame
    started = time.perf_counter()
    for image, mask in variants:
        if image.shape[0] <= frame.shape[0] and image.shape[1] <= frame.shape[1]:
            cv2.matchTemplate(frame, image, cv2.TM_CCOEFF_NORMED, mask=mask)
    opencv = (time.perf_counter() - started) / len(variants) * len(grid)
    bank = Matcher([image for image, _ in variants], masks=[mask for _, mask in variants], method="ccoeff_normed")
    bank(frame)  # plans and compiles
    started = time.perf_counter()
    bank(frame)
    ours = (time.perf_counter() - started) / len(variants) * len(grid)
    return opencv, ours


def grid_of(scene) -> list[tuple[float, float]]:
    low, high = scene.angles
    angles = np.arange(low, high, 0.5) if high - low >= 360.0 else np.arange(low, high + 1e-9, 0.5)
    if scene.scales[1] > scene.scales[0]:
        scales = np.exp(np.linspace(math.log(scene.scales[0]), math.log(scene.scales[1]), 9))
    else:
        scales = np.array([scene.scales[0]])
    return [(float(a), float(s)) for a in angles for s in scales]


def main() -> None:
    quick = "--quick" in sys.argv
    known = truth()
    print(f"pose search on real-photograph scenes (the default decision: {THRESHOLD} raised to the part's texture "
          "threshold, 'at 0.7' the false ones at a fixed 0.7; right: within 1 px and 0.5 deg of the "
          "exhaustive truth, 1.5 px clipped); exhaustive times ~ scaled from "
          f"{SAMPLE} variants of a 0.5-degree grid")
    header = (f"{'scene':<14}{'size':>11}{'part':>9}{'thresh':>7}{'right':>8}{'false':>6}{'at 0.7':>7}"
              f"{'worst px':>9}{'deg':>6}"
              f"{'featuremap':>12}{'OpenCV exh.':>13}{'bank exh.':>11}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    ratios, totals = [], [0, 0, 0, 0]
    for name in pose_scenes.names():
        scene = pose_scenes.build(name)
        instances = known[name]["instances"] if name in known else scene.instances
        search = PoseSearch(scene.template, angles=scene.angles, scales=scene.scales)
        top_k = len(instances) + 3
        threshold = for_frame(calibrated_threshold(scene.template, "ccoeff_normed"), scene.frame.shape[0] * scene.frame.shape[1])
        poses = search.search(scene.frame, top_k=top_k, min_score=threshold)
        times = []
        for _ in range(1 if quick else 3):
            started = time.perf_counter()
            search.search(scene.frame, top_k=top_k, min_score=threshold)
            times.append(time.perf_counter() - started)
        ms = statistics.median(times) * 1e3
        right, false, worst_px, worst_deg = judge(poses, instances, set(scene.clipped))
        fixed_false = judge(search.search(scene.frame, top_k=top_k, min_score=THRESHOLD), instances,
                            set(scene.clipped))[1]
        totals[0] += right
        totals[1] += false
        totals[3] += fixed_false
        totals[2] += len(instances)
        opencv, bank = exhaustive_seconds(scene, grid_of(scene))
        ratios.append(ms / 1e3 / opencv)
        height, width = scene.frame.shape[:2]
        th, tw = scene.template.shape[:2]
        print(f"{name:<14}{f'{width}x{height}':>11}{f'{tw}x{th}':>9}{threshold:7.3f}{f'{right}/{len(instances)}':>8}"
              f"{false:>6}{fixed_false:>7}"
              f"{worst_px:9.2f}{worst_deg:6.2f}{ms:10.0f}ms{opencv:11.1f} s~{bank:9.1f} s~{ms / 1e3 / opencv:8.4f}")
    print(f"\nall scenes: {totals[0]}/{totals[2]} instances right, {totals[1]} false (target: all right, none "
          f"false; {totals[3]} at a fixed 0.7); "
          f"median time {statistics.median(ratios):.4f}x the exhaustive OpenCV search (target at most 0.05x)")


if __name__ == "__main__":
    main()
