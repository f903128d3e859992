"""Template-side preparation: kernels per template, groups, and the cost model.

Everything here depends on the templates (and, for the cost model, on the
frame size) but never on a frame's pixels, so a Matcher does it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .direct import block_activity, kernel_block, kernel_blocks, phase_kernels
from .masked import MaskSets, pack_masks
from .scores import CCOEFF, CCOEFF_NORMED, CCORR, CCORR_NORMED, SSIM

# Fitted to forced-direct and forced-spectral timings on the 2-core AVX2
# benchmark machine (VGA and 720p, 1 and 3 channels, K = 1..8, k = 8..32; see
# the README). Only their ratios matter to the choice:
# - the direct kernel's multiply-adds per second, and its cost per output
#   value (scoring, row set-up);
# - one real DFT's seconds per N*log2(N), one spectrum product's seconds per
#   element, and the spectral path's per-frame cost per pixel (window
#   statistics, crops, the pool's hand-offs).
# The direct rate was 5.0e10 there before its register tiles (direct.py):
# they ran about 2x as fast on the 2-core AVX-512 VM (16 lanes) and 1.1-1.4x
# compiled for AVX2 (8 lanes); calibration fits the machine at hand.
DIRECT_MACS_PER_S = 7.5e10
DIRECT_SECONDS_PER_OUTPUT = 1.0e-9
DFT_SECONDS_PER_NLOGN = 2.0e-10
PRODUCT_SECONDS_PER_ELEMENT = 1.3e-9
SPECTRAL_SECONDS_PER_PIXEL = 5.0e-9


@dataclass(frozen=True)
class CostModel:
    """How the machine at hand scales each path's estimated time.

    The shape of each path's cost (how it grows with templates, sizes and
    frame) comes from the constants above; their balance differs from machine
    to machine and with the thread count (on 16 cores the direct path gains
    more than the transforms), so :func:`featuremap.service.engine.calibrate`
    measures both paths here and sets these factors. The spectral path has
    two: its cost per frame (the frame's transforms and window statistics)
    and its cost per template (a product and an inverse each) scale apart,
    and one factor fitted to both over-predicted a bank of 32 by 1.4x where
    it held a bank of 4 (so auto took the direct path at 1.2x the time).
    """

    direct_scale: float = 1.0
    spectral_frame_scale: float = 1.0
    spectral_template_scale: float = 1.0


_cost = CostModel()


def cost_model() -> CostModel:
    """The cost model ``auto`` uses now."""
    return _cost


def use_cost_model(model: CostModel) -> None:
    """Make ``auto`` decide by ``model`` from now on (Matchers decide once per frame shape)."""
    global _cost
    _cost = model


@dataclass
class TemplateKernels:
    """The correlation kernels and constants of one template.

    ``kernels`` is one kernel over the frame's planes (ssim: one per
    channel): the template, zero-mean for the ccoeff pair, times M^2 for a
    masked one (whose window statistics come from its mask's runs).
    """

    kernels: np.ndarray  # (n, P, h, w) float32
    tenergy: float
    tsum: np.ndarray  # (C,) float64, masked templates: sum(M^2 T'_c) (0 for the sqdiff pair)
    mask: np.ndarray | None = None  # (h, w) float32 weights, masked templates only
    means: np.ndarray | None = None  # (C,) ssim: the channel means; (1,) unmasked ccorr pair: the mean taken off
    variances: np.ndarray | None = None  # (C,) ssim: its channel sample variances


def template_kernels(template: np.ndarray, mask: np.ndarray | None, method: int) -> TemplateKernels:
    """Build the kernels of one template (C, h, w) float32 for ``method``."""
    t = template.astype(np.float64)
    n_channels = t.shape[0]
    if method == SSIM:
        # One kernel per channel, the zero-mean channel on its own plane: the
        # covariances come out per channel, as ssim averages over channels.
        means = t.mean(axis=(1, 2))
        centred = t - means[:, None, None]
        kernels = np.zeros((n_channels,) + t.shape)
        for c in range(n_channels):
            kernels[c, c] = centred[c]
        n = t.shape[1] * t.shape[2]
        variances = (centred * centred).sum(axis=(1, 2)) / max(n - 1, 1)
        return TemplateKernels(kernels=kernels.astype(np.float32), tenergy=0.0, tsum=np.zeros(n_channels),
                               means=means, variances=variances)
    zero_mean = method == CCOEFF or method == CCOEFF_NORMED
    if mask is None:
        if method == CCORR or method == CCORR_NORMED:
            # The kernel less its mean (one, over all channels), restored as
            # mean x the window's sum (exact, from integral images): float32
            # rounding then scales with the template's contrast, not its
            # brightness (the direct path's ccorr error on a photograph fell
            # from 7x OpenCV's to below it).
            mean = t.mean()
            return TemplateKernels(kernels=(t - mean)[None].astype(np.float32), tenergy=float((t * t).sum()),
                                   tsum=np.zeros(n_channels), means=np.array([mean]))
        k = t - t.mean(axis=(1, 2), keepdims=True) if zero_mean else t
        return TemplateKernels(
            kernels=k[None].astype(np.float32), tenergy=float((k * k).sum()), tsum=np.zeros(n_channels)
        )
    m = mask.astype(np.float64)
    m2 = m * m
    msum = float(m.sum())
    msum2 = float(m2.sum())
    if zero_mean and msum > 0.0:
        t = t - (m * t).sum(axis=(1, 2), keepdims=True) / msum
    restored = np.zeros(n_channels)
    if (method == CCORR or method == CCORR_NORMED) and msum2 > 0.0:
        # As unmasked (above): the kernel less its M^2-weighted means, restored
        # from the window's exact M^2 sums (masked.masked_scores).
        restored = (m2 * t).sum(axis=(1, 2)) / msum2
        t = t - restored[:, None, None]
    # One kernel, over the frame's planes: the window statistics the methods
    # need come from the mask's runs (see masked.py), shared by every template
    # with the same mask.
    numerator = m2 * t
    tenergy = float((numerator * t).sum())
    if method == CCORR or method == CCORR_NORMED:
        tenergy = float((m2 * (t + restored[:, None, None]) ** 2).sum())  # the template's own, for the norm
    # tsum: the ccoeff pair subtracts the window's masked mean times it; the
    # ccorr pair adds the window's M^2 sums times the means taken off.
    return TemplateKernels(
        kernels=numerator[None].astype(np.float32),
        tenergy=tenergy,
        tsum=numerator.sum(axis=(1, 2)) if zero_mean else restored,
        mask=mask,
    )


@dataclass
class Group:
    """Templates of one size and kind (masked or not), correlated in one pass."""

    height: int
    width: int
    masked: bool
    members: list[int]
    kernels: np.ndarray  # (K, P, h, w) float32
    active: np.ndarray  # (blocks, P) uint8, direct.block_activity
    starts: list[int]  # first kernel of each member
    prepared: list[TemplateKernels]
    tenergy: np.ndarray  # (members,) float64
    nonnegative: bool  # every kernel >= 0: correlations with a non-negative frame are too
    index: np.ndarray | None = None  # (members, kernels each): where member k's kernel c is
    offset: tuple[int, int] = (0, 0)
    # The direct path's kernels, block activity and column offset, phase-split
    # for a column stride (see direct.phase_kernels).
    direct_kernels: np.ndarray | None = None
    direct_active: np.ndarray | None = None
    direct_ox: int = 0
    # Each member's energy for the norm (tenergy, or the uncentred one: see Matcher).
    tnorm_energy: np.ndarray | None = None
    # Masked groups: each distinct mask's runs and the members (positions in
    # the group) that share it.
    mask_sets: MaskSets | None = None
    tsums: np.ndarray | None = None  # (members, C): each member's TemplateKernels.tsum (masked groups)
    # (members,): the mean taken off each member's kernel (the unmasked ccorr pair).
    tmeans: np.ndarray | None = None

    def place(self, offset: tuple[int, int], stride: int) -> None:
        """Fix the group's offset in the padded frame and prepare its direct form."""
        self.offset = offset
        if stride == 1:
            self.direct_kernels, self.direct_active, self.direct_ox = self.kernels, self.active, offset[1]
        else:
            kernels, first = phase_kernels(self.kernels, offset[1], stride)
            self.direct_kernels, self.direct_active, self.direct_ox = kernels, block_activity(kernels), first


def make_group(height: int, width: int, masked: bool, members: list[int], prepared: list[TemplateKernels],
               *, channel_major: bool = False) -> Group:
    """Stack the members' kernels.

    ``channel_major`` (ssim: one kernel per channel per template) orders the
    kernels channel by channel, so that the direct path's blocks of kernels
    touch one frame plane instead of three.
    """
    stacks = [p.kernels for p in prepared]
    starts = list(np.cumsum([0] + [len(s) for s in stacks[:-1]]))
    kernels = np.concatenate(stacks)
    index = np.array([[start + c for c in range(len(stack))] for start, stack in zip(starts, stacks)], np.int64) \
        if len({len(stack) for stack in stacks}) == 1 else None
    if channel_major and index is not None:
        order = index.T.reshape(-1)  # kernel positions, channel by channel
        kernels = kernels[order]
        index = np.argsort(order).reshape(index.shape)
    mask_sets = pack_masks([p.mask for p in prepared]) if masked else None
    return Group(
        height=height,
        width=width,
        masked=masked,
        members=members,
        kernels=np.ascontiguousarray(kernels),
        active=block_activity(kernels),
        starts=[int(s) for s in starts],
        prepared=prepared,
        tenergy=np.array([p.tenergy for p in prepared], dtype=np.float64),
        nonnegative=bool((kernels >= 0).all()),
        index=index,
        mask_sets=mask_sets,
        tsums=np.stack([p.tsum for p in prepared]) if masked else None,
        tmeans=np.array([p.means[0] for p in prepared]) if not channel_major and all(p.means is not None for p in prepared)
        else None,
    )


def direct_seconds(group: Group, out_shape: tuple[int, int], model: CostModel | None = None) -> float:
    """Estimated time of the direct path for one frame (its form for the stride included), by ``model`` (default: auto's)."""
    kernels = group.direct_kernels
    outputs = len(kernels) * out_shape[0] * out_shape[1]
    sizes = np.array([kernel_block(b, len(kernels))[1] for b in range(kernel_blocks(len(kernels)))])
    kernel_planes = int((group.direct_active.sum(axis=1) * sizes).sum())
    macs = kernel_planes * kernels.shape[2] * kernels.shape[3] * out_shape[0] * out_shape[1]
    return (macs / DIRECT_MACS_PER_S + outputs * DIRECT_SECONDS_PER_OUTPUT) * (model or _cost).direct_scale


def spectral_parts(group: Group, shape: tuple[int, int], frame_planes: int, shared: bool) -> tuple[float, float]:
    """The spectral path's unscaled estimate for one frame: (the frame's part, the templates' part).

    The frame's part (its planes' transforms, the window statistics) is 0 when
    ``shared``: another group has paid for the frame's spectra.
    """
    n = shape[0] * shape[1]
    dft = DFT_SECONDS_PER_NLOGN * n * math.log2(max(n, 2))
    nonzero = group.kernels.reshape(len(group.kernels), group.kernels.shape[1], -1).any(axis=2)
    kernels = int(nonzero.any(axis=1).sum())
    products = int(nonzero.sum())
    templates = kernels * dft + products * n * PRODUCT_SECONDS_PER_ELEMENT
    frame = 0.0 if shared else frame_planes * dft + n * SPECTRAL_SECONDS_PER_PIXEL
    # float64 transforms (masked groups) move twice the data: about twice the time.
    wide = 2.0 if spectrum_dtype(group) == np.float64 else 1.0
    return frame * wide, templates * wide


def spectral_seconds(group: Group, shape: tuple[int, int], frame_planes: int, shared: bool) -> float:
    """Estimated time of the spectral path for one frame, by auto's cost model.

    ``shared`` says the frame's spectra are already paid for by another group.
    """
    frame, templates = spectral_parts(group, shape, frame_planes, shared)
    return frame * _cost.spectral_frame_scale + templates * _cost.spectral_template_scale


def spectrum_dtype(group: Group):
    """Masked groups transform in float64.

    A masked window's norm is exact (masked.py), and float32 transforms would
    then be the weakest link: ccorr_normed's error on dark windows of a
    photograph grew from 8e-8 to 3e-4 of the range (OpenCV's is 1.5e-7).
    """
    return np.float64 if group.masked else np.float32
