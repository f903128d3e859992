"""A template's own decision threshold: plain templates must score higher to count as found.

Under ``ccoeff_normed`` a template scores the cosine between its zero-mean pixels and a
window's. A textured template has many independent pixels, and windows where it is not
score far below 0.7 against it. A plain one (a soft gradient, shading, a blob, an edge,
the smooth window of a photograph) has only a few degrees of freedom: among the hundreds
of thousands of windows of a frame some are shaded the same way by chance, and score
0.8 or 0.95 where the template is not.

:func:`calibrated_threshold` measures this once per template, at registration: it
matches the template against fixed images made here, procedurally and deterministically
(no photographs shipped), with the statistics of photographs; two draws of each of:

- three *dead-leaves* images: occluding ellipses and rectangles of every size (radii
  distributed as r^-3, the scale-invariant law of natural scenes), flat-shaded, over
  smooth shading, blurred by 0.7, 1.5 and 3 pixels (sharp and defocused edges, corners,
  bars, blobs, flat regions);
- two Gaussian fields whose power falls as 1/f^2 (photographs' texture) and 1/f^4
  (smooth shading: skies, walls, out-of-focus backgrounds).

The best score the template reaches on them, ``s``, says how well chance windows fit it.
The threshold is that score made stricter in Fisher's z (``atanh``, where a correlation's
chance spread is even and its extremes grow in proportion), because a stream's frames
hold more windows, and more kinds of window, than the backgrounds::

    threshold = max(0.7, tanh(K * atanh(s)))        K = 1.15

A textured template (``s`` up to 0.64) keeps 0.7; a plain one is raised: s = 0.8 gives
0.852, s = 0.9 gives 0.935, s = 0.97 gives 0.984 (at most 0.9999). No cap below what
true matches score: where chance windows of photographs fit a template as well as its
own place does (step edges, broad gradients), a cap would let it be drawn where it is
absent. K is the one fitted constant: the smallest, in steps of 0.05, that keeps absent
templates drawn on at most 1% of (template, frame) pairs on half of the photographs of
``tests/benchmarks/bench_thresholds.py``; the other half is the held-out check.

Colour templates are calibrated on their principal colour plane: the pixels' projection on
their colours' direction of largest variance (the backgrounds are gray; the channels' mean is
flat for a logo whose detail is in colour alone).
Numpy and OpenCV only (no Numba): ten cv2.matchTemplate calls, about 25-35 ms for a
64x64 template on one core, several times that with a mask (OpenCV's masked path);
the backgrounds are made once per process, in about 0.5 s.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .lighting import colour_direction
from .options import METHODS, OptionError, OptionTypeError, as_image, as_mask, check_choice

#: The methods calibrated here, each with the threshold a textured template keeps (the
#: client's default for it). Other methods get None: their scores depend on brightness
#: (``ccorr_normed``, ``sqdiff_normed``, ``ssim``) or are unbounded, and the rule was
#: not measured for them.
DEFAULTS = {"ccoeff_normed": 0.7}
#: How much stricter than the backgrounds' best score, in Fisher's z. See the module's
#: docstring and the benchmark's ``--margins`` table.
K = 1.15
#: Side of each square background image, pixels.
BACKGROUND_SIDE = 512
#: How many images of each kind (independent draws).
DRAWS = 2
#: Templates larger than this on a side are calibrated shrunk to it (area averaging).
#: The backgrounds look alike at every scale, so the shrunk template meets the same
#: kinds of chance window; and the cost stays small.
MAX_SIDE = 128
#: The highest threshold given: a template as plain as that is found only by a near-perfect match.
MAX_THRESHOLD = 0.9999
_SEED = 20261207


def _power_field(rng: np.random.Generator, side: int, exponent: float) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**exponent, scaled to 16..240."""
    f = np.fft.fftfreq(side)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = 1.0
    amplitude = radius ** (-exponent / 2)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal((side, side)) + 1j * rng.standard_normal((side, side)))
    field = np.fft.ifft2(spectrum).real
    field -= field.min()
    return (16 + 224 * field / max(float(field.max()), 1e-12)).astype(np.float32)


def _dead_leaves(rng: np.random.Generator, side: int) -> np.ndarray:
    """Occluding flat-shaded ellipses and rectangles over smooth shading.

    Radii follow p(r) ~ r^-3 on [6, side/3] (the same at every scale); aspect ratios
    from 1:1 to 1:12 (discs to bars); drawn in random order, later ones on top.
    """
    image = _power_field(rng, side, 4.0)
    count = 4 * side
    r_min, r_max = 6.0, side / 3
    radii = (r_min**-2 - rng.random(count) * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF
    centres = rng.integers(-side // 8, side + side // 8, (count, 2))
    aspects = np.exp(rng.uniform(np.log(0.08), 0.0, count))
    angles = rng.uniform(0.0, 180.0, count)
    levels = rng.uniform(0.0, 255.0, count)
    for i in range(count):
        (x, y), r, a, angle, level = centres[i], radii[i], aspects[i], angles[i], float(levels[i])
        if i % 2:
            c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            corners = np.array([[-r, -r * a], [r, -r * a], [r, r * a], [-r, r * a]]) @ np.array([[c, s], [-s, c]]) + (x, y)
            cv2.fillConvexPoly(image, np.round(corners * 16).astype(np.int32), level, cv2.LINE_AA, 4)
        else:
            axes = (max(1, round(r)), max(1, round(r * a)))
            cv2.ellipse(image, (int(x), int(y)), axes, float(angle), 0, 360, level, -1, cv2.LINE_AA)
    return 0.8 * image + 0.2 * _power_field(rng, side, 4.0)


@functools.cache
def backgrounds() -> tuple[np.ndarray, ...]:
    """The fixed background images: float32, gray, BACKGROUND_SIDE square, made once per process.

    Deterministic (a fixed seed): :data:`DRAWS` draws of three dead-leaves images
    blurred by 0.7, 1.5 and 3 pixels and of 1/f^2 and 1/f^4 Gaussian fields blurred
    by 1 pixel, each with a little sensor noise (0.5 grey levels). Read-only.
    """
    rng = np.random.default_rng(_SEED)
    side = BACKGROUND_SIDE
    images = []
    for _ in range(DRAWS):
        images += [cv2.GaussianBlur(_dead_leaves(rng, side), (0, 0), blur) for blur in (0.7, 1.5, 3.0)]
        images += [cv2.GaussianBlur(_power_field(rng, side, exponent), (0, 0), 1.0) for exponent in (2.0, 4.0)]
    out = []
    for image in images:
        image = np.ascontiguousarray(image + rng.normal(0.0, 0.5, image.shape), dtype=np.float32)
        image.flags.writeable = False
        out.append(image)
    return tuple(out)


def _prepared(template: object, mask: object) -> tuple[np.ndarray, np.ndarray | None]:
    """The template as one gray float32 plane (its principal colour plane), and its mask
    (uint8 when binary, float32 weights otherwise), both shrunk to MAX_SIDE when larger."""
    image = as_image(template, "template")  # HxWxC float32; raises OptionError
    weights = None if mask is None else as_mask(mask, image.shape[:2], "template mask")
    # Scale to about 0..255 (the normalised score ignores it; OpenCV's arithmetic does not).
    peak = float(np.abs(image).max())
    if peak > 0:
        image = image * np.float32(255.0 / peak)
    gray = _principal_plane(image, weights)
    binary = weights is not None and bool(np.all((weights == 0) | (weights == 1)))
    h, w = gray.shape
    scale = MAX_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if weights is not None:
            weights = cv2.resize(weights, size, interpolation=cv2.INTER_AREA)
            if binary:  # stays binary: kept where at least half of it was
                weights = (weights >= 0.5).astype(np.float32)
    if binary and weights is not None:  # OpenCV's masked matching is several times faster with a uint8 mask
        weights = weights.astype(np.uint8)
    return gray, weights


def _principal_plane(image: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """One gray plane of an HxWxC template: the channel itself for gray; for colour, the pixels'
    projection on their colours' direction of largest variance (under the mask), scaled to 0..255.

    The channels' mean would do for photographs, whose channels vary together, but it is flat for a
    logo whose detail is in colour alone (red on blue): calibrated flat, it could never be found.
    The principal direction carries most of what ccoeff_normed scores (it sums the channels'
    zero-mean products), and for photographs it is close to the brightness.
    """
    direction = colour_direction(image, weights)
    if direction is None:
        return np.ascontiguousarray(image[:, :, 0])
    plane = (image.reshape(-1, image.shape[2]).astype(np.float64) @ direction).reshape(image.shape[:2])
    low, high = float(plane.min()), float(plane.max())
    if high > low:
        plane = (plane - low) * (255.0 / (high - low))
    return np.ascontiguousarray(plane, dtype=np.float32)


def _has_variance(gray: np.ndarray, weights: np.ndarray | None) -> bool:
    if weights is None:
        return bool(gray.max() > gray.min())
    kept = gray[weights != 0]
    return kept.size > 1 and bool(kept.max() > kept.min())


def background_scores(template: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The best ``ccoeff_normed`` score of the template on each background image.

    Parameters
    ----------
    template : np.ndarray
        HxW or HxWxC (C = 1, 3, 4), uint8, float32 or float64, as :class:`Matcher`
        takes it. A colour template is calibrated on its principal colour plane (the
        backgrounds are gray).
    mask : np.ndarray, optional
        HxW, binary (uint8 or bool) or weights (float), with OpenCV's masked semantics.

    Returns
    -------
    np.ndarray
        float64, one score in [-1, 1] per image of :func:`backgrounds`; all 1.0 for a
        template with no variance (under its mask), which no score can tell apart.

    Raises
    ------
    OptionError
        A template or mask :class:`Matcher` would refuse.
    """
    gray, weights = _prepared(template, mask)
    images = backgrounds()
    if not _has_variance(gray, weights):
        return np.ones(len(images))
    scores = []
    for background in images:
        if weights is None:
            score_map = cv2.matchTemplate(background, gray, cv2.TM_CCOEFF_NORMED)
        else:
            score_map = cv2.matchTemplate(background, gray, cv2.TM_CCOEFF_NORMED, mask=weights)
        # As the engine: a flat window, or rounding past 1.125x, is "no evidence" (0).
        score_map[~np.isfinite(score_map) | (np.abs(score_map) > 1.125)] = 0.0
        scores.append(float(np.clip(score_map.max(), -1.0, 1.0)))
    return np.asarray(scores, np.float64)


def threshold_from_score(best: float, method: str = "ccoeff_normed", k: float | None = None) -> float:
    """The rule alone, from the best score on the backgrounds.

    Parameters
    ----------
    best : float
        The template's best score on :func:`backgrounds` (see :func:`background_scores`).
    method : str
        A method of :data:`DEFAULTS`.
    k : float, optional
        The rule's constant; default :data:`K` (the benchmark tries others).

    Returns
    -------
    float
        ``max(DEFAULTS[method], tanh(k * atanh(best)))``, ``best`` taken within
        [0, MAX_THRESHOLD], rounded up to 1e-4, at most :data:`MAX_THRESHOLD`.
    """
    if method not in DEFAULTS:
        raise OptionError(f"no calibrated threshold for method {method!r}: only {', '.join(DEFAULTS)}")
    z = np.arctanh(min(max(best, 0.0), MAX_THRESHOLD))
    value = max(DEFAULTS[method], float(np.tanh((K if k is None else k) * z)))
    return _given(value)


def _given(value: float) -> float:
    """A threshold as given out: rounded up to 1e-4 (never under the rule's value), at most MAX_THRESHOLD."""
    return float(min(MAX_THRESHOLD, math.ceil(value * 1e4 - 1e-6) / 1e4))


#: The frames the rule's constant was fitted on (``bench_thresholds``: 640x480): their windows.
REFERENCE_WINDOWS = 640 * 480


def for_frame(threshold: float, windows: int, method: str = "ccoeff_normed") -> float:
    """A calibrated threshold made stricter for a frame of more windows than the rule was fitted on.

    The best of N chance correlations grows, in Fisher's z, as sqrt(ln N): a 12 MP frame (40 times
    a VGA frame's windows) holds chance windows that fit a plain template better than any of a VGA
    frame's. A threshold above the method's default is scaled in z by sqrt(ln N / ln N_ref), N_ref
    the windows of the frames :data:`K` was fitted on; never lowered (smaller frames keep it), and a
    threshold at the default is kept (a textured template's chance scores lie far below it).

    Parameters
    ----------
    threshold : float
        A template's :func:`calibrated_threshold`.
    windows : int
        The positions the template is scored at in the frame (about its pixels).
    method : str
        A method of :data:`DEFAULTS`.

    Returns
    -------
    float
        The threshold for that frame, at most :data:`MAX_THRESHOLD`.

    Examples
    --------
    >>> for_frame(0.9, 640 * 480)
    0.9
    >>> round(for_frame(0.9, 4000 * 3000), 3)
    0.932
    >>> for_frame(0.7, 4000 * 3000)
    0.7
    """
    if method not in DEFAULTS or threshold <= DEFAULTS[method] or windows <= REFERENCE_WINDOWS:
        return threshold
    factor = math.sqrt(math.log(windows) / math.log(REFERENCE_WINDOWS))
    z = math.atanh(min(threshold, MAX_THRESHOLD))
    return _given(math.tanh(factor * z))


def calibrated_threshold(template: np.ndarray, method: str = "ccoeff_normed", mask: np.ndarray | None = None) -> float | None:
    """The score at which a match of this template should count, from its own texture.

    Computed once per template (and mask and method); deterministic for a given
    template on a given installation.

    Parameters
    ----------
    template : np.ndarray
        HxW or HxWxC (C = 1, 3, 4), uint8, float32 or float64, as :class:`Matcher`
        takes it.
    method : str
        One of :data:`METHODS`.
    mask : np.ndarray, optional
        The template's mask (HxW; uint8/bool binary or float weights), as
        :class:`Matcher` takes it: only what it keeps is calibrated.

    Returns
    -------
    float or None
        For ``ccoeff_normed``: ``max(0.7, tanh(K * atanh(s)))``, ``s`` the best score
        of the template on :func:`backgrounds`, rounded up to 1e-4. A textured
        template gets 0.7, a plain one up to 0.9999. A template with no variance
        under its mask (which the engine scores 0 everywhere) gets 0.9999.
        None for every other method: the rule has nothing to say for it; keep the
        method's fixed default.

    Raises
    ------
    OptionError
        An unknown method, or a template or mask :class:`Matcher` would refuse
        (:class:`OptionTypeError`, also a ``TypeError``, for a wrong type).

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.tile(np.linspace(60, 120, 64), (64, 1)).astype(np.uint8)
    >>> calibrated_threshold(ramp) > 0.95
    True
    >>> calibrated_threshold(ramp, "sqdiff") is None
    True
    """
    if not isinstance(method, str):
        raise OptionTypeError(f"method must be a string such as 'ccoeff_normed', got {type(method).__name__}")
    check_choice("method", method, METHODS)
    if method not in DEFAULTS:
        _prepared(template, mask)  # still refuse what Matcher would refuse
        return None
    return threshold_from_score(float(background_scores(template, mask).max()), method)


#: The factor, in Fisher's z, on the backgrounds' best score that a plain template's match that is
#: lit alike (``lighting.lit_alike``: the plain decision) must reach: the smallest, in steps of
#: 0.01, that keeps absent pairs drawn at or under 1% on half A. At 1.00 the match need only beat
#: the best chance score (rounded up to 1e-4): the lighting test does the rest.
K_PLAIN = 1.00
#: The texture threshold from which a template is plain enough for the plain decision. Under it
#: (a template the rule raises a little: a soft photograph, shading with some detail) the texture
#: threshold stays: the lighting test would only cost such templates their matches under lightings
#: outside its envelope. Chosen on half A under five lightings (``bench_thresholds --light``): from
#: 0.8 up, absent pairs drawn stay at or under 1% and recall at the registered lighting is within
#: a point of gating every raised template, and it is higher under every other lighting.
PLAIN = 0.8


def is_plain(threshold: float, method: str = "ccoeff_normed") -> bool:
    """Whether a template of texture ``threshold`` takes the plain decision (at least :data:`PLAIN`;
    ``method`` one of :data:`DEFAULTS`, else False).

    >>> is_plain(0.7), is_plain(0.79), is_plain(0.85)
    (False, False, True)
    """
    return method in DEFAULTS and threshold >= PLAIN


def plain_threshold(threshold: float, method: str = "ccoeff_normed") -> float:
    """The threshold a plain template's match must reach when its window is lit alike
    (:func:`featuremap.service.engine.lighting.lit_alike`).

    Parameters
    ----------
    threshold : float
        The template's :func:`calibrated_threshold` (plain: :func:`is_plain`).
    method : str
        A method of :data:`DEFAULTS`.

    Returns
    -------
    float
        ``max(default, tanh(K_PLAIN * atanh(s)))``, ``s`` the backgrounds' best score the threshold
        was made from (``tanh(atanh(threshold) / K)``), rounded up to 1e-4; the threshold itself
        for a template that is not plain or is at :data:`MAX_THRESHOLD` (a template with no
        variance: nothing tells its match from chance).

    Examples
    --------
    >>> round(plain_threshold(threshold_from_score(0.9)), 3)
    0.9
    >>> plain_threshold(0.7)
    0.7
    """
    if not is_plain(threshold, method) or threshold >= MAX_THRESHOLD:
        return threshold
    best = math.tanh(math.atanh(threshold) / K)
    return _given(max(DEFAULTS[method], math.tanh(K_PLAIN * math.atanh(best))))
