"""A plain template's match, told from chance by its light as well as its shape (the plain decision).

ccoeff_normed ignores a window's brightness and contrast, which is what makes it robust for a
textured template; for a plain one it is what lets a sky, a wall or a soft shadow of any
brightness fit it. Where it is found, a plain template's window is the template under some
lighting: its mean and contrast are the template's times a gain, plus an offset.
:func:`lit_alike` asks that of a peak's window; with it, the threshold need only beat the
backgrounds' best score (``texture.plain_threshold``), not clear it by the texture rule's margin,
and plain templates are found as often as at the fixed 0.7 while absent ones are drawn about as
rarely as the texture rule draws them (``tests/benchmarks/bench_thresholds.py``).

Numpy only: one mean and deviation over a template and its window.
"""

from __future__ import annotations

import math

import numpy as np

#: The lighting a plain template's match may be under against the template as registered: a gain
#: on its pixels (exposure, a dimmer or brighter scene) and an offset in 8-bit grey levels (the
#: black level, haze). The envelope is the specification, not fitted: under a lighting outside it a
#: plain template is missed (a textured one is not affected).
GAIN = (0.6, 1.6)
OFFSET = 30.0
#: What blur, noise and the codec make of a lit window beside the lighting: its contrast this many
#: times the lit template's, its mean within this many grey levels. Chosen by hand on half A of
#: ``bench_thresholds``' photographs (what the clips' blur, noise and codec did to present plain
#: templates' windows), before ``K_PLAIN``; the benchmark has no flag that sweeps them.
CONTRAST = (0.6, 1.5)
MEAN_TOLERANCE = 3.0


def light(image: np.ndarray, weights: np.ndarray | None, direction: np.ndarray | None) -> tuple[float, float]:
    """The mean and standard deviation of an HxWxC image's plane under ``weights`` (HxW; None: all).

    The plane is the channel of a gray image, and a colour image's projection on ``direction`` (the
    template's principal colour direction: :func:`colour_direction`), in the pixels' own units.
    """
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    plane = pixels[:, 0] if direction is None else pixels @ direction
    w = np.ones(len(plane)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    total = w.sum()
    if total <= 0:
        return 0.0, 0.0
    mean = float((w * plane).sum() / total)
    return mean, float(math.sqrt(max(0.0, (w * (plane - mean) ** 2).sum() / total)))


def colour_direction(image: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
    """A colour template's principal colour direction (unit, its components summing to 0 or more:
    one sign, deterministic), under its mask; None for a gray template (its channel is its plane).

    The channels' mean would do for photographs, whose channels vary together, but it is flat for a
    logo whose detail is in colour alone (red on blue). With fewer than two pixels kept, the
    channels' mean direction.
    """
    if image.shape[2] == 1:
        return None
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    kept = pixels if weights is None else pixels[np.asarray(weights).reshape(-1) != 0]
    if len(kept) < 2:
        return np.full(image.shape[2], 1.0 / math.sqrt(image.shape[2]))
    centred = kept - kept.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return vectors[:, -1] * (1.0 if vectors[:, -1].sum() >= 0 else -1.0)


def lit_alike(window: tuple[float, float], template: tuple[float, float], offset: float = OFFSET) -> bool:
    """Whether a window's (mean, std) is the template's under a lighting of the envelope.

    That is: some gain ``g`` in :data:`GAIN` and offset ``o`` within ``offset`` make the window's
    contrast ``g`` times the template's within :data:`CONTRAST`, and its mean ``g`` times the
    template's plus ``o`` within :data:`MEAN_TOLERANCE`. The gains the contrast allows form one
    interval; over it the offset needed is linear in ``g``, so its range is the interval's ends'.

    Examples
    --------
    >>> lit_alike((130.0, 12.0), (100.0, 10.0))   # 1.2 times as contrasted, 10 levels brighter
    True
    >>> lit_alike((130.0, 40.0), (100.0, 10.0))   # four times the contrast: no lighting of the envelope
    False
    >>> lit_alike((220.0, 10.0), (100.0, 10.0))   # 120 levels brighter at the same contrast
    False
    """
    (w_mean, w_std), (t_mean, t_std) = window, template
    if t_std <= 0:
        return False
    ratio = w_std / t_std
    low, high = max(GAIN[0], ratio / CONTRAST[1]), min(GAIN[1], ratio / CONTRAST[0])
    if low > high:
        return False
    reach = offset + MEAN_TOLERANCE
    ends = (w_mean - low * t_mean, w_mean - high * t_mean)
    return min(ends) <= reach and max(ends) >= -reach


def lit_alike_window(template: np.ndarray, mask: np.ndarray | None, window: np.ndarray) -> bool:
    """:func:`lit_alike` for a template (HxWxC, 8-bit values) and the frame's window under it (the same
    shape: where a window is cut by the frame's edge, the part inside and the template's part there).

    A colour template's plane is its principal colour direction's; a uniform offset of every channel
    moves that plane by the offset times the direction's components' sum, so the envelope's offset
    is scaled by it.
    """
    direction = colour_direction(template, mask)
    offset = OFFSET if direction is None else OFFSET * abs(float(direction.sum()))
    return lit_alike(light(window, mask, direction), light(template, mask, direction), offset)
