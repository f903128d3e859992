"""Slow, obviously correct float64 references for the engine (house rule 3).

Every value is computed from its window alone, straight from the formulas in
DESIGN.md and OpenCV's documentation, with the border built by explicit index
arithmetic. Nothing here shares code with the engine.
"""

from __future__ import annotations

import numpy as np

# The engine's documented flatness rule: a window (masked or not) is flat when its variance (its
# energy, for ccorr_normed and sqdiff_normed) is zero to within rounding, however dark or bright
# it is -- here, in float64 from the window alone, within FLAT_EXACT of its raw energy.
FLAT_EXACT = 1e-20


def border_index(i: int, n: int, border: str) -> int | None:
    """Source index for padded index ``i`` of an axis of length ``n`` (None: constant)."""
    if 0 <= i < n:
        return i
    if border == "constant":
        return None
    if border == "replicate":
        return min(max(i, 0), n - 1)
    if n == 1:  # reflect-101 of a single pixel is that pixel
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return i if i < n else period - i


def pad(image: np.ndarray, top: int, bottom: int, left: int, right: int, border: str, value: float):
    """Pad an HxWxC float64 image."""
    h, w, c = image.shape
    out = np.full((h + top + bottom, w + left + right, c), float(value))
    for y in range(out.shape[0]):
        sy = border_index(y - top, h, border)
        for x in range(out.shape[1]):
            sx = border_index(x - left, w, border)
            if sy is not None and sx is not None:
                out[y, x] = image[sy, sx]
    return out


def padded(f, h, w, padding, border, border_value):
    """The frame extended for an h x w template under ``padding``."""
    if padding == "valid":
        return f
    if padding == "same":
        return pad(f, h // 2, h - 1 - h // 2, w // 2, w - 1 - w // 2, border, border_value)
    return pad(f, h - 1, h - 1, w - 1, w - 1, border, border_value)


def _as3(a):
    a = np.asarray(a, dtype=np.float64)
    return a[:, :, None] if a.ndim == 2 else a


def window_score(window, template, mask, method):
    """The score of one window (h, w, C) for a template (h, w, C) and weights (h, w)."""
    m = mask[:, :, None]
    t, i = template, window
    if method in ("ccoeff", "ccoeff_normed"):
        msum = mask.sum()
        mt = (m * t).sum(axis=(0, 1)) / msum if msum > 0 else 0.0
        mi = (m * i).sum(axis=(0, 1)) / msum if msum > 0 else 0.0
        tp, ip = m * (t - mt), m * (i - mi)
    else:
        tp, ip = m * t, m * i
    if method in ("sqdiff", "sqdiff_normed"):
        num = float((((t - i) * m) ** 2).sum())
    else:
        num = float((tp * ip).sum())
    if method in ("sqdiff", "ccorr", "ccoeff"):
        return num
    tenergy = float((tp**2).sum())
    wenergy = float((ip**2).sum())
    raw_energy = float(((m * i) ** 2).sum())
    flat = wenergy <= FLAT_EXACT * raw_energy or tenergy <= 0.0 or wenergy <= 0.0
    t = 0.0 if flat else float(np.sqrt(tenergy * wenergy))
    # The documented convention (OpenCV's): rounding past +-1 is clamped,
    # anything further is "no evidence" (0), or "no match" (1) for sqdiff_normed.
    if abs(num) < t:
        return num / t
    if abs(num) < 1.125 * t:
        return 1.0 if num > 0 else -1.0
    return 1.0 if method == "sqdiff_normed" else 0.0


def naive_match(frame, template, *, method="ccoeff_normed", padding="valid", border="constant",
                border_value=0.0, stride=1, mask=None):
    """Reference map of one template, float64."""
    f, t = _as3(frame), _as3(template)
    h, w = t.shape[:2]
    weights = np.ones((h, w)) if mask is None else (
        (np.asarray(mask) != 0).astype(np.float64) if np.asarray(mask).dtype in (np.uint8, np.bool_)
        else np.asarray(mask, dtype=np.float64))
    p = padded(f, h, w, padding, border, border_value)
    ly, lx = p.shape[0] - h + 1, p.shape[1] - w + 1
    ys, xs = range(0, ly, stride), range(0, lx, stride)
    out = np.empty((len(ys), len(xs)))
    for oy, y in enumerate(ys):
        for ox, x in enumerate(xs):
            out[oy, ox] = window_score(p[y:y + h, x:x + w], t, weights, method)
    return out


def naive_ssim(frame, template, *, data_range, padding="valid", border="constant", border_value=0.0, stride=1):
    """Reference SSIM map: sample statistics of each whole window, mean over channels."""
    f, t = _as3(frame), _as3(template)
    h, w = t.shape[:2]
    p = padded(f, h, w, padding, border, border_value)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ys, xs = range(0, p.shape[0] - h + 1, stride), range(0, p.shape[1] - w + 1, stride)
    out = np.empty((len(ys), len(xs)))
    ddof = 1 if h * w > 1 else 0
    for oy, y in enumerate(ys):
        for ox, x in enumerate(xs):
            values = []
            for c in range(t.shape[2]):
                a, b = p[y:y + h, x:x + w, c].ravel(), t[:, :, c].ravel()
                cov = float(np.sum((a - a.mean()) * (b - b.mean()))) / max(a.size - 1, 1)
                values.append(((2 * a.mean() * b.mean() + c1) * (2 * cov + c2))
                              / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (a.var(ddof=ddof) + b.var(ddof=ddof) + c2)))
            out[oy, ox] = np.mean(values)
    return out
