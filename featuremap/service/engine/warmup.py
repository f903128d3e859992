"""Compile every kernel before the first real frame."""

from __future__ import annotations

import numpy as np

from .calibration import calibrate
from .halffloat import to_float16
from .matcher import Matcher
from .options import METHODS
from .pose.warm import warm_kernels
from .pose.search import PoseSearch
from .texture import backgrounds


def warmup(device: str = "cpu") -> None:
    """Compile (or load from the on-disk cache) every kernel for every supported dtype.

    Runs a tiny match through each method, path, stride kind and mask kind,
    for uint8 and float32 frames, and a tiny pose search and track, and checks
    the maps are finite. A server
    calls this before it reports SERVING. The float16 map conversion too; and
    :func:`calibrate` sets ``auto``'s cost model for this machine. With
    ``device="cuda"`` the GPU path's kernels too (:func:`warm_cuda`).
    """
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.float32):
        frame = (rng.random((24, 32)) * 255).astype(dtype)
        template = frame[4:12, 6:14].copy()
        mask = np.ones(template.shape, np.uint8)
        for method in METHODS:
            for algorithm in ("direct", "spectral"):
                for stride in (1, 2):
                    for masks in (None, [mask]) if method != "ssim" else (None,):
                        matcher = Matcher(
                            [template], method=method, stride=stride, masks=masks, algorithm=algorithm
                        )
                        if not np.isfinite(matcher(frame)[0]).all():
                            raise RuntimeError(f"warm-up produced a non-finite map for {method}")
    # Pose search's own kernels (window scores, serial and parallel; the grid's reduction) take
    # float32 whatever the frame and the method a runtime number: one search and track compile
    # them; its Matchers' kernels were warmed above.
    scene = (rng.random((72, 96)) * 255).astype(np.float32)
    search = PoseSearch(scene[20:52, 30:62].copy())
    search.track(scene, search.search(scene))
    warm_kernels()
    to_float16(np.zeros(4, np.float32))
    # The texture calibration's background images (made once per process, under a second), so that
    # the first template created does not wait for them.
    backgrounds()
    # auto's cost model for this machine and thread count (cached; ~1 s the first time).
    calibrate()
    if device == "cuda":
        warm_cuda()


def warm_cuda() -> None:
    """Compile the GPU path's kernels: the frame kernels for each frame dtype, then plain, masked and ssim groups."""
    rng = np.random.default_rng(0)
    runs = [(dtype, "ccoeff_normed", False) for dtype in (np.uint8, np.float32, np.float64)]
    runs += [(np.uint8, "sqdiff", True), (np.uint8, "ssim", False)]
    for dtype, method, masked in runs:
        frame = (rng.random((12, 14)) * 255).astype(dtype)
        template = frame[2:7, 3:9].copy()
        masks = [np.ones(template.shape, np.uint8)] if masked else None
        found = Matcher([template], method=method, masks=masks, device="cuda").find([frame], maps=True)
        if not np.isfinite(found[0].maps[0]).all():
            raise RuntimeError(f"the GPU warm-up produced a non-finite map for {method}")
