"""What the frame path reports, as the one narrow interface the server edge's metrics implement.

The frame path says what happened (a frame answered, a wait, a GPU batch);
how it is counted (Prometheus, names, buckets) is the edge's business
(``featuremap.service.edge.metrics``), so nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Reports(Protocol):
    """Where the frame path's events go."""

    def follow_memory(self, share: str, total: int, in_use: Callable[[], int]) -> None:
        """A share of the memory budget: its size, and a function that says what of it is in use."""

    def frame_matched(self, rpc: str, seconds: float) -> None:
        """A frame decoded, matched and encoded in ``seconds`` of server time."""

    def frame_queued(self, rpc: str, seconds: float) -> None:
        """A frame waited ``seconds`` for the compute pool."""

    def frame_answered(self, rpc: str) -> None:
        """A frame's answer went out."""

    def frame_skipped(self) -> None:
        """Realtime mode replaced a waiting frame by a newer one."""

    def gpu_batch_waited(self, seconds: float) -> None:
        """A GPU batch's first frame waited ``seconds`` for company."""

    def gpu_batch_done(self, frames: int, seconds: float) -> None:
        """A GPU batch of ``frames`` took ``seconds``."""


class NoReports:
    """:class:`Reports` that counts nothing (a batcher or processor used on its own)."""

    def follow_memory(self, share: str, total: int, in_use: Callable[[], int]) -> None:
        pass

    def frame_matched(self, rpc: str, seconds: float) -> None:
        pass

    def frame_queued(self, rpc: str, seconds: float) -> None:
        pass

    def frame_answered(self, rpc: str) -> None:
        pass

    def frame_skipped(self) -> None:
        pass

    def gpu_batch_waited(self, seconds: float) -> None:
        pass

    def gpu_batch_done(self, frames: int, seconds: float) -> None:
        pass
