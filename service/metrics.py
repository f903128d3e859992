"""Prometheus metrics of the service, on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """The service's counters, gauges and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frames = Counter("featuremap_frames", "Frames matched", ["rpc"], registry=self.registry)
        self.skipped = Counter("featuremap_skipped_frames", "Frames skipped in realtime mode",
                               registry=self.registry)
        self.latency = Histogram(
            "featuremap_frame_latency_seconds", "Server time per frame: decode, compute, encode",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
            registry=self.registry,
        )
        self.streams = Gauge("featuremap_active_streams", "StreamMatch calls in progress", registry=self.registry)
        self.bank = Gauge("featuremap_bank_templates", "Templates in the bank", registry=self.registry)
        self.errors = Counter("featuremap_errors", "Calls ended with an error", ["code"], registry=self.registry)

    def serve(self, address: str) -> None:
        """Expose the metrics over HTTP at host:port."""
        host, port = address.rsplit(":", 1)
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
