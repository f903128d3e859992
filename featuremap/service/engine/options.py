"""Names, codes and input validation for the engine's public functions.

Validation lives here, in plain Python, so that the compiled kernels never
see an input they cannot handle (house rule 2). Every error says what to fix.
"""

from __future__ import annotations

import cv2
import numpy as np

from .scores import CCOEFF, CCOEFF_NORMED, CCORR, CCORR_NORMED, SQDIFF, SQDIFF_NORMED, SSIM

#: Each method's name and the code its kernels know it by (OpenCV's numbers
#: for OpenCV's methods); the codes are defined once, in ``scores``.
METHOD_CODES = {"sqdiff": SQDIFF, "sqdiff_normed": SQDIFF_NORMED, "ccorr": CCORR, "ccorr_normed": CCORR_NORMED,
                "ccoeff": CCOEFF, "ccoeff_normed": CCOEFF_NORMED, "ssim": SSIM}
#: OpenCV's six methods, then the structural similarity index.
METHODS = tuple(METHOD_CODES)
#: The methods cv2.matchTemplate has (the same numbers).
OPENCV_METHODS = METHODS[:6]
#: Methods whose best match is the minimum of the map.
LOWER_IS_BETTER = frozenset({"sqdiff", "sqdiff_normed"})


class OptionError(ValueError):
    """An input or option the engine cannot use; the message says what to fix.

    The one error type of the engine's checks, so that a caller (the server)
    can tell a caller's mistake from a bug: any other exception is a bug.
    """


class OptionTypeError(OptionError, TypeError):
    """An input or option of the wrong type (also a ``TypeError``)."""

PADDINGS = ("valid", "same", "full")
BORDERS = {
    "constant": cv2.BORDER_CONSTANT,
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
}
ALGORITHMS = ("auto", "direct", "spectral")

_DTYPES = (np.uint8, np.float32, np.float64)
_CHANNELS = (1, 3, 4)


def padding_of(padding: str, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) border a template of ``height`` x ``width`` needs under ``padding``."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return height // 2, height - 1 - height // 2, width // 2, width - 1 - width // 2
    return height - 1, height - 1, width - 1, width - 1


def map_origin(padding: str, height: int, width: int) -> tuple[int, int]:
    """Frame position (x, y) of the top-left corner of map pixel (0, 0)'s window.

    Map pixel (i, j) of a map with stride s is the window whose top-left
    corner is at (x + j * s, y + i * s) in the frame.
    """
    top, _, left, _ = padding_of(check_choice("padding", padding, PADDINGS), height, width)
    return -left, -top


def map_shape(padding: str, stride: int, frame_shape: tuple[int, int], template_shape: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of a template's map for frames of ``frame_shape`` (H, W): at least 0 each."""
    (height, width), (h, w) = frame_shape[:2], template_shape[:2]
    extents = {
        "valid": (height - h + 1, width - w + 1),
        "same": (height, width),
        "full": (height + h - 1, width + w - 1),
    }[padding]
    rows, cols = (max(0, (e - 1) // stride + 1) for e in extents)
    return rows, cols


def check_choice(kind: str, value: object, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise OptionError(f"unknown {kind} {value!r}: choose one of {', '.join(choices)}")
    return value


def check_stride(stride: object) -> int:
    """Return ``stride`` as an int >= 1, else raise."""
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
        raise OptionTypeError(f"stride must be an integer >= 1, got {stride!r}")
    if stride < 1:
        raise OptionError(f"stride must be >= 1, got {stride}")
    return int(stride)


def check_data_range(value: object) -> float | None:
    """Return ssim's dynamic range L (None: by the frame's dtype), else raise."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptionTypeError(f"data_range must be a number, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise OptionError(f"data_range must be a positive number (255 for uint8 frames), got {value}")
    return value


def check_border_value(value: object) -> float:
    """Return the constant border value as a finite float, else raise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptionTypeError(f"border_value must be a number, got {value!r}") from None
    if not np.isfinite(value):
        raise OptionError(f"border_value must be finite, got {value}")
    return value


def check_image(image: object, what: str) -> np.ndarray:
    """Validate a frame or template and return it as HxWxC in its own dtype (a view where it can be).

    Parameters
    ----------
    image : array_like
        HxW or HxWxC with C in (1, 3, 4); uint8, float32 or float64, no NaN/inf.
    what : str
        How to name the input in error messages ("frame", "template 3").
    """
    if not isinstance(image, np.ndarray):
        raise OptionTypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype.type not in _DTYPES:
        raise OptionTypeError(
            f"{what} has dtype {image.dtype}: use uint8, float32 or float64 "
            "(convert with image.astype(np.float32))"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    elif image.ndim != 3:
        raise OptionError(
            f"{what} must be HxW (gray) or HxWxC (C = 1, 3 or 4), got {image.ndim} dimensions "
            f"with shape {image.shape}"
        )
    if image.shape[2] not in _CHANNELS:
        raise OptionError(
            f"{what} has {image.shape[2]} channels (shape {image.shape}): use 1, 3 or 4"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise OptionError(f"{what} is empty (shape {image.shape})")
    if image.dtype != np.uint8 and not np.isfinite(image).all():
        raise OptionError(f"{what} contains NaN or inf: replace them before matching")
    return image


def as_image(image: object, what: str) -> np.ndarray:
    """:func:`check_image`, then as float32, HxWxC, C-contiguous."""
    return np.ascontiguousarray(check_image(image, what), dtype=np.float32)


def as_mask(mask: object, shape: tuple[int, int], what: str) -> np.ndarray:
    """Validate a template mask and return its weights as float32, HxW.

    A uint8 or bool mask is binary (non-zero = 1), as in OpenCV; a float mask
    holds weights.
    """
    if not isinstance(mask, np.ndarray):
        raise OptionTypeError(f"{what} must be a numpy array, got {type(mask).__name__}")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape):
        raise OptionError(
            f"{what} has shape {mask.shape}: it must match its template's height and width {tuple(shape)}"
        )
    if mask.dtype == np.bool_ or mask.dtype == np.uint8:
        return (mask != 0).astype(np.float32)
    if mask.dtype not in (np.float32, np.float64):
        raise OptionTypeError(f"{what} has dtype {mask.dtype}: use uint8/bool (binary) or float32 (weights)")
    if not np.isfinite(mask).all():
        raise OptionError(f"{what} contains NaN or inf")
    return np.ascontiguousarray(mask, dtype=np.float32)


def check_template(image: object, mask: object = None) -> None:
    """Check a template (and its optional mask) as :class:`Matcher` would, without preparing it.

    Raises
    ------
    OptionError
        What :class:`Matcher` would refuse: dtype, shape, channels, NaN/inf,
        a mask of another size or type.
    """
    checked = as_image(image, "template")
    if mask is not None:
        as_mask(mask, checked.shape[:2], "template mask")


def check_options(
    *,
    method: str = "ccoeff_normed",
    padding: str = "valid",
    border: str = "constant",
    border_value: float = 0.0,
    stride: int = 1,
    algorithm: str = "auto",
    data_range: float | None = None,
) -> dict:
    """Check :class:`Matcher`'s options without templates (raises OptionError); returns them normalised."""
    return dict(
        method=check_choice("method", method, METHODS),
        padding=check_choice("padding", padding, PADDINGS),
        border=check_choice("border", border, BORDERS),
        border_value=check_border_value(border_value),
        stride=check_stride(stride),
        algorithm=check_choice("algorithm", algorithm, ALGORITHMS),
        data_range=check_data_range(data_range),
    )
