"""Scale and rotation variants of a template, prepared once and matched like any other template.

A template may carry scales and angles; each (scale, angle) pair becomes a
variant: the image resized (INTER_AREA to shrink, INTER_LINEAR to grow), then
rotated about its centre onto a canvas that holds the whole rotated image.
The canvas corners that the rotated template does not cover whole are masked
out, so they never count (see :func:`make_variant`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from featuremap.boxes import resized_size, turned_canvas

from ..engine import MIN_POSE_SIDE, OptionError, check_ranges
from ..engine.turn import covered, draw, turn_map
from ..errors import InvalidArgument, LimitExceeded

MAX_STEPS = 16  # scales or angles per template
MIN_SIDE = 3


@dataclass(frozen=True)
class Variant:
    """One variant of a stored template, with what the bank needs to prepare it."""

    id: str  # the template's id and the variant, for the matcher cache
    etag: str
    image: np.ndarray  # HxWxC
    mask: np.ndarray | None  # HxW, binary uint8 or float weights
    template_id: str
    scale: float
    angle: float


def check_steps(scales, angles, shape: tuple[int, ...],
                max_pixels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validated scales and angles (empty means the identity) of a template of ``shape`` (H, W, ...).

    With ``max_pixels``, every variant (resized, then on its rotated canvas) must fit it too.
    """
    scales = tuple(float(s) for s in scales) or (1.0,)
    angles = tuple(float(a) for a in angles) or (0.0,)
    if len(scales) > MAX_STEPS or len(angles) > MAX_STEPS:
        raise InvalidArgument(f"at most {MAX_STEPS} scales and {MAX_STEPS} angles per template")
    if not all(math.isfinite(s) and 0.05 <= s <= 8 for s in scales):
        raise InvalidArgument("scales must be between 0.05 and 8")
    if not all(math.isfinite(a) and -360 <= a <= 360 for a in angles):
        raise InvalidArgument("angles must be degrees between -360 and 360")
    height, width = shape[:2]
    for scale in scales:
        if scale != 1.0 and min(resized_size(height, width, scale)) < MIN_SIDE:
            raise InvalidArgument(f"scale {scale} makes the {width}x{height} template smaller than {MIN_SIDE} pixels")
        for angle in angles if max_pixels is not None else ():
            out_w, out_h = turned_canvas(*resized_size(height, width, scale), angle)
            if out_w * out_h > max_pixels:
                raise LimitExceeded(f"the variant at scale {scale:g}, angle {angle:g} is {out_w}x{out_h} = "
                                    f"{out_w * out_h} pixels, over the limit of {max_pixels} (max_template_pixels)")
    return scales, angles


def check_pose(angle_range, scale_range, scales, angles, shape: tuple[int, ...],
               max_pixels: int | None = None) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Validated pose ranges of a template of ``shape`` (None, None when it has none).

    A range given alone takes the other as the identity. Ranges exclude
    explicit ``scales`` and ``angles``; every pose must keep MIN_POSE_SIDE
    pixels a side and, rotated, fit ``max_pixels``.
    """
    if angle_range is None and scale_range is None:
        return None, None
    if tuple(scales) not in ((), (1.0,)) or tuple(angles) not in ((), (0.0,)):
        raise InvalidArgument("a template takes either an angle/scale range (pose search) or explicit scales and "
                              "angles, not both")
    try:
        angle_range, scale_range = check_ranges(angle_range if angle_range is not None else (0.0, 0.0),
                                                scale_range if scale_range is not None else (1.0, 1.0))
    except OptionError as error:
        raise InvalidArgument(str(error)) from None
    height, width = shape[:2]
    if min(height, width) * scale_range[0] < MIN_POSE_SIDE:
        raise InvalidArgument(f"the {width}x{height} template is under {MIN_POSE_SIDE} pixels a side at scale "
                              f"{scale_range[0]:g}: too small to rotate meaningfully (pose search)")
    if max_pixels is not None:
        # The largest pose: the top scale, turned so its canvas holds the diagonal.
        side = math.ceil(math.hypot(width, height) * scale_range[1]) if angle_range[1] > angle_range[0] else None
        pixels = side * side if side else math.ceil(width * scale_range[1]) * math.ceil(height * scale_range[1])
        if pixels > max_pixels:
            raise LimitExceeded(f"at scale {scale_range[1]:g} the template's poses reach {pixels} pixels, over the "
                                f"limit of {max_pixels} (max_template_pixels)")
    return angle_range, scale_range


def make_variant(image: np.ndarray, mask: np.ndarray | None, scale: float, angle: float) -> tuple:
    """(image, mask) of one variant; the identity keeps the template as it is.

    The image is resized (INTER_AREA to shrink: no aliasing), then turned
    about its centre onto the turned box's hull (:func:`featuremap.boxes.turned_canvas`)
    by the engine's one rotation (:mod:`featuremap.service.engine.turn`). Its
    mask counts the canvas pixels the turned template covers whole, as pose
    search's does: a binary mask's turned value at 0.5 or more, float weights
    interpolated. A turned variant always has a mask (uint8 0/1 unless the
    template's are weights).
    """
    if scale == 1.0 and angle % 360 == 0:
        return image, mask
    # check_steps has made sure the variant keeps MIN_SIDE pixels a side.
    size = resized_size(image.shape[0], image.shape[1], scale)
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, size, interpolation=shrink).reshape(size[1], size[0], -1)
    weights = None if mask is None else cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    if angle % 360 == 0:
        return resized, (None if mask is None else weights.astype(mask.dtype))
    canvas = turned_canvas(size[0], size[1], angle)
    matrix = turn_map(((size[0] - 1) / 2.0, (size[1] - 1) / 2.0), canvas, angle)
    graded = mask is not None and mask.dtype != np.uint8
    keep = covered(resized.shape[:2], matrix, canvas, weights, weights=graded)
    return draw(resized, matrix, canvas), keep.astype(mask.dtype if graded else np.uint8)


def variants_of(template) -> list[Variant]:
    """Every variant of a stored template, in (scale, angle) order."""
    out = []
    for scale in template.scales:
        for angle in template.angles:
            image, mask = make_variant(template.image, template.mask, scale, angle)
            out.append(Variant(id=f"{template.id}@{scale:g}x{angle:g}", etag=template.etag, image=image, mask=mask,
                               template_id=template.id, scale=scale, angle=angle))
    return out
