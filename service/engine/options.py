"""Names, codes and input validation for the engine's public functions.

Validation lives here, in plain Python, so that the compiled kernels never
see an input they cannot handle (house rule 2). Every error says what to fix.
"""

from __future__ import annotations

import cv2
import numpy as np

#: OpenCV's six methods in OpenCV's numbering (TM_SQDIFF = 0 ...), then the
#: structural similarity index.
METHODS = ("sqdiff", "sqdiff_normed", "ccorr", "ccorr_normed", "ccoeff", "ccoeff_normed", "ssim")
METHOD_CODES = {name: code for code, name in enumerate(METHODS)}
#: The methods cv2.matchTemplate has (the same numbers).
OPENCV_METHODS = METHODS[:6]
#: Methods whose best match is the minimum of the map.
LOWER_IS_BETTER = frozenset({"sqdiff", "sqdiff_normed"})
#: Methods that subtract window and template means.
ZERO_MEAN = frozenset({"ccoeff", "ccoeff_normed"})

PADDINGS = ("valid", "same", "full")
BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
}
ALGORITHMS = ("auto", "direct", "spectral")

_DTYPES = (np.uint8, np.float32, np.float64)
_CHANNELS = (1, 3, 4)


def check_choice(kind: str, value: object, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {value!r}: choose one of {', '.join(choices)}")
    return value


def check_stride(stride: object) -> int:
    """Return ``stride`` as an int >= 1, else raise."""
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
        raise TypeError(f"stride must be an integer >= 1, got {stride!r}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return int(stride)


def check_data_range(value: object) -> float | None:
    """Return ssim's dynamic range L (None: by the frame's dtype), else raise."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"data_range must be a number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"data_range must be a positive number (255 for uint8 frames), got {value}")
    return value


def check_border_value(value: object) -> float:
    """Return the constant border value as a finite float, else raise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"border_value must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"border_value must be finite, got {value}")
    return value


def as_image(image: object, what: str) -> np.ndarray:
    """Validate a frame or template and return it as float32, HxWxC.

    Parameters
    ----------
    image : array_like
        HxW or HxWxC with C in (1, 3, 4); uint8, float32 or float64.
    what : str
        How to name the input in error messages ("frame", "template 3").

    Returns
    -------
    numpy.ndarray
        float32, shape (H, W, C), C-contiguous.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype.type not in _DTYPES:
        raise TypeError(
            f"{what} has dtype {image.dtype}: use uint8, float32 or float64 "
            "(convert with image.astype(np.float32))"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim != 3:
        raise ValueError(
            f"{what} must be HxW (gray) or HxWxC (C = 1, 3 or 4), got {image.ndim} dimensions "
            f"with shape {image.shape}"
        )
    if image.shape[2] not in _CHANNELS:
        raise ValueError(
            f"{what} has {image.shape[2]} channels (shape {image.shape}): use 1, 3 or 4"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {image.shape})")
    if image.dtype != np.uint8 and not np.isfinite(image).all():
        raise ValueError(f"{what} contains NaN or inf: replace them before matching")
    return np.ascontiguousarray(image, dtype=np.float32)


def as_mask(mask: object, shape: tuple[int, int], what: str) -> np.ndarray:
    """Validate a template mask and return its weights as float32, HxW.

    A uint8 or bool mask is binary (non-zero = 1), as in OpenCV; a float mask
    holds weights.
    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape):
        raise ValueError(
            f"{what} has shape {mask.shape}: it must match its template's height and width {tuple(shape)}"
        )
    if mask.dtype == np.bool_ or mask.dtype == np.uint8:
        return (mask != 0).astype(np.float32)
    if mask.dtype not in (np.float32, np.float64):
        raise TypeError(f"{what} has dtype {mask.dtype}: use uint8/bool (binary) or float32 (weights)")
    if not np.isfinite(mask).all():
        raise ValueError(f"{what} contains NaN or inf")
    return np.ascontiguousarray(mask, dtype=np.float32)
