"""The server's settings as plain data: what every layer reads, parsed at the edge (``edge/config.py``).

Below the frame path and the bank, so that they take their limits as an
argument without importing the server edge that parses flags and the
environment into it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Everything the server reads at start."""

    address: str = "[::]:50051"
    data_dir: str = "./featuremap-data"
    bank: str = ""
    metrics_address: str = ""
    health_address: str = ""
    http_address: str = ""
    http_allow_origin: str = ""
    log_format: str = "text"
    log_level: str = "info"
    max_message_bytes: int = 64 << 20
    max_frame_pixels: int = 4096 * 4096
    max_template_pixels: int = 1024 * 1024
    max_templates: int = 10000
    max_templates_per_request: int = 256
    max_streams: int = 64
    stream_idle_seconds: float = 60.0
    max_calls: int = 16
    max_in_flight: int = 4
    max_variants_per_request: int = 1024
    max_jpeg_scans: int = 100
    memory_budget: int = 0
    cpus: int = 0
    grace_seconds: float = 8.0
    tokens_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    device: str = "cpu"
    gpu_memory_budget: int = 0
    gpu_batch: int = 16
    gpu_batch_wait_ms: float = 2.0
    gpu_workers: int = 2
