"""Masked templates: each window's masked statistics, exact, from runs of the mask.

A masked template needs, per window, the masked sums of the frame (per
channel) and its masked energy, besides the correlation with the template
itself. Taken as correlations with the mask, those would cost as much as the
template's own kernel each, and, summed in float32, lose the window's
variance wherever the window is far darker or brighter than the frame (a
near-black window in a bright frame: its variance is a part in 10^5 of its
energy about the frame's mean).

Instead the mask is cut into runs: stretches of one row with one weight (a
binary mask's runs of ones; one run per row for a rotated rectangle). A run's
sum over a window is the difference of two entries of the frame's float64
row prefix sums, so a window's statistics cost two lookups per run, are exact
to float64 rounding, and are computed once for every template that shares the
mask (the rotated variants of several templates at one angle and scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .runtime import JIT
from .scores import CCOEFF, CCOEFF_NORMED, CCORR, CCORR_NORMED, SQDIFF_NORMED, inverse_norm, row_scores


@dataclass(frozen=True)
class MaskRuns:
    """A mask as runs of equal weight: run r covers columns ``starts[r]:ends[r]`` of row ``rows[r]``."""

    rows: np.ndarray  # (R,) int64
    starts: np.ndarray  # (R,) int64
    ends: np.ndarray  # (R,) int64
    weights: np.ndarray  # (R,) float64, M
    squares: np.ndarray  # (R,) float64, M^2
    msum: float  # sum(M)
    msum2: float  # sum(M^2)
    binary: bool  # every weight 0 or 1: the M^2 sums are the M sums


def mask_runs(mask: np.ndarray) -> MaskRuns:
    """Cut an (h, w) weight mask into runs of equal, non-zero weight along its rows."""
    m = np.asarray(mask, np.float64)
    rows, starts, ends, weights = [], [], [], []
    for i, row in enumerate(m):
        j = 0
        while j < len(row):
            if row[j] == 0.0:
                j += 1
                continue
            end = j + 1
            while end < len(row) and row[end] == row[j]:
                end += 1
            rows.append(i)
            starts.append(j)
            ends.append(end)
            weights.append(row[j])
            j = end
    w = np.array(weights, np.float64)
    return MaskRuns(
        rows=np.array(rows, np.int64), starts=np.array(starts, np.int64), ends=np.array(ends, np.int64),
        weights=w, squares=w * w, msum=float(m.sum()), msum2=float((m * m).sum()),
        binary=bool(np.all((m == 0.0) | (m == 1.0))),
    )


@njit(error_model="numpy", **JIT)
def _add_run(acc, row, a, b, stride, weight):
    """acc[x] += weight * (row[b + x*stride] - row[a + x*stride]): a run's sum over a row of windows."""
    width = acc.shape[0]
    if stride == 1:
        hi = row[b: b + width]
        lo = row[a: a + width]
        for x in range(width):
            acc[x] += weight * (hi[x] - lo[x])
    else:
        for x in range(width):
            acc[x] += weight * (row[b + x * stride] - row[a + x * stride])


@dataclass(frozen=True)
class MaskSets:
    """A group's distinct masks, packed: set s has runs ``run_start[s]:run_start[s+1]`` and the
    templates (positions in the group) ``members[member_start[s]:member_start[s+1]]``."""

    run_start: np.ndarray  # (S+1,) int64
    rows: np.ndarray  # (R,) int64, as MaskRuns, all sets one after another
    starts: np.ndarray
    ends: np.ndarray
    weights: np.ndarray  # (R,) float64
    squares: np.ndarray
    member_start: np.ndarray  # (S+1,) int64
    members: np.ndarray  # (n,) int64
    msum: np.ndarray  # (S,) float64
    msum2: np.ndarray
    binary: np.ndarray  # (S,) bool
    largest_square: np.ndarray  # (S,) float64: the largest M^2 (scales the flatness tolerance)

    def __len__(self) -> int:
        return len(self.msum)


def pack_masks(masks: list[np.ndarray]) -> MaskSets:
    """Group the templates' masks (one per template, in group order) by content, cut each distinct one into runs."""
    sharing: dict[bytes, list[int]] = {}
    for position, mask in enumerate(masks):
        sharing.setdefault(np.ascontiguousarray(mask).tobytes() + str(mask.shape).encode(), []).append(position)
    sets = [(mask_runs(masks[positions[0]]), positions) for positions in sharing.values()]
    return MaskSets(
        run_start=np.cumsum([0] + [len(r.rows) for r, _ in sets]).astype(np.int64),
        rows=np.concatenate([r.rows for r, _ in sets]).astype(np.int64),
        starts=np.concatenate([r.starts for r, _ in sets]).astype(np.int64),
        ends=np.concatenate([r.ends for r, _ in sets]).astype(np.int64),
        weights=np.concatenate([r.weights for r, _ in sets]).astype(np.float64),
        squares=np.concatenate([r.squares for r, _ in sets]).astype(np.float64),
        member_start=np.cumsum([0] + [len(p) for _, p in sets]).astype(np.int64),
        members=np.concatenate([np.array(p, np.int64) for _, p in sets]),
        msum=np.array([r.msum for r, _ in sets]),
        msum2=np.array([r.msum2 for r, _ in sets]),
        binary=np.array([r.binary for r, _ in sets]),
        largest_square=np.array([float(r.squares.max(initial=0.0)) for r, _ in sets]),
    )


@njit(parallel=True, error_model="numpy", **JIT)
def masked_scores(raw, run_start, rows, starts, ends, weights, squares, member_start, members, msums, msum2s,
                  binaries, largest_square, tenergy, tnorm_energy, tsum, prefix, sqprefix, oy, ox, stride, method,
                  flat, offsets, out):
    """Score a masked group, every distinct mask and row of windows in one parallel pass.

    Parameters
    ----------
    raw : float32 array, (K, Ho, Wo)
        Each template's correlation with the frame (kernel M^2 T').
    run_start ... largest_square
        The group's :class:`MaskSets`.
    tenergy, tnorm_energy : float64 arrays, (K,)
        Each template's sum(M^2 T'^2), and the same for the norm (uncentred
        for sqdiff_normed on offset planes).
    tsum : float64 array, (K, C)
        Per channel: the ccoeff pair's sum(M^2 T'_c); the ccorr pair's
        M^2-weighted template mean, taken off its kernel and restored here
        as mean_c sum(M^2 I_c); zeros for the sqdiff pair.
    prefix, sqprefix : float64 arrays
        :func:`.integral.row_prefix` of the (padded) frame's planes.
    oy, ox, stride : int
        The first window's top-left corner in the planes, and the stride.
    method : int
        The method's code.
    flat : float
        The variance at or below which a window is flat (see
        scores.flat_tolerance), times each mask's ``largest_square``.
    offsets : float64 array, (C,) or (0,)
        What was taken off each plane (sqdiff_normed's norm is of the window as it was).
    out : float32 array, (K, Ho, Wo)
        Every template's scores.
    """
    height = out.shape[1]
    for task in prange(len(msums) * height):
        s, y = task // height, task % height
        _mask_row(raw, rows[run_start[s]:run_start[s + 1]], starts[run_start[s]:run_start[s + 1]],
                  ends[run_start[s]:run_start[s + 1]], weights[run_start[s]:run_start[s + 1]],
                  squares[run_start[s]:run_start[s + 1]], members[member_start[s]:member_start[s + 1]], msums[s],
                  msum2s[s], binaries[s], tenergy, tnorm_energy, tsum, prefix, sqprefix, oy + y * stride, ox,
                  stride, method, flat * largest_square[s], offsets, y, out)


# Long by design (77 lines): one loop over a row's windows and a mask's runs, so that every running
# sum (weight, sums, squares per channel) stays a local LLVM can keep in registers; helpers would
# hand them back and forth through arrays.
@njit(error_model="numpy", **JIT)
def _mask_row(raw, rows, starts, ends, weights, squares, members, msum, msum2, binary, tenergy, tnorm_energy,
              tsum, prefix, sqprefix, yy, ox, stride, method, flat, offsets, y, out):
    """One row of windows (top row ``yy``) of the templates ``members`` that share one mask's runs."""
    n_channels = prefix.shape[0]
    width = out.shape[2]
    zero_mean = method == CCOEFF or method == CCOEFF_NORMED
    restore = method == CCORR or method == CCORR_NORMED
    uncentre = method == SQDIFF_NORMED and offsets.shape[0] > 0
    need_sums = zero_mean or uncentre or restore
    # The M^2-weighted sums: the M sums themselves for a binary mask.
    need_cross = (method == CCOEFF_NORMED or uncentre or restore) and not binary
    need_energy = method != CCORR and method != CCOEFF
    inv_m = 1.0 / msum if msum > 0.0 else 0.0
    sums = np.zeros((n_channels if need_sums else 0, width))
    cross = np.zeros((n_channels if need_cross else 0, width))
    energy = np.zeros(width if need_energy else 0)
    for r in range(rows.shape[0]):
        a = ox + starts[r]
        b = ox + ends[r]
        line = yy + rows[r]
        for c in range(sums.shape[0]):
            _add_run(sums[c], prefix[c, line], a, b, stride, weights[r])
        for c in range(cross.shape[0]):
            _add_run(cross[c], prefix[c, line], a, b, stride, squares[r])
        if need_energy:
            _add_run(energy, sqprefix[line], a, b, stride, squares[r])
    # Each loop below runs along x alone, so that it vectorises.
    inv_norm = np.empty(width)
    if method == CCOEFF_NORMED or uncentre:
        # ccoeff_normed: sum M^2 (I - mean)^2 = energy - sum_c (2 mean_c cross_c - mean_c^2 msum2);
        # sqdiff_normed's norm: sum M^2 (I' + o)^2 = energy + sum_c (2 o_c cross_c + o_c^2 msum2).
        for c in range(n_channels):
            cross_c = cross[c] if need_cross else sums[c]
            sums_c = sums[c]
            if uncentre:
                shift = offsets[c]
                for x in range(width):
                    energy_shift = 2.0 * shift * cross_c[x] + shift * shift * msum2
                    inv_norm[x] = energy_shift if c == 0 else inv_norm[x] + energy_shift
            else:
                for x in range(width):
                    mean_c = sums_c[x] * inv_m
                    mean2 = 2.0 * mean_c * cross_c[x] - mean_c * mean_c * msum2
                    inv_norm[x] = mean2 if c == 0 else inv_norm[x] + mean2
        sign = 1.0 if uncentre else -1.0
        for x in range(width):
            inv_norm[x] = inverse_norm(energy[x] + sign * inv_norm[x], 0.0, flat)
    elif need_energy:
        for x in range(width):
            inv_norm[x] = inverse_norm(energy[x], 0.0, flat)
    corr = np.empty(width)
    for m in range(members.shape[0]):
        k = members[m]
        inv_tnorm = 1.0 / np.sqrt(tnorm_energy[k]) if tnorm_energy[k] > 0.0 else np.inf
        source = raw[k, y]
        for x in range(width):
            corr[x] = source[x]
        if zero_mean:
            # sum M^2 T' (I - mean) = corr - sum_c mean_c sum M^2 T'_c (0 for a binary mask).
            for c in range(n_channels):
                factor = tsum[k, c] * inv_m
                if factor != 0.0:
                    for x in range(width):
                        corr[x] -= sums[c, x] * factor
        elif restore:
            # sum M^2 T I = sum M^2 (T - mean) I + sum_c mean_c sum M^2 I_c.
            for c in range(n_channels):
                factor = tsum[k, c]
                cross_c = cross[c] if need_cross else sums[c]
                for x in range(width):
                    corr[x] += cross_c[x] * factor
        if need_energy:
            row_scores(method, corr, out[k, y], energy, inv_norm, inv_tnorm, tenergy[k])
        else:
            target = out[k, y]
            for x in range(width):
                target[x] = corr[x]
