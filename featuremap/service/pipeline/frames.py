"""The frame processor: a MatchConfig planned once, then each frame decoded, matched and encoded.

Match and StreamMatch both go through it, and it owns what they share: the
compute pool (as many frames at once as there are cores), the cache of
prepared matchers, and the per-frame reports. It speaks the wire on both
sides (``featuremap.wire``) and plain data to the bank and the engine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import Message

from featuremap import wire
from featuremap.options import OPTIONS, config_values
from featuremap.v1 import featuremap_pb2 as pb

from ..engine import Cancelled, check_options, check_peak_options, gpu_memory_bytes, grid_size, map_shape, runtime
from ..errors import InvalidArgument, LimitExceeded
from ..settings import Settings
from ..store.bank import Bank
from ..store.prepared import PreparedCache
from . import codec
from .batching import GpuBatcher, Pacing
from .budget import MemoryBudget, Reservation
from .matching import check_pose_options, compute
from .plans import Computed, MatchOptions, Plan, PoseMemory
from .reports import Reports

#: The service's own limits on a config (the engine has none on these), by option name.
MAX_TOP_K = 1000
MAX_STRIDE = 64
_LIMITS = {"stride": MAX_STRIDE, "top_k": MAX_TOP_K}


def _windows(template) -> tuple[tuple[int, int, int], ...]:
    """The least and the largest window a template's map may be of (height, width, channels): its box at
    its least scale, and at its largest turned to any angle (a pose's map is drawn at the pose, a turned
    variant's map on the turned box's hull), whichever padding makes the larger map of them. A pose
    template's scales include 1: its map falls back to the template as registered where no pose was
    found or the pose's canvas does not fit the frame."""
    height, width, channels = template.image.shape
    scales = (*(template.scale_range or ()), 1.0) if template.posed else template.scales
    low, high = min(scales), max(scales)
    angle_range = template.angle_range or (0.0, 0.0)
    turns = (angle_range[1] > angle_range[0] or angle_range[0] % 360 != 0) if template.posed else \
        any(angle % 360 != 0 for angle in template.angles)
    least = (max(1, math.floor(height * low)), max(1, math.floor(width * low)), channels)
    if turns:
        side = math.ceil(math.hypot(height, width) * high) + 1
        return least, (side, side, channels)
    return least, (math.ceil(height * high) + 1, math.ceil(width * high) + 1, channels)


def pose_grid(template) -> tuple[int, int]:
    """A pose template's top-level poses and their bytes (engine.grid_size), from its stored ranges."""
    height, width, channels = template.image.shape
    return grid_size(height, width, channels, template.angle_range or (0.0, 0.0), template.scale_range or (1.0, 1.0))


@dataclass(frozen=True)
class Decoded:
    """A frame's pixels (HxWxC) and what decoding them cost."""

    image: np.ndarray
    decode_ms: float


@dataclass(frozen=True)
class Answer:
    """One frame's FrameResult (without maps) and its maps, ready for the response encoder."""

    result: pb.FrameResult
    maps: list[wire.EncodedMap]


def match_options(config: pb.MatchConfig) -> MatchOptions:
    """A config's options by name, read by featuremap.options' table (unset: its defaults); the engine
    checks their values."""
    # The service's limits first, then the choices' names: the order a config's mistakes are told in.
    for name, limit in _LIMITS.items():
        option = OPTIONS[name]
        value = option.wire_value(config) or option.default
        if value > limit:
            raise InvalidArgument(f"{option.field} {value} is over {limit}")
    try:
        values = config_values(config)
    except wire.WireError as error:
        raise InvalidArgument(str(error)) from None
    del values["templates"]  # the plan's: resolved against the bank
    options = MatchOptions(**values)
    # The engine's own checks, now rather than at the first frame.
    check_options(**options.engine_options())
    check_peak_options(top_k=options.top_k, threshold=options.threshold, min_distance=options.min_distance or None)
    check_pose_options(options)
    return options


class FrameProcessor:
    """Decode -> compute -> encode, for every frame of every call.

    Parameters
    ----------
    settings : Settings
        Its limits: frame pixels, templates per request, frames in flight; its
        ``cpus`` and ``memory_budget`` as the server edge resolved them (from the
        container's limits where the flags left them 0).
    bank : Bank
        Where configs find their templates.
    reports : Reports
        Where frames, skipped frames, latency and the budget's shares are reported.
    """

    def __init__(self, settings: Settings, bank: Bank, reports: Reports) -> None:
        if settings.cpus < 1 or settings.memory_budget < 1:
            raise ValueError("the frame processor takes cpus and memory_budget resolved (the server edge does)")
        self._settings = settings
        self._bank = bank
        self._reports = reports
        self.cpus = settings.cpus
        budget = settings.memory_budget
        # A quarter for what prepared Matchers and pose searches keep between
        # calls (kernel spectra, variants), an eighth for frames waiting in
        # streams (from arrival to answer), the rest for the calls at work. The
        # waiting frames have a share of their own: frames queued behind a call
        # must never take the memory that call needs to finish (and free them).
        self.queued = MemoryBudget(budget // 8)
        self.budget = MemoryBudget(budget - budget // 4 - budget // 8)
        self.prepared = PreparedCache(retained_bytes=budget // 4, device=settings.device)
        self.gpu: GpuBatcher | None = None
        if settings.device == "cuda":
            self.gpu = GpuBatcher(workers=settings.gpu_workers, max_batch=settings.gpu_batch,
                                  max_wait=settings.gpu_batch_wait_ms / 1e3,
                                  memory_budget=settings.gpu_memory_budget or gpu_memory_bytes() * 3 // 4,
                                  reports=reports)
        reports.follow_memory("work", self.budget.total, lambda: self.budget.used)
        reports.follow_memory("queued", self.queued.total, lambda: self.queued.used)
        reports.follow_memory("retained", budget // 4, self.prepared.retained_bytes)
        # As many frames at once as the container has CPUs, each kernel on
        # that many threads (Numba's count is per calling thread). On the GPU
        # a frame's thread mostly waits for its batch: enough threads to fill
        # every worker's batch, or batches would never be larger than the CPUs.
        workers = self.cpus if self.gpu is None else max(self.cpus, settings.gpu_batch * settings.gpu_workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featuremap-compute",
                                        initializer=runtime.set_threads, initargs=(self.cpus,))

    @property
    def stream_idle_seconds(self) -> float:
        """How long a stream may send nothing before it is ended (Settings.stream_idle_seconds)."""
        return self._settings.stream_idle_seconds

    @property
    def max_in_flight(self) -> int:
        """Frames a stream may have between its reader and its handler."""
        return self._settings.max_in_flight

    def plan(self, config: pb.MatchConfig) -> Plan:
        """Check a config and take the snapshot of the templates it names."""
        limit = self._settings.max_templates_per_request
        if len(config.templates) > limit:
            raise LimitExceeded(f"the config names {len(config.templates)} templates, over the limit of {limit} "
                                "(max_templates_per_request)")
        templates = tuple(self._bank.resolve(list(config.templates)))
        if not config.templates and len(templates) > limit:
            raise LimitExceeded(f"the whole bank is {len(templates)} templates, over the limit of {limit} "
                                "(max_templates_per_request): name the templates")
        # Pose templates count the poses their search's top level tries (admitted by their real size,
        # before anything is made); the others their scale x angle variants.
        variants, pose_bytes = 0, 0
        for template in templates:
            if template.posed:
                poses, nbytes = pose_grid(template)
                variants += poses
                pose_bytes += nbytes
            else:
                variants += len(template.scales) * len(template.angles)
        if variants > self._settings.max_variants_per_request:
            raise LimitExceeded(f"the config's templates have {variants} scale/rotation variants (a pose template: "
                                f"the poses its search tries at once), over the limit of "
                                f"{self._settings.max_variants_per_request} (max_variants_per_request): narrow "
                                "the angle or scale ranges, or match fewer templates")
        if pose_bytes > self.prepared.retained_limit:
            raise LimitExceeded(f"the config's pose searches need about {pose_bytes >> 20} MiB of rotated variants, "
                                f"over the {self.prepared.retained_limit >> 20} MiB the memory budget keeps for "
                                "prepared templates (memory_budget): narrow the ranges")
        options = match_options(config)
        return Plan(templates=templates, whole_bank=not config.templates, options=options)

    def reserve_frame(self, frame: pb.Frame, cancelled: Callable[[], bool], wait: bool = True) -> Reservation | None:
        """Charge the memory budget (its share for waiting frames) with what a frame holds until answered.

        Waits while the budget is full (``wait``; else None at once). Raises
        LimitExceeded when the frame could never fit, InvalidArgument on a
        corrupt header.
        """
        nbytes = codec.held_bytes(frame.image, self._settings.max_frame_pixels, f"frame {frame.sequence}")
        return self.queued.reserve(nbytes, cancelled, wait=wait, timeout=self._settings.stream_idle_seconds)

    def decode(self, frame: pb.Frame) -> Decoded:
        """A frame's pixels, within the frame pixel limit."""
        started = time.perf_counter()
        image = codec.decode_image(frame.image, f"frame {frame.sequence}", self._settings.max_frame_pixels,
                                   "max_frame_pixels", max_jpeg_scans=self._settings.max_jpeg_scans)
        return Decoded(image, (time.perf_counter() - started) * 1e3)

    def process(self, plan: Plan, frame: pb.Frame, decoded: Decoded | None = None,
                cancelled: Callable[[], bool] = lambda: False, rpc: str = "Match",
                poses: PoseMemory | None = None, pacing: Pacing | None = None) -> Answer:
        """Decode (unless done), match and encode one frame; stop between stages once ``cancelled()``.

        Raises
        ------
        featuremap.service.engine.Cancelled
            The caller went away or its deadline passed.
        """
        decoded = decoded or self.decode(frame)
        self._check_response_size(plan, decoded.image)
        if cancelled():
            raise Cancelled("the call ended before its frame was matched")
        computed = compute(plan, self.prepared, decoded.image, budget=self.budget, cancelled=cancelled, poses=poses,
                           gpu=self.gpu, wait=self._batch_wait(plan, pacing))
        if cancelled():
            raise Cancelled("the call ended before its maps were encoded")
        started = time.perf_counter()
        maps = self._encode_maps(plan, computed)
        encode_ms = (time.perf_counter() - started) * 1e3
        self._reports.frame_matched(rpc, (decoded.decode_ms + computed.compute_ms + encode_ms) / 1e3)
        result = pb.FrameResult(
            sequence=frame.sequence, capture_time=frame.capture_time,
            peaks=[wire.peak_message(p) for p in computed.peaks],
            timing=pb.Timing(decode_ms=decoded.decode_ms, compute_ms=computed.compute_ms, encode_ms=encode_ms),
        )
        return Answer(result, maps)

    def submit(self, plan: Plan, frame: pb.Frame, decoded: Decoded | None = None,
               cancelled: Callable[[], bool] = lambda: False, rpc: str = "Match",
               poses: PoseMemory | None = None, pacing: Pacing | None = None) -> Future[Answer]:
        """:meth:`process` on the compute pool (maps are encoded there too: encoding is work)."""
        submitted = time.perf_counter()

        def run() -> Answer:
            self._reports.frame_queued(rpc, time.perf_counter() - submitted)
            return self.process(plan, frame, decoded, cancelled, rpc, poses, pacing)

        return self._pool.submit(run)

    def _batch_wait(self, plan: Plan, pacing: Pacing | None) -> float | None:
        """How long this frame may wait for a GPU batch: None (the server's limit), or a realtime stream's
        frame interval from the capture times (0 until two frames have told it)."""
        if self.gpu is None or not plan.options.realtime:
            return None
        interval = pacing.interval if pacing is not None else None
        return interval or 0.0

    def _check_response_size(self, plan: Plan, image: np.ndarray) -> None:
        """Refuse, before matching, maps that could not be sent (over max_message_bytes)."""
        encoding = plan.options.maps
        if encoding is None:
            return
        item = {"float32": 4, "float16": 2, "uint8": 1}[encoding]
        total = 0
        for template in plan.templates:
            rows, cols = max((map_shape(plan.options.padding, plan.options.stride, image.shape, window)
                              for window in _windows(template)), key=lambda shape: shape[0] * shape[1])
            total += rows * cols * item + 64
        if total > self._settings.max_message_bytes:
            raise LimitExceeded(f"the maps of this frame would be {total} bytes, over the limit of "
                                f"{self._settings.max_message_bytes} (max_message_bytes): ask for fewer templates, "
                                "a stride, a smaller encoding (float16, uint8) or no maps")

    def respond(self, response: type[Message], answer: Answer, rpc: str, skipped: list[int] | None = None) -> bytes:
        """The response's wire bytes for an answered frame (counted as answered by ``rpc``)."""
        if skipped:
            answer.result.skipped_sequences.extend(skipped)
        self._reports.frame_answered(rpc)
        return wire.response_bytes(response, answer.result, answer.maps)

    def skipped(self) -> None:
        """Count a frame that realtime mode replaced by a newer one."""
        self._reports.frame_skipped()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop the pool (and the GPU workers): queued frames are dropped, running ones finish.

        Their calls are over by now (the server cancels them when its grace
        ends, and the engine stops at its next check); ``timeout`` bounds the
        wait for the slowest. Returns whether every worker finished in time.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.gpu is not None:
            self.gpu.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(getattr(self._pool, "_threads", ())):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in getattr(self._pool, "_threads", ()))

    @staticmethod
    def _encode_maps(plan: Plan, computed: Computed) -> list[wire.EncodedMap]:
        encoding = plan.options.maps
        if encoding is None:
            return []
        number = wire.MAP_ENCODINGS[encoding]
        encoded = []
        for placed in computed.maps:
            data, scale, offset = codec.encode_map(placed.scores, encoding)
            encoded.append(wire.EncodedMap(
                template=placed.template, height=placed.scores.shape[0], width=placed.scores.shape[1],
                encoding=number, data=data, scale=scale, offset=offset, origin_x=placed.origin_x,
                origin_y=placed.origin_y, stride=plan.options.stride, angle=placed.angle, template_scale=placed.scale,
                window_width=placed.window[0], window_height=placed.window[1],
            ))
        return encoded
