"""The GPU batcher's rules, run with real (CPU) Matchers: what waits, for how long, and what never poisons a batch.

The batcher only calls ``Matcher.find`` and ``device_bytes``, which a CPU
Matcher has too, so its logic is checked here without a GPU (the GPU server
itself: tests/cuda_sim/test_cuda_server.py). Nothing here depends on timing
beyond "before a minute passes".
"""

from __future__ import annotations


import numpy as np
import pytest

from featuremap.service.pipeline.batching import GpuBatcher, Pacing
from featuremap.service.engine import Cancelled, Matcher, OptionError
from featuremap.service.edge.metrics import Metrics
from service_helpers import scene

FRAME = scene(1, 40, 48)
TEMPLATE = FRAME[10:18, 12:22].copy()
SETTINGS = dict(top_k=2, threshold=None, min_distance=[3], subpixel=True, maps=False)


def histogram(metrics: Metrics, name: str, suffix: str) -> float:
    return metrics.registry.get_sample_value(name + suffix) or 0.0


@pytest.fixture
def batcher():
    metrics = Metrics()
    made = GpuBatcher(workers=1, max_batch=2, max_wait=60.0, memory_budget=1 << 30, reports=metrics)
    yield made, metrics
    made.stop()


def in_thread(workers, fn, *args, **kwargs):
    """Run ``fn`` on one of the test's workers (its exception fails the test); its result lands in the box."""
    box: dict = {}

    def run() -> None:
        box["result"] = fn(*args, **kwargs)

    return workers.start(run), box


def test_two_frames_of_one_kind_go_together_and_each_gets_its_own_answer(batcher, workers):
    gpu, metrics = batcher
    matcher = Matcher([TEMPLATE])
    frames = [FRAME, np.roll(FRAME, 3, axis=1)]
    runs = [in_thread(workers, gpu.find, matcher, f, **SETTINGS) for f in frames]
    for thread, _ in runs:
        thread.join(timeout=55)
        workers.raise_first()
    for frame, (_, box) in zip(frames, runs):
        assert box["result"].peaks == matcher.find([frame], **SETTINGS)[0].peaks
    assert histogram(metrics, "featuremap_gpu_batch_frames", "_count") == 1
    assert histogram(metrics, "featuremap_gpu_batch_frames", "_sum") == 2


def test_a_frame_that_may_not_wait_is_not_held_for_company(batcher, workers):
    gpu, _ = batcher
    matcher = Matcher([TEMPLATE])
    thread, box = in_thread(workers, gpu.find, matcher, FRAME, wait=0.0, **SETTINGS)
    thread.join(timeout=55)
    workers.raise_first()
    assert not thread.is_alive() and box["result"].peaks[0][0].x == pytest.approx(12, abs=0.5)


def test_a_full_batch_does_not_wait_behind_a_waiting_one(batcher, workers):
    gpu, _ = batcher
    lonely = in_thread(workers, gpu.find, Matcher([TEMPLATE]), FRAME, **SETTINGS)  # waits up to a minute for company
    other = Matcher([TEMPLATE], method="sqdiff")
    pair = [in_thread(workers, gpu.find, other, f, **SETTINGS) for f in (FRAME, FRAME)]
    for thread, box in pair:
        thread.join(timeout=55)
        workers.raise_first()
        assert box["result"].peaks[0][0].x == pytest.approx(12, abs=0.5)
    assert lonely[0].is_alive()  # still waiting: its minute is not up
    gpu.stop()  # stopping runs what is queued
    lonely[0].join(timeout=55)
    workers.raise_first()
    assert lonely[1]["result"].peaks[0][0].x == pytest.approx(12, abs=0.5)


def test_a_bad_frame_is_refused_alone_and_a_cancelled_one_leaves_the_queue(batcher, workers):
    gpu, metrics = batcher
    matcher = Matcher([TEMPLATE.astype(np.float32)])
    good = FRAME.astype(np.float32)
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(OptionError, match="NaN"):
        gpu.find(matcher, bad, **SETTINGS)
    with pytest.raises(Cancelled):
        gpu.find(matcher, good, cancelled=lambda: True, **SETTINGS)
    # Neither joined a batch: the next two frames make the first batch.
    runs = [in_thread(workers, gpu.find, matcher, good, **SETTINGS) for _ in range(2)]
    for thread, box in runs:
        thread.join(timeout=55)
        workers.raise_first()
        assert box["result"].peaks[0][0].x == pytest.approx(12, abs=0.5)
    assert histogram(metrics, "featuremap_gpu_batch_frames", "_count") == 1


def test_pacing_measures_the_interval_between_capture_times():
    pacing = Pacing()
    assert pacing.interval is None
    pacing.note(10.0)
    pacing.note(None)  # a frame without a capture time changes nothing
    assert pacing.interval is None
    pacing.note(10.04)
    assert pacing.interval == pytest.approx(0.04)
    pacing.note(10.02)  # out of order: ignored
    assert pacing.interval == pytest.approx(0.04)
