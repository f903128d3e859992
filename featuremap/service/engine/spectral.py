"""Spectral correlation: the path for large templates.

Correlation becomes a product in the frequency domain. The frame's spectrum
is computed once per frame and shared by every template of the bank (OpenCV's
matchTemplate recomputes it for each template); the templates' spectra are
prepared once per transform size and reused for every frame of that size.
The transforms are OpenCV's real DFT (packed CCS format), which releases the
GIL and runs at library speed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numba
import numpy as np

# OpenCV runs one 2-D transform on one core; the bank's templates are
# independent, so they are spread over a pool as wide as the machine. The
# pool is shared by every Matcher: concurrent frames queue on the same cores
# instead of multiplying threads.
# As wide as Numba's pool (NUMBA_NUM_THREADS: the server sets it from the
# container's CPU quota before the engine loads).
WORKERS = numba.config.NUMBA_NUM_THREADS
_POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="featuremap-dft")


def transform_shape(height: int, width: int) -> tuple[int, int]:
    """Smallest fast DFT size that holds a (height, width) plane without wrap-around."""
    # At least two columns: OpenCV's packed real DFT rejects single-column input.
    return cv2.getOptimalDFTSize(height), max(2, cv2.getOptimalDFTSize(width))


def _spectrum(plane: np.ndarray, shape: tuple[int, int], dtype, padded: np.ndarray | None = None,
              out: np.ndarray | None = None) -> np.ndarray:
    if padded is None:
        padded = np.zeros(shape, dtype)
    else:
        padded.fill(0)
    padded[: plane.shape[0], : plane.shape[1]] = plane
    return cv2.dft(padded, out, nonzeroRows=plane.shape[0])


def frame_spectra(planes: np.ndarray, shape: tuple[int, int], dtype=np.float32, buffers=None) -> list[np.ndarray]:
    """One packed spectrum per plane of ``planes`` (P, H, W).

    ``dtype`` float64 buys precision where maps are later subtracted from
    each other (the masked statistics); float32 is enough elsewhere.
    ``buffers``: per plane, a (padded input, spectrum) pair of ``shape`` to
    use instead of fresh arrays.
    """
    if buffers is None:
        buffers = [(None, None)] * len(planes)
    return list(_POOL.map(lambda job: _spectrum(job[0], shape, dtype, *job[1]), zip(planes, buffers)))


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
    out_shape: tuple[int, int],
    consume: Callable[[int, np.ndarray], None],
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Correlate each kernel with the frame and hand its map to ``consume(k, map)``.

    Same values as :func:`correlate_direct` for the same offsets and stride;
    the skipped positions of a stride are computed by the transform and
    dropped (a transform cannot skip them). ``consume`` runs on the pool's
    threads, one kernel at a time each, while the map is still in cache; the
    map is a fresh, contiguous (Ho, Wo) array that ``consume`` may change.
    Once ``cancelled()`` says so, the kernels not yet begun are skipped (and
    not consumed): the caller then stops.
    """
    height, width = out_shape
    rows = slice(oy, oy + (height - 1) * stride + 1, stride)
    cols = slice(ox, ox + (width - 1) * stride + 1, stride)

    def one(k: int) -> None:
        # A cancelled call skips the kernels not begun (its caller raises): a bank of thousands of
        # kernels stops within one kernel's transform, not at the end of the group.
        if cancelled is not None and cancelled():
            return
        planes = kspectra[k]
        if not planes:
            consume(k, np.zeros(out_shape, np.float32))
            return
        acc = None
        for c, kspec in planes:
            product = cv2.mulSpectrums(spectra[c], kspec, 0, conjB=True)
            acc = product if acc is None else cv2.add(acc, product, dst=acc)
        full = cv2.idft(acc, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        # A contiguous float32 copy: the kernels that consume it vectorise
        # only over contiguous rows.
        consume(k, np.ascontiguousarray(full[rows, cols], dtype=np.float32))

    # list() waits for every kernel and re-raises the first error.
    list(_POOL.map(one, range(len(kspectra))))
