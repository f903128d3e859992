"""Frames and templates of extreme magnitude: the range the kernels take as they are, and powers of two.

float32 sums of squares overflow near 1e19 and products underflow near
1e-19. Frames, templates and float mask weights outside ``SAFE_MAGNITUDES``
are scaled by powers of two (exact) to magnitudes near 1, matched, and the
maps scaled back (:meth:`featuremap.service.engine.Matcher.__call__`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scores import CCOEFF_NORMED, CCORR_NORMED, SQDIFF, SQDIFF_NORMED, SSIM

#: Magnitudes (largest absolute value) the kernels take as they are: squares
#: and sums of a window stay well inside float32's range.
SAFE_MAGNITUDES = (2.0 ** -40, 2.0 ** 40)


def is_safe(magnitude: float) -> bool:
    """Whether values of this largest magnitude are matched without scaling."""
    return magnitude == 0.0 or SAFE_MAGNITUDES[0] <= magnitude <= SAFE_MAGNITUDES[1]


def exponent(magnitude: float) -> int:
    """e such that magnitude / 2**e lies in [0.5, 1) (0 for 0)."""
    return int(np.frexp(magnitude)[1]) if magnitude > 0.0 else 0


def joint_exponents(code: int, frame: float, templates: float) -> tuple[int, int]:
    """The powers of two the frame and the templates are scaled by (one for both where the score needs it).

    The normalised methods do not change when frame and template are scaled;
    ccorr and ccoeff scale with both; the sqdiff pair and ssim (whose data
    range scales too) take frame and templates at one joint scale.
    """
    frame_exp, template_exp = exponent(frame), exponent(templates)
    if code in (SQDIFF, SQDIFF_NORMED, SSIM):
        frame_exp = template_exp = max(frame_exp, template_exp)
    return frame_exp, template_exp


def restore(maps: list[np.ndarray], code: int, masked: Sequence[bool], frame_exp: int, template_exp: int,
            mask_exp: int) -> list[np.ndarray]:
    """Maps of scaled inputs scaled back: values past float32's range clamped to its largest finite value,
    so that every finite input gives a finite map."""
    if code in (SQDIFF_NORMED, CCORR_NORMED, CCOEFF_NORMED, SSIM):
        return maps
    limit = float(np.finfo(np.float32).max)
    out = []
    for score_map, has_mask in zip(maps, masked):
        power = template_exp + frame_exp + (2 * mask_exp if has_mask else 0)
        restored = np.ldexp(score_map.astype(np.float64), power)
        out.append(np.clip(restored, -limit, limit).astype(np.float32))
    return out
