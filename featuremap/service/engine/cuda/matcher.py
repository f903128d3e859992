"""A Matcher's GPU path: its prepared groups on the device, frames matched in batches.

Imported only for ``device="cuda"``. The template side (kernels, energies,
mask runs) is the CPU Matcher's own preparation, uploaded once; the frame
side runs in cuda_kernels. Each calling thread has its own CUDA stream and
work arrays (a :class:`Workspace`), so several threads (the server's GPU
workers) keep the device busy without sharing buffers; host buffers are
pinned, so the copies are asynchronous on that stream.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..plan import Group
from ..scores import CCOEFF, CCOEFF_NORMED, SQDIFF, SQDIFF_NORMED, SSIM
from . import kernels as K

#: Border names -> cuda_kernels._source's codes.
BORDER_CODES = {"constant": 0, "reflect": 1, "replicate": 2}


class Workspace:
    """One thread's CUDA stream and work arrays (device and pinned host), reused from call to call.

    Arrays a call did not use are dropped when it ends (:meth:`finish`), so
    a thread holds at most one call's working set.
    """

    def __init__(self) -> None:
        self.stream = cuda.stream()
        self._arrays: dict[tuple, object] = {}
        self._used: set[tuple] = set()

    def device(self, name: str, shape: tuple[int, ...], dtype) -> object:
        return self._get(("device", name, tuple(shape), np.dtype(dtype).str),
                         lambda: cuda.device_array(shape, dtype, stream=self.stream))

    def host(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        return self._get(("host", name, tuple(shape), np.dtype(dtype).str), lambda: cuda.pinned_array(shape, dtype))

    def batch(self, name: str, count: int, shape: tuple[int, ...], dtype, host: bool = False):
        """``count`` frames' worth of an array (count, *shape): a view of one made for the next power of two,
        so that batches of 9 to 16 frames (say) share one allocation."""
        capacity = 1 << (count - 1).bit_length()
        made = (self.host if host else self.device)(name, (capacity, *shape), dtype)
        return made[:count]

    def upload(self, name: str, values: np.ndarray) -> object:
        """A device copy of ``values``, sent asynchronously on this stream through a pinned buffer.

        (A copy from ordinary host memory is staged by the driver and holds
        the calling thread until it is done.)
        """
        staged = self.host(name, values.shape, values.dtype)
        staged[...] = values
        device = self.device(name, values.shape, values.dtype)
        device.copy_to_device(staged, stream=self.stream)
        return device

    def _get(self, key: tuple, make):
        found = self._arrays.get(key)
        if found is None:
            found = self._arrays[key] = make()
        self._used.add(key)
        return found

    def finish(self) -> None:
        """End a call: keep only the arrays it used."""
        self._arrays = {k: v for k, v in self._arrays.items() if k in self._used}
        self._used = set()


_local = threading.local()


def workspace() -> Workspace:
    """This thread's workspace (made on first use)."""
    found = getattr(_local, "workspace", None)
    if found is None:
        found = _local.workspace = Workspace()
    return found


@dataclass
class _DeviceGroup:
    """One group's constants on the device."""

    group: Group
    kernels: object  # (Kp, P, h, w) float32, Kp a multiple of KT
    rows_per_pass: int  # cuda_kernels.tile_rows; 0: the wide kernel
    tenergy: object
    tnorm_energy: object
    tmeans: object  # (M,) or (0,)
    extra: tuple  # masked: the MaskSets' arrays and tsums; ssim: index, channel means, variances


@dataclass(frozen=True)
class BatchResult:
    """Peaks of every template in every frame of a batch, and the maps when asked for.

    peaks[n][t] is an array (count, 7): score, y, x, and the neighbours left,
    right, above, below (cuda_kernels.top_peaks); maps[n][t] a float32 map.
    """

    peaks: list[list[np.ndarray]]
    maps: list[list[np.ndarray]] | None
    gpu_seconds: float


class CudaMatcher:
    """The device side of a prepared Matcher (see :class:`featuremap.service.engine.Matcher`)."""

    def __init__(self, matcher) -> None:
        self._matcher = matcher
        self._code = matcher.prepared.code
        self._border = BORDER_CODES[matcher.border]
        self._offset = None if matcher.prepared.offset is None else np.asarray(matcher.prepared.offset, np.float64)
        self._groups = [self._upload(group) for group in matcher.prepared.groups]
        self._per_plane_squares = self._code == SSIM
        self._integrals = any(not g.masked for g in matcher.prepared.groups)
        cuda.synchronize()

    def _upload(self, group: Group) -> _DeviceGroup:
        kernels = group.kernels
        pad = -len(kernels) % K.KT
        if pad:
            kernels = np.concatenate([kernels, np.zeros((pad, *kernels.shape[1:]), np.float32)])
        stride = self._matcher.stride
        extra: tuple = ()
        if group.masked:
            sets = group.mask_sets
            extra = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (
                sets.run_start, sets.rows, sets.starts, sets.ends, sets.weights, sets.squares, sets.member_start,
                sets.members, sets.msum, sets.msum2, sets.binary.astype(np.bool_), sets.largest_square,
                group.tsums.astype(np.float64)))
        elif self._code == SSIM:
            extra = (cuda.to_device(group.index.astype(np.int64)),
                     cuda.to_device(np.stack([p.means for p in group.prepared]).astype(np.float64)),
                     cuda.to_device(np.stack([p.variances for p in group.prepared]).astype(np.float64)))
        tmeans = group.tmeans if group.tmeans is not None and not group.masked else np.zeros(0)
        return _DeviceGroup(
            group=group,
            kernels=cuda.to_device(np.ascontiguousarray(kernels, np.float32)),
            rows_per_pass=K.tile_rows(group.height, group.width, stride),
            tenergy=cuda.to_device(np.asarray(group.tenergy, np.float64)),
            tnorm_energy=cuda.to_device(np.asarray(group.tnorm_energy, np.float64)),
            tmeans=cuda.to_device(np.asarray(tmeans, np.float64)),
            extra=extra,
        )

    # -- sizes ----------------------------------------------------------------

    def device_bytes(self, frame_shape: tuple[int, int], channels: int, itemsize: int, count: int) -> int:
        """GPU memory a batch of ``count`` frames of ``frame_shape`` needs (its work arrays, made for the next
        power of two frames; an upper bound)."""
        m = self._matcher
        height, width = m.prepared.padded(tuple(frame_shape))
        squares = channels if self._per_plane_squares else 1
        per_frame = frame_shape[0] * frame_shape[1] * channels * itemsize + channels * height * width * 4
        per_frame += (channels + squares) * height * (width + 1) * 8 * (2 if self._integrals else 1)
        for dg in self._groups:
            out_h, out_w = m.output_shape(dg.group.members[0], tuple(frame_shape))
            per_frame += (dg.kernels.shape[0] + len(dg.group.members)) * out_h * out_w * 4
        return (1 << (count - 1).bit_length()) * per_frame

    # -- matching -------------------------------------------------------------

    def run(self, frames: list[np.ndarray], *, top_k: int, limit: float | None, lower: bool,
            distances: np.ndarray, maps: bool, data_range: float) -> BatchResult:
        """Match a batch of frames (HxWxC, one shape and dtype, checked) on this thread's stream.

        ``limit`` is in goodness units (the negated threshold for the sqdiff
        pair); ``distances`` one minimum peak distance per template.
        """
        work = workspace()
        stream = work.stream
        started = time.perf_counter()
        try:
            count = len(frames)
            frame_h, frame_w, channels = frames[0].shape
            planes, prefix, sqprefix, integral, sqintegral, sums, magnitudes = self._stage(work, frames)
            height, width = planes.shape[2], planes.shape[3]
            cells = channels * height * width
            c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
            found_peaks, found_counts, found_maps = [], [], []
            for index, dg in enumerate(self._groups):
                out = self._group_scores(work, index, dg, planes, prefix, sqprefix, integral, sqintegral, sums,
                                         magnitudes, cells, c1, c2, (frame_h, frame_w), count)
                if maps:
                    host_maps = work.batch(f"maps {index}", count, out.shape[1:], np.float32, host=True)
                    out.copy_to_host(host_maps, stream=stream)
                    found_maps.append(host_maps)
                if top_k == 0:  # maps alone (Matcher.__call__)
                    found_peaks.append(np.zeros((count, len(dg.group.members), 0, 7)))
                    found_counts.append(np.zeros((count, len(dg.group.members)), np.int32))
                    continue
                members = np.asarray(dg.group.members, np.int64)
                peaks = work.batch(f"peaks {index}", count, (len(members), top_k, 7), np.float64)
                counts = work.upload(f"zeroed counts {index}", np.zeros((count, len(members)), np.int32))
                member_distances = work.upload(f"distances {index}", np.asarray(distances, np.int64)[members])
                self._peaks(work, index, out, lower, limit, member_distances, peaks, counts, top_k)
                host_peaks = work.batch(f"peaks {index}", count, peaks.shape[1:], np.float64, host=True)
                host_counts = work.batch(f"counts {index}", count, counts.shape[1:], np.int32, host=True)
                peaks.copy_to_host(host_peaks, stream=stream)
                counts.copy_to_host(host_counts, stream=stream)
                found_peaks.append(host_peaks)
                found_counts.append(host_counts)
            stream.synchronize()
            gpu_seconds = time.perf_counter() - started
            return self._assemble(count, found_peaks, found_counts, found_maps if maps else None, gpu_seconds)
        finally:
            work.finish()

    def _stage(self, work: Workspace, frames: list[np.ndarray]):
        """Upload a batch and make its planes, offsets, magnitudes, row prefix sums and (for unmasked
        groups) integral images, all on the device."""
        m, stream = self._matcher, work.stream
        count = len(frames)
        frame_h, frame_w, channels = frames[0].shape
        dtype = frames[0].dtype
        staged = work.batch("frames", count, (frame_h, frame_w, channels), dtype, host=True)
        for i, frame in enumerate(frames):
            staged[i] = frame
        d_frames = work.batch("frames", count, (frame_h, frame_w, channels), dtype)
        d_frames.copy_to_device(staged, stream=stream)
        height, width = m.prepared.padded((frame_h, frame_w))
        top, left = m.prepared.pad[0], m.prepared.pad[2]
        sums = self._offsets(work, d_frames, count, channels, height, width, top, left)
        inv_count = 1.0 / (height * width) if self._code in (CCOEFF, CCOEFF_NORMED) else 1.0
        planes = work.batch("planes", count, (channels, height, width), np.float32)
        magnitudes = work.upload("magnitudes", np.zeros(count))
        grid = (K.blocks(width, K.PX), K.blocks(height, K.PY, K.MAX_GRID_Y), count)
        K.make_planes[grid, (K.PX, K.PY), stream](d_frames, top, left, self._border, m.border_value, sums,
                                                  inv_count, planes, magnitudes)
        squares = channels if self._per_plane_squares else 1
        prefix = work.batch("prefix", count, (channels, height, width + 1), np.float64)
        sqprefix = work.batch("square prefix", count, (squares, height, width + 1), np.float64)
        K.row_prefix[(K.blocks(height, K.LINE_ROWS), count), (K.LINE_THREADS, K.LINE_ROWS), stream](
            planes, prefix, sqprefix)
        integral = sqintegral = None
        if self._integrals:
            integral = work.batch("integral", count, (channels, height + 1, width + 1), np.float64)
            sqintegral = work.batch("square integral", count, (squares, height + 1, width + 1), np.float64)
            blocks, threads = K.blocks(width + 1, K.PX), (K.PX, K.COLUMN_THREADS)
            K.column_prefix[(blocks, channels, count), threads, stream](prefix, integral)
            K.column_prefix[(blocks, squares, count), threads, stream](sqprefix, sqintegral)
        return planes, prefix, sqprefix, integral, sqintegral, sums, magnitudes

    def _offsets(self, work: Workspace, d_frames, count: int, channels: int, height: int, width: int, top: int,
                 left: int):
        """What make_planes takes off each channel: (N, C) float64 on the device (sums; see make_planes)."""
        if self._code in (SQDIFF, SQDIFF_NORMED):
            host = np.broadcast_to(self._offset.reshape(1, -1)[:, :channels], (count, channels))
        else:
            host = np.zeros((count, channels))
        sums = work.upload("sums", np.asarray(host, np.float64))
        if self._code in (CCOEFF, CCOEFF_NORMED):
            grid = (K.blocks(width, K.PX), K.blocks(height, K.PY, K.MAX_GRID_Y), count)
            K.channel_sums[grid, (K.PX, K.PY), work.stream](d_frames, top, left, height, width, self._border,
                                                            self._matcher.border_value, sums)
        return sums

    def _group_scores(self, work: Workspace, index: int, dg: _DeviceGroup, planes, prefix, sqprefix, integral,
                      sqintegral, sums, magnitudes, cells: int, c1: float, c2: float, frame_shape, count: int):
        """Correlate and score one group: its maps (N, M, Ho, Wo) on the device."""
        m = self._matcher
        group = dg.group
        stream = work.stream
        out_h, out_w = m.output_shape(group.members[0], frame_shape)
        kp = dg.kernels.shape[0]
        raw = work.batch(f"raw {index}", count, (kp, out_h, out_w), np.float32)
        oy, ox = group.offset
        stride = m.stride
        if dg.rows_per_pass:
            grid = (K.blocks(out_w, K.TX * K.RX), K.blocks(out_h, K.TY, K.MAX_GRID_Y), count * (kp // K.KT))
            shared = 4 * K.tile_floats(group.height, group.width, stride, dg.rows_per_pass)
            K.correlate[grid, (K.TX, K.TY), stream, shared](planes, dg.kernels, oy, ox, stride, dg.rows_per_pass,
                                                            raw)
        else:
            grid = (K.blocks(out_w, K.PX), K.blocks(out_h, K.PY, K.MAX_GRID_Y), count * (kp // K.KT))
            K.correlate_wide[grid, (K.PX, K.PY), stream](planes, dg.kernels, oy, ox, stride, raw)
        members = len(group.members)
        out = work.batch(f"maps {index}", count, (members, out_h, out_w), np.float32)
        grid = (K.blocks(out_w, K.PX), K.blocks(out_h, K.PY, K.MAX_GRID_Y), count)
        block = (K.PX, K.PY)
        if group.masked:
            sets = dg.extra
            grid = (grid[0], grid[1], count * len(group.mask_sets))
            K.score_masked[grid, block, stream](raw, prefix, sqprefix, *sets[:12], dg.tenergy, dg.tnorm_energy,
                                                sets[12], oy, ox, stride, self._code, sums, magnitudes, cells, out)
        elif self._code == SSIM:
            K.score_ssim[grid, block, stream](raw, integral, sqintegral, dg.extra[0], oy, ox, stride, group.height,
                                              group.width, dg.extra[1], dg.extra[2], c1, c2, out)
        else:
            K.score_plain[grid, block, stream](raw, integral, sqintegral, oy, ox, stride, group.height, group.width,
                                               self._code, sums, magnitudes, cells, dg.tenergy, dg.tnorm_energy,
                                               dg.tmeans, out)
        return out

    def _peaks(self, work: Workspace, index: int, maps, lower: bool, limit: float | None, distances, peaks, counts,
               top_k: int) -> None:
        """Each map's top_k peaks into ``peaks`` and ``counts`` (zeroed): round by round over many blocks a map
        for a few peaks, one launch of one block a map for many (see cuda_kernels.FEW_PEAKS)."""
        stream = work.stream
        count, members = maps.shape[0], maps.shape[1]
        bound = -np.inf if limit is None else float(limit)
        if top_k > K.FEW_PEAKS:
            K.top_peaks[(members, count), K.PEAK_THREADS, stream](maps, lower, bound, limit is not None, distances,
                                                                  peaks, counts)
            return
        per_map = K.peak_blocks(maps.shape[2] * maps.shape[3])
        partial = work.batch(f"partial {index}", count, (members, per_map), np.float32)
        partial_at = work.batch(f"partial at {index}", count, (members, per_map), np.int64)
        for round_ in range(top_k):
            K.partial_peaks[(per_map, members, count), K.PEAK_THREADS, stream](
                maps, lower, distances, peaks, counts, round_, partial, partial_at)
            K.pick_peaks[(members, count), K.PEAK_THREADS, stream](
                maps, bound, limit is not None, peaks, counts, round_, partial, partial_at)

    def _assemble(self, count: int, found_peaks, found_counts, found_maps, gpu_seconds: float) -> BatchResult:
        templates = len(self._matcher.shapes)
        peaks: list[list[np.ndarray]] = [[np.zeros((0, 7))] * templates for _ in range(count)]
        maps: list[list[np.ndarray]] | None = [[None] * templates for _ in range(count)] if found_maps else None
        for index, dg in enumerate(self._groups):
            for n in range(count):
                for position, member in enumerate(dg.group.members):
                    peaks[n][member] = found_peaks[index][n, position, : found_counts[index][n, position]].copy()
                    if maps is not None:
                        maps[n][member] = found_maps[index][n, position].copy()
        return BatchResult(peaks=peaks, maps=maps, gpu_seconds=gpu_seconds)
