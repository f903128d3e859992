"""Error bounds for the engine's maps, derived from float32 rounding (house rule: no fitted tolerances).

Every engine test compares a map with the float64 reference of tests/naive.py
and allows, position by position, what float32 arithmetic can make of that
computation on *any* CPU: any summation order, any lane count, with or without
fused multiply-adds. A bound here never holds "because it held on one machine";
each term below is written down with where it comes from.

Notation: u = 2**-24, the unit roundoff of float32 (u64 = 2**-53 for float64);
gamma(n) = n u / (1 - n u) (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., section 3.1).

Dot products (the direct path)
    A sum of n products computed in float32 in any order, fused or not, is
    within gamma(n) * sum |a_i b_i| of the exact sum (Higham eq. 3.5; an FMA
    only removes roundings). The operands are themselves float32 roundings of
    exact values (the kernel, computed in float64 then stored as float32; the
    frame less a float32 centring constant), each one more relative error u:
    the engine's correlation is within gamma(n + 3) * A, where
    ``A = sum |k_i| |f_i|`` over the window, k the kernel and f the frame
    planes *as the engine forms them* (see :func:`operands`).

Transforms (the spectral path)
    OpenCV's real DFT, the spectra's product summed over planes, the inverse
    with its 1/N scale. With L radix-2-equivalent stages and eta = L mu per
    transform (mu = 8u per stage: a butterfly's complex multiply-add with a
    rounded twiddle is within 5.7u (Higham Thm 24.2); 8u also covers the radix-3
    and radix-5 butterflies per log2 of their radix, and the real-input
    packing counted as two more stages), every output of the correlation is
    within ``(3 eta + 5u) * sum_c ||F_c||_2 ||K_c||_1`` of the exact one:
    the frame spectrum's error is at most eta sqrt(N) ||F||_2 in 2-norm, the
    kernel spectrum's at most eta ||K||_1 per element; each times the other
    spectrum (|K^| <= ||K||_1, ||F^||_2 = sqrt(N) ||F||_2), plus the product's
    own rounding (sqrt(2) gamma(2)), the inverse's eta and the scale's u; the
    inverse's 1/N and Parseval turn the 2-norm back into a per-element bound.
    The operands' own roundings (kernel to float32, frame centred in float32)
    add gamma(3) A, as on the direct path. Masked groups transform in float64:
    the transform's part with u64.

Scores (float64, scores.py)
    ccorr, ccoeff: the correlation's bound, plus u |value| for the float32 map.
    sqdiff: energy - 2 corr + tenergy in float64: twice the correlation's bound.
    Normalised: the numerator's bound over sqrt(T W) (T, W the template's and
    the window's energies as the method defines them), plus the float64
    window statistics' error (:func:`integral_bound`, or the engine's
    documented flatness tolerance of 16 u64 pixels M^2 where that is larger)
    and u for the float32 map. Where that
    bound reaches the clamping rule (|r| >= 1 clamps to +-1, >= 1.125 falls back to
    0 or 1), the fallback is allowed; where the reference's denominator is
    exactly zero (a flat window or template, made exact by the test's own
    inputs), the engine must give the convention's value exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from naive import _as3, padded

U32 = 2.0 ** -24
U64 = 2.0 ** -53
#: Per radix-2-equivalent stage of a transform, in units of the unit roundoff (see the module's docstring).
STAGE_UNITS = 8.0
#: The engine's flatness tolerance on a window's variance, in units of u64 x pixels x M^2 (scores.py).
FLAT_UNITS = 16.0

RAW = ("sqdiff", "ccorr", "ccoeff")
NORMED = ("sqdiff_normed", "ccorr_normed", "ccoeff_normed")


def integral_bound(planes: np.ndarray) -> float:
    """Bound on a window sum (or sum of squares) read from float64 integral images of ``planes``.

    A table built by running sums along rows, then down columns, holds in each
    entry at most H + W roundings of partial sums no larger than the whole
    table's sum S (of squares, M^2 per pixel at most); a window reads four
    entries: within 4 (H + W + 2) u64 S.
    """
    height, width = planes.shape[:2]
    largest = float(np.abs(planes).max() + 1.0) ** 2 * planes.size
    return 4 * (height + width + 2) * U64 * largest


def gamma(n: int, u: float = U32) -> float:
    """Higham's gamma_n: the relative error of n roundings in a row, n u / (1 - n u)."""
    return n * u / (1.0 - n * u)


def dot_bound(terms: int, magnitude, u: float = U32):
    """Bound on a float32 dot product of ``terms`` products whose operands were each rounded once.

    ``magnitude`` is sum |a_i b_i| (scalar or array): gamma(terms + 3) * magnitude.
    """
    return gamma(terms + 3, u) * magnitude


def transform_stages(height: int, width: int) -> int:
    """Radix-2-equivalent stages of a 2-D real DFT of a plane that holds ``height`` x ``width``.

    The fast size is at most twice the plane's (a power of two is), so each axis has at most
    ceil(log2 n) + 1 stages; two more for the real packing.
    """
    return (math.ceil(math.log2(max(height, 2))) + 1) + (math.ceil(math.log2(max(width, 2))) + 1) + 2


def transform_bound(height: int, width: int, frame_norm2: float, kernel_norm1: float, u: float = U32) -> float:
    """Bound on every output of a correlation through DFTs (see the module's docstring).

    ``frame_norm2``, ``kernel_norm1``: sum over planes of ||F_c||_2 ||K_c||_1 is passed as their
    product when there is one plane; callers with several pass the sum in ``frame_norm2`` and 1.
    """
    eta = STAGE_UNITS * u * transform_stages(height, width)
    return (3.0 * eta + 5.0 * u) * frame_norm2 * kernel_norm1


def _weights(mask, shape):
    if mask is None:
        return np.ones(shape)
    mask = np.asarray(mask)
    if mask.dtype in (np.uint8, np.bool_):
        return (mask != 0).astype(np.float64)
    return mask.astype(np.float64)


@dataclass
class Operands:
    """What the engine correlates, in float64: the frame planes and one kernel, both as it centres them."""

    frame: np.ndarray  # (Hp, Wp, C): padded, less the frame's centring constant
    kernel: np.ndarray  # (h, w, C): the kernel, mask weights squared included
    weights: np.ndarray  # (h, w): the mask's weights (ones when unmasked)
    padded: np.ndarray | None = None  # (Hp, Wp, C): the padded frame as it is (nothing taken off)


def operands(frame, template, method, *, mask=None, bank=None, padding="valid", border="constant",
             border_value=0.0, centred=True) -> Operands:
    """The frame and kernel as the engine forms them (matcher._planes, plan.template_kernels).

    - ccoeff pair: the padded frame less each plane's mean; the template less its (mask-weighted)
      channel means, times M^2 when masked.
    - ccorr pair: the frame as it is; the template less its mean (over all channels; masked: the
      M^2-weighted channel means), times M^2; the mean is added back in float64 (exact here).
    - sqdiff pair: frame and template less one offset, the mean of the bank's channel means
      (rounded when every template holds integers).

    ``bank``: every template of the Matcher (the sqdiff offset is the bank's); default the one.
    ``centred=False``: nothing taken off either (a peer such as OpenCV, which correlates the
    data as it comes and takes the means off the sums).
    """
    t = _as3(template)
    h, w = t.shape[:2]
    m = _weights(mask, (h, w))
    m3, m2 = m[:, :, None], (m * m)[:, :, None]
    f = raw = padded(_as3(frame), h, w, padding, border, border_value)
    if not centred:
        kernel = m2 * t
    elif method.startswith("ccoeff"):
        f = f - f.mean(axis=(0, 1))
        msum = m.sum()
        kernel = m2 * (t - ((m3 * t).sum(axis=(0, 1)) / msum if msum > 0 else 0.0))
    elif method.startswith("ccorr"):
        if mask is None:
            kernel = t - t.mean()
        else:
            msum2 = m2.sum()
            kernel = m2 * (t - ((m2 * t).sum(axis=(0, 1)) / msum2 if msum2 > 0 else 0.0))
    elif method.startswith("sqdiff"):
        images = [_as3(b) for b in (bank if bank is not None else [template])]
        offset = np.mean([b.mean(axis=(0, 1)) for b in images], axis=0)
        if all(np.array_equal(b, np.round(b)) for b in images):
            offset = np.round(offset)
        f = f - offset
        kernel = m2 * (t - offset)
    else:
        raise ValueError(f"no bound for {method}")
    return Operands(frame=f, kernel=kernel, weights=m, padded=raw)


def _windows(plane: np.ndarray, h: int, w: int, stride: int) -> np.ndarray:
    """(Ho, Wo, h, w, C) view of every window of an (Hp, Wp, C) plane at ``stride``."""
    view = sliding_window_view(plane, (h, w), axis=(0, 1))  # (Ho, Wo, C, h, w)
    return view[::stride, ::stride].transpose(0, 1, 3, 4, 2)


def correlation_bound(ops: Operands, algorithm: str, stride: int = 1) -> np.ndarray:
    """Per position: how far the engine's correlation (before scoring) can be from the exact one."""
    h, w, channels = ops.kernel.shape
    windows = _windows(np.abs(ops.frame), h, w, stride)
    magnitude = np.einsum("yxijc,ijc->yx", windows, np.abs(ops.kernel))
    direct = dot_bound(h * w * channels, magnitude)
    if algorithm == "direct":
        return direct
    masked = not np.all(ops.weights == 1.0)
    u = U64 if masked else U32
    norms = sum(float(np.sqrt((ops.frame[:, :, c] ** 2).sum())) * float(np.abs(ops.kernel[:, :, c]).sum())
                for c in range(channels))
    spectral = gamma(3) * magnitude + transform_bound(*ops.frame.shape[:2], norms, 1.0, u=u)
    if algorithm == "spectral":
        return spectral
    return np.maximum(direct, spectral)  # auto: either


@dataclass
class MapBound:
    """Position by position, what the engine's map may differ from the float64 reference."""

    limit: np.ndarray  # allowed |result - reference|
    fallback: np.ndarray  # bool: the clamping rule's fallback value is allowed here too
    degenerate: np.ndarray  # bool: the reference's denominator is exactly 0: the convention's value, exactly


def map_bound(frame, template, *, method, algorithm, padding="valid", border="constant", border_value=0.0,
              stride=1, mask=None, bank=None, centred=True) -> MapBound:
    """The bound of every position of one template's map (see the module's docstring).

    ``algorithm``: "direct", "spectral" or "auto" (either). ``centred``: see :func:`operands`.
    """
    ops = operands(frame, template, method, mask=mask, bank=bank, padding=padding, border=border,
                   border_value=border_value, centred=centred)
    h, w, channels = ops.kernel.shape
    corr = correlation_bound(ops, algorithm, stride)
    t = _as3(template)
    raw_frame = ops.padded
    windows = _windows(raw_frame, h, w, stride)
    m = ops.weights
    m3 = m[:, :, None]
    scale64 = integral_bound(raw_frame)
    if method in ("ccorr", "ccoeff"):
        return _plain(corr + scale64)
    if method == "sqdiff":
        return _plain(2 * corr + scale64)
    if method == "ccorr_normed" or method == "sqdiff_normed":
        tenergy = float(((m3 * t) ** 2).sum())  # sum M^2 T^2: the norm of both methods' template
        wenergy = np.einsum("yxijc,ij->yx", windows ** 2, m * m)
        denominator = np.sqrt(tenergy * wenergy)
        numerator = 2 * corr if method == "sqdiff_normed" else corr
        variance_error = scale64
    else:  # ccoeff_normed
        msum = m.sum()
        tmean = (m3 * t).sum(axis=(0, 1)) / msum if msum > 0 else 0.0
        tenergy = float(((m3 * (t - tmean)) ** 2).sum())
        wmean = np.einsum("yxijc,ij->yxc", windows, m) / (msum if msum > 0 else 1.0)  # an empty mask: 0
        centred = windows - wmean[:, :, None, None, :]
        wenergy = np.einsum("yxijc,ij->yx", centred ** 2, m * m)
        denominator = np.sqrt(tenergy * wenergy)
        numerator = corr
        variance_error = max(scale64, FLAT_UNITS * U64 * raw_frame.size
                             * float(np.abs(ops.frame).max()) ** 2 * float((m * m).max()))
    degenerate = denominator == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(degenerate, np.inf, variance_error / np.where(degenerate, 1.0, wenergy))
        limit = (numerator + scale64) / np.where(degenerate, 1.0, denominator) + relative + U32
    limit = np.where(degenerate, np.inf, limit)
    return MapBound(limit=limit, fallback=limit >= 0.125, degenerate=degenerate)


def _plain(limit) -> MapBound:
    shape = np.shape(limit)
    return MapBound(limit=np.asarray(limit), fallback=np.zeros(shape, bool), degenerate=np.zeros(shape, bool))


def assert_within(result, reference, bound: MapBound, method: str, context: str = "", *, clamped=True) -> None:
    """Fail unless every position of ``result`` is within ``bound`` of ``reference`` (float64).

    ``clamped``: the normalised scores must also lie in their range ([-1, 1]; sqdiff_normed [0, 1]),
    as the engine's convention has it (a peer such as OpenCV may pass 1 by its rounding).
    """
    assert result.shape == reference.shape, f"{context}: shape {result.shape} != {reference.shape}"
    assert np.isfinite(result).all(), f"{context}: non-finite values"
    result = result.astype(np.float64)
    limit = allowed_error(reference, bound, method)
    error = np.abs(result - reference)
    ok = error <= limit
    if method in NORMED:
        fallback_value = 1.0 if method == "sqdiff_normed" else 0.0
        ok |= bound.fallback & ((result == fallback_value) | (np.abs(result) == 1.0))
        ok = np.where(bound.degenerate, result == reference, ok)
        low = 0.0 if method == "sqdiff_normed" else -1.0
        if clamped:
            assert ((result >= low) & (result <= 1.0)).all(), f"{context}: a score outside [{low}, 1]"
    if not ok.all():
        where = np.unravel_index(np.argmax(np.where(ok, -np.inf, error - limit)), error.shape)
        raise AssertionError(
            f"{context}: {int((~ok).sum())} of {ok.size} positions outside the bound; at {where}: "
            f"|{result[where]:.9g} - {reference[where]:.9g}| = {error[where]:.3g} > {limit[where]:.3g}")


def allowed_error(reference, bound: MapBound, method: str) -> np.ndarray:
    """Per position: the largest |result - reference| the bound allows (the float32 map's rounding included)."""
    # The float32 map's own rounding of the value: u |reference| (the normalised ones' is in the limit).
    return bound.limit + (U32 * np.abs(reference) if method in RAW else 0.0)


def headroom(result, reference, bound: MapBound, method: str) -> float:
    """The largest error as a fraction of its bound, over the non-degenerate positions (for reports)."""
    limit = allowed_error(reference, bound, method)
    finite = ~bound.degenerate & np.isfinite(limit)
    if not finite.any():
        return 0.0
    return float((np.abs(result.astype(np.float64) - reference)[finite] / limit[finite]).max())


def ssim_bound(frame, template, *, data_range, algorithm, padding="valid", border="constant", border_value=0.0,
               stride=1) -> np.ndarray:
    """Per position bound on the engine's ssim (the mean over channels of each channel's ssim).

    The covariance is a correlation of the frame with the zero-mean channel over n - 1; its bound
    (as :func:`correlation_bound`, one plane) over n - 1, times |d ssim / d cov| <= 2 / (vx + vy + c2)
    (the factor (2 mx my + c1) / (mx^2 + my^2 + c1) is at most 1), plus the float64 statistics and u.
    """
    t = _as3(template)
    h, w, channels = t.shape
    f = padded(_as3(frame), h, w, padding, border, border_value)
    n = h * w
    c2 = (0.03 * data_range) ** 2
    windows = _windows(f, h, w, stride)
    total = 0.0
    for c in range(channels):
        ops = Operands(frame=f[:, :, c:c + 1], kernel=(t[:, :, c] - t[:, :, c].mean())[:, :, None],
                       weights=np.ones((h, w)))
        corr = correlation_bound(ops, algorithm, stride)
        ddof = 1 if n > 1 else 0
        vx = windows[..., c].reshape(*windows.shape[:2], -1).var(axis=2, ddof=ddof)
        vy = t[:, :, c].var(ddof=ddof)
        scale64 = integral_bound(f)
        total = total + 2.0 * (corr + scale64) / max(n - 1, 1) / (vx + vy + c2)
    return total / channels + U32
