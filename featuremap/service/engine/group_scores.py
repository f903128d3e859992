"""One group's maps for one frame: correlations on its path, then the method's scores."""

from __future__ import annotations

import numpy as np

from .direct import correlate_direct, match_direct
from .frame_work import FrameWork
from .masked import masked_scores
from .plan import Group
from .scores import CCOEFF, CCOEFF_NORMED, CCORR, CCORR_NORMED, SSIM, add_means, finish_ssim, map_scores, window_stats

_NO_SUMS = np.zeros((0, 1, 1))
_NO_MEANS = np.zeros(0)


def group_scores(code: int, group: Group, kspectra, out_shape: tuple[int, int], work: FrameWork) -> np.ndarray:
    """The scores of ``group``'s members: (members, Ho, Wo) float32.

    ``kspectra`` is None on the direct path, the kernel spectra on the
    spectral one.
    """
    if group.masked:
        return _masked(code, group, kspectra, out_shape, work)
    if code in (CCORR, CCOEFF):
        # The correlation is the score.
        return correlations(group, kspectra, out_shape, work, restore=code == CCORR)[: len(group.members)]
    if code == SSIM:
        return _ssim(group, kspectra, out_shape, work)
    return _plain(code, group, kspectra, out_shape, work)


def correlations(group: Group, kspectra, out_shape, work: FrameWork, restore: bool = False) -> np.ndarray:
    """The group's raw correlations, one map per kernel.

    ``restore``: add back the channel means taken off the members' kernels
    (the ccorr pair, see plan.template_kernels).
    """
    raw = np.empty((len(group.kernels), *out_shape), np.float32)
    tmeans = group.tmeans if restore else _NO_MEANS
    sums = work.sum_integral() if restore else _NO_SUMS
    oy, ox = group.offset
    if kspectra is None:
        correlate_direct(
            work.direct_planes(), group.direct_kernels, group.direct_active, oy, group.direct_ox,
            work.stride, tmeans, sums, ox, group.height, group.width, raw,
        )
        return raw
    wsums = work.window_sums(group, out_shape) if restore else None

    def store(k: int, corr: np.ndarray) -> None:
        if restore:
            add_means(corr, tmeans[k], wsums)
        raw[k] = corr

    work.spectral(group, kspectra, out_shape, store)
    return raw


def _plain(code: int, group: Group, kspectra, out_shape, work: FrameWork) -> np.ndarray:
    """Scores of an unmasked group under a normalised method or sqdiff."""
    oy, ox = group.offset
    out = np.empty((len(group.members), *out_shape), np.float32)
    sums, sqsum = work.integrals()
    tmeans = group.tmeans if code == CCORR_NORMED else _NO_MEANS
    if kspectra is None:
        match_direct(
            work.direct_planes(), group.direct_kernels, group.direct_active, oy, group.direct_ox,
            work.stride, sums, sqsum, ox, work.stride, group.height, group.width, group.tenergy,
            group.tnorm_energy, tmeans, code, work.flat(), work.norm_offsets(code), out,
        )
        return out
    energy = work.scratch.get("energy", out_shape)
    inv_norm = work.scratch.get("inverse norm", out_shape)
    window_stats(sums, sqsum, oy, ox, work.stride, group.height, group.width, code == CCOEFF_NORMED,
                 work.flat(), work.norm_offsets(code), energy, inv_norm)
    wsums = work.window_sums(group, out_shape) if len(tmeans) else None

    def score(k: int, corr: np.ndarray) -> None:
        if wsums is not None:
            add_means(corr, tmeans[k], wsums)
        map_scores(code, corr, energy, inv_norm, group.tenergy[k], group.tnorm_energy[k], out[k])

    work.spectral(group, kspectra, out_shape, score)
    return out


def _ssim(group: Group, kspectra, out_shape, work: FrameWork) -> np.ndarray:
    """SSIM of an unmasked group: per-channel covariances, then the formula per window."""
    raw = correlations(group, kspectra, out_shape, work)
    sums, sqsums = work.channel_integrals()
    out = np.empty((len(group.members), *out_shape), np.float32)
    c1, c2 = (0.01 * work.data_range) ** 2, (0.03 * work.data_range) ** 2
    oy, ox = group.offset
    finish_ssim(
        raw, group.index, sums, sqsums, oy, ox, work.stride, group.height, group.width,
        np.stack([p.means for p in group.prepared]), np.stack([p.variances for p in group.prepared]), c1, c2,
        out,
    )
    return out


def _masked(code: int, group: Group, kspectra, out_shape, work: FrameWork) -> np.ndarray:
    """Scores of a masked group, mask by mask (see masked.py)."""
    raw = correlations(group, kspectra, out_shape, work)
    out = np.empty((len(group.members), *out_shape), np.float32)
    prefix, sqprefix = work.row_prefix()
    oy, ox = group.offset
    sets = group.mask_sets
    masked_scores(
        raw, sets.run_start, sets.rows, sets.starts, sets.ends, sets.weights, sets.squares, sets.member_start,
        sets.members, sets.msum, sets.msum2, sets.binary, sets.largest_square, group.tenergy,
        group.tnorm_energy, group.tsums, prefix, sqprefix, oy, ox, work.stride,
        code, work.flat(), work.norm_offsets(code), out,
    )
    return out
