"""A bank's templates prepared as the kernels take them: groups of same-sized kernels, placed for a padding.

The public face of a prepared bank: the CPU Matcher and the CUDA matcher both
read it (its groups, the offset taken off the templates, the padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import options
from .plan import Group, make_group, template_kernels
from .scores import SQDIFF, SQDIFF_NORMED


@dataclass(frozen=True)
class PreparedTemplates:
    """Templates prepared once for a method, a padding and a stride.

    Attributes
    ----------
    code : int
        The method's code (``options.METHOD_CODES``).
    padding : str
        ``valid``, ``same`` or ``full``.
    stride : int
        The maps' sampling step.
    channels : int
        The templates' (and frames') channel count.
    shapes : list of (int, int)
        Each template's (h, w), in the bank's order.
    pad : (int, int, int, int)
        The border (top, bottom, left, right) every frame is padded by: the
        largest any template's padding needs.
    offset : numpy.ndarray or None
        The sqdiff pair's per-channel constant taken off frame and templates
        (their mean, rounded for integer data); None for the other methods.
    groups : list of Group
        Same-sized templates (and alike masked or not), largest first.
    """

    code: int
    padding: str
    stride: int
    channels: int
    shapes: list[tuple[int, int]]
    pad: tuple[int, int, int, int]
    offset: np.ndarray | None
    groups: list[Group]

    def padded(self, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) of a frame of ``frame_shape`` once padded."""
        return frame_shape[0] + self.pad[0] + self.pad[1], frame_shape[1] + self.pad[2] + self.pad[3]

    def output_shape(self, index: int, frame_shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of template ``index``'s map for frames of ``frame_shape`` (H, W)."""
        return options.map_shape(self.padding, self.stride, frame_shape, self.shapes[index])


def prepare_templates(images: Sequence[np.ndarray], weights: Sequence[np.ndarray | None], code: int,
                      padding: str, stride: int, *, channel_major: bool = False) -> PreparedTemplates:
    """Group checked HxWxC float templates (and mask weights) and make their kernels.

    ``channel_major``: one kernel per channel (ssim), not one over all planes.
    """
    shapes = [img.shape[:2] for img in images]
    pads = [options.padding_of(padding, h, w) for h, w in shapes]
    pad = tuple(max(p[i] for p in pads) for i in range(4))
    # sqdiff is a sum of squared differences: the same for frame and
    # templates less one constant per channel. With that constant the
    # templates' mean, bright frames and templates no longer cancel
    # catastrophically in energy - 2 corr + tenergy.
    offset = None
    raw_energies = [float((img.astype(np.float64) ** 2 * (1.0 if w is None else w.astype(np.float64)[:, :, None] ** 2))
                          .sum()) for img, w in zip(images, weights)]
    # sqdiff_normed's norm is of the uncentred window and template: kept
    # apart (the windows' from their sums, the templates' here).
    if code in (SQDIFF, SQDIFF_NORMED):
        offset = np.mean([img.mean(axis=(0, 1), dtype=np.float64) for img in images], axis=0)
        if all(np.array_equal(img, np.round(img)) for img in images):
            offset = np.round(offset)  # integer data stays integer: exact in float32
        images = [img - offset.astype(np.float32) for img in images]
    by_key: dict[tuple[int, int, bool], list[int]] = {}
    for i, (img, w) in enumerate(zip(images, weights)):
        by_key.setdefault((*img.shape[:2], w is not None), []).append(i)
    groups: list[Group] = []
    for (h, w, masked), members in by_key.items():
        prepared = [template_kernels(images[i].transpose(2, 0, 1), weights[i], code) for i in members]
        group = make_group(h, w, masked, members, prepared, channel_major=channel_major)
        group.tnorm_energy = (np.array([raw_energies[i] for i in members]) if code == SQDIFF_NORMED
                              and offset is not None else group.tenergy)
        top, _, left, _ = options.padding_of(padding, h, w)
        group.place((pad[0] - top, pad[2] - left), stride)
        groups.append(group)
    # Large kernels first, so the cost model sees the frame's spectra as
    # paid for when smaller groups are considered.
    groups.sort(key=lambda g: -g.height * g.width)
    return PreparedTemplates(code=code, padding=padding, stride=stride, channels=images[0].shape[2], shapes=shapes,
                             pad=pad, offset=offset, groups=groups)
