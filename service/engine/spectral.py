"""Spectral correlation: the path for large templates.

Correlation becomes a product in the frequency domain. The frame's spectrum
is computed once per frame and shared by every template of the bank (OpenCV's
matchTemplate recomputes it for each template); the templates' spectra are
prepared once per transform size and reused for every frame of that size.
The transforms are OpenCV's real DFT (packed CCS format), which releases the
GIL and runs at library speed.
"""

from __future__ import annotations

import cv2
import numpy as np


def transform_shape(height: int, width: int) -> tuple[int, int]:
    """Smallest fast DFT size that holds a (height, width) plane without wrap-around."""
    # At least two columns: OpenCV's packed real DFT rejects single-column input.
    return cv2.getOptimalDFTSize(height), max(2, cv2.getOptimalDFTSize(width))


def _spectrum(plane: np.ndarray, shape: tuple[int, int], dtype) -> np.ndarray:
    padded = np.zeros(shape, dtype)
    padded[: plane.shape[0], : plane.shape[1]] = plane
    return cv2.dft(padded, nonzeroRows=plane.shape[0])


def frame_spectra(planes: np.ndarray, shape: tuple[int, int], dtype=np.float32) -> list[np.ndarray]:
    """One packed spectrum per plane of ``planes`` (P, H, W).

    ``dtype`` float64 buys precision where maps are later subtracted from
    each other (the masked statistics); float32 is enough elsewhere.
    """
    return [_spectrum(plane, shape, dtype) for plane in planes]


def kernel_spectra(
    kernels: np.ndarray, shape: tuple[int, int], dtype=np.float32
) -> list[list[tuple[int, np.ndarray]]]:
    """Spectra of each kernel's non-zero planes, as (plane index, spectrum) pairs."""
    return [
        [(c, _spectrum(plane, shape, dtype)) for c, plane in enumerate(kernel) if plane.any()]
        for kernel in kernels
    ]


def correlate_spectral(
    spectra: list[np.ndarray],
    kspectra: list[list[tuple[int, np.ndarray]]],
    oy: int,
    ox: int,
    stride: int,
    out: np.ndarray,
) -> None:
    """Fill ``out`` (K, Ho, Wo) with the correlations of each kernel with the frame.

    Same result as :func:`correlate_direct` for the same offsets and stride;
    the skipped positions of a stride are computed by the transform and
    dropped (a transform cannot skip them).
    """
    _, height, width = out.shape
    rows = slice(oy, oy + (height - 1) * stride + 1, stride)
    cols = slice(ox, ox + (width - 1) * stride + 1, stride)
    for k, planes in enumerate(kspectra):
        if not planes:
            out[k] = 0.0
            continue
        acc = None
        for c, kspec in planes:
            product = cv2.mulSpectrums(spectra[c], kspec, 0, conjB=True)
            acc = product if acc is None else cv2.add(acc, product, dst=acc)
        full = cv2.idft(acc, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        out[k] = full[rows, cols]
