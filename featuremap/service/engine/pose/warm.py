"""Pose search's kernels compiled ahead of the first search (``engine.warmup`` calls :func:`warm_kernels`)."""

from __future__ import annotations

import numpy as np

from .batch import warm_batch
from .scores import _rows, _window_scores, _window_scores_serial, clipped_scores
from .topmaps import warm_maps


def warm_kernels() -> None:
    """Compile pose search's window kernels, serial and parallel, gray and colour; the batched ones and
    the top level's reductions too."""
    for channels in (1, 3):
        image = np.zeros((6, 6, channels), np.float32)
        template = np.ones((4, 4, channels), np.float32)
        weights = np.ones((4, 4), np.float32)
        for kernel in (_window_scores, _window_scores_serial):
            kernel(_rows(image), channels, 0, 0, _rows(template), weights, 0, np.empty((3, 3)))
        clipped_scores(image, template, weights, 0, -1, -1, 0.5, np.empty((3, 3)))
    warm_batch()
    warm_maps()
