"""Prometheus metrics of the service, on their own registry.

Labels are the RPC method and the status code, never a stream or a peer:
the series stay few however many clients come and go.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
)
from prometheus_client.platform_collector import PlatformCollector

import featuremap

from .metrics_http import MetricsServer

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)


class Metrics:
    """The service's counters, gauges and histograms (and the process's own, as Prometheus names them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("featuremap_build", "The running featuremap", registry=self.registry).info(
            {"version": featuremap.__version__})
        self.frames = Counter("featuremap_frames", "Frames answered", ["rpc"], registry=self.registry)
        self.skipped = Counter("featuremap_skipped_frames", "Frames skipped in realtime mode (a newer one came)",
                               registry=self.registry)
        self.latency = Histogram("featuremap_frame_latency_seconds",
                                 "Server time per frame: decode, match, encode", ["rpc"], buckets=_SECONDS,
                                 registry=self.registry)
        self.queue_wait = Histogram("featuremap_queue_wait_seconds",
                                    "Time a frame waited for the compute pool", ["rpc"], buckets=_SECONDS,
                                    registry=self.registry)
        self.streams = Gauge("featuremap_active_streams", "StreamMatch calls in progress", registry=self.registry)
        self.bank = Gauge("featuremap_bank_templates", "Templates in the bank", registry=self.registry)
        self.errors = Counter("featuremap_errors", "Calls ended with an error", ["rpc", "code"],
                              registry=self.registry)
        # Per share of the memory budget: "work" (the calls at work; the alert watches it), "queued"
        # (frames waiting in streams), "retained" (what prepared matchers and searches keep).
        self.memory_budget = Gauge("featuremap_memory_budget_bytes", "Bytes a share of the memory budget may hold",
                                   ["share"], registry=self.registry)
        self.memory_in_use = Gauge("featuremap_memory_in_use_bytes", "Bytes a share of the memory budget holds now",
                                   ["share"], registry=self.registry)

        self.gpu_batch_size = Histogram("featuremap_gpu_batch_frames", "Frames per GPU batch (--device cuda)",
                                        buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.gpu_seconds = Histogram("featuremap_gpu_batch_seconds",
                                     "Time per GPU batch: upload, kernels, peaks or maps back", buckets=_SECONDS,
                                     registry=self.registry)
        self.gpu_batch_wait = Histogram("featuremap_gpu_batch_wait_seconds",
                                        "How long a GPU batch's first frame waited for company", buckets=_SECONDS,
                                        registry=self.registry)

    # The frame path's reports (featuremap.service.pipeline.reports.Reports), counted here.

    def frame_matched(self, rpc: str, seconds: float) -> None:
        self.latency.labels(rpc).observe(seconds)

    def frame_queued(self, rpc: str, seconds: float) -> None:
        self.queue_wait.labels(rpc).observe(seconds)

    def frame_answered(self, rpc: str) -> None:
        self.frames.labels(rpc).inc()

    def frame_skipped(self) -> None:
        self.skipped.inc()

    def gpu_batch_waited(self, seconds: float) -> None:
        self.gpu_batch_wait.observe(seconds)

    def gpu_batch_done(self, frames: int, seconds: float) -> None:
        self.gpu_batch_size.observe(frames)
        self.gpu_seconds.observe(seconds)

    def follow_memory(self, share: str, total: int, in_use: Callable[[], int]) -> None:
        """Report a share of the memory budget and, at every scrape, what of it is in use."""
        self.memory_budget.labels(share).set(total)
        self.memory_in_use.labels(share).set_function(in_use)

    def serve(self, address: str) -> MetricsServer:
        """Expose the metrics over HTTP at host:port (one event loop, bounded: see metrics_http)."""
        host, port = address.rsplit(":", 1)
        return MetricsServer(self.registry, host.strip("[]") or "0.0.0.0", int(port))
