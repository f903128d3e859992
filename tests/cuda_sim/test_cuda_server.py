"""``serve --device cuda`` under Numba's CUDA simulator: a real server on a real port, real gRPC.

Collected only with NUMBA_ENABLE_CUDASIM=1 (see tests/engine/test_cuda.py). One GPU
worker: the simulator runs one kernel at a time. Batching is checked without
timing: a batch of two that may wait ten minutes runs as soon as its second frame
comes, and a realtime stream's frames never wait that long. The wait is far
beyond what any step takes here, even under the simulator on a loaded machine,
so that a batch never runs short because a machine was slow.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest

from featuremap.client import FeatureMapClient, FeatureMapError
from featuremap.service.pipeline.batching import GpuBatcher
from featuremap.service.engine import Matcher, find_peaks
from featuremap.service.errors import LimitExceeded
from featuremap.service.edge.metrics import Metrics
from images import structured_image
from service_helpers import free_port, running_server

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

FRAME = structured_image(np.random.default_rng(3), 14, 16, 1, np.uint8)
TEMPLATE = FRAME[4:9, 5:11].copy()


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.roll(FRAME, int(rng.integers(-2, 3)), axis=1) for _ in range(count)]


def expected_peak(frame: np.ndarray, method: str = "ccoeff_normed"):
    score_map = Matcher([TEMPLATE], method=method)(frame)[0]
    return find_peaks(score_map, method=method)[0], score_map


#: How long a batch may wait for its second frame.
BATCH_WAIT_S = 600.0


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    port = free_port()
    settings = dict(device="cuda", gpu_workers=1, gpu_batch=2, gpu_batch_wait_ms=BATCH_WAIT_S * 1000.0,
                    metrics_address=f"127.0.0.1:{port}")
    with running_server(tmp_path_factory.mktemp("data"), **settings) as (_, _, server):
        with FeatureMapClient(f"127.0.0.1:{server.port}", timeout=BATCH_WAIT_S / 2) as client:
            template = client.create_template(TEMPLATE, template_id="logo")
            yield client, server, port, template


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_two_streams_share_a_gpu_batch_and_get_the_cpu_engines_peaks(gpu_server):
    client, _, port, _ = gpu_server
    batches_before = metric(port, "featuremap_gpu_batch_frames_count")
    frames_before = metric(port, "featuremap_gpu_batch_frames_sum")
    inputs = {0: frames(2, seed=1), 1: frames(2, seed=2)}
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            results[i] = list(client.stream(inputs[i], templates=["logo"], window=1, maps="float32"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for i in range(2):
        for frame, result in zip(inputs[i], results[i]):
            peak, score_map = expected_peak(frame)
            assert (result.peaks[0].x, result.peaks[0].y) == (peak.x, peak.y)
            assert result.peaks[0].score == pytest.approx(peak.score, abs=1e-4)
            assert np.abs(result.maps["templates/logo"].scores - score_map).max() <= 1e-4
    # Four frames, every batch full (two frames, from the two streams): none waited out its wait.
    assert metric(port, "featuremap_gpu_batch_frames_count") - batches_before == 2
    assert metric(port, "featuremap_gpu_batch_frames_sum") - frames_before == 4
    assert metric(port, "featuremap_gpu_batch_seconds_count") >= 2


def test_a_realtime_stream_waits_no_longer_than_its_frame_interval(gpu_server):
    client, _, _, _ = gpu_server
    started = time.monotonic()
    now = time.time()
    items = [(i, now + 0.01 * i, frame) for i, frame in enumerate(frames(3, seed=3))]
    results = list(client.stream(items, templates=["logo"], realtime=True, window=1))
    # Alone, with batches of two allowed to wait BATCH_WAIT_S: only the stream's 10 ms interval let it
    # go on (a frame that waited out the batch would also have passed the client's deadline, half of it).
    assert time.monotonic() - started < BATCH_WAIT_S / 2
    assert results and results[-1].sequence == 2  # realtime may skip a stale frame, never the newest
    for result in results:
        peak, _ = expected_peak(items[result.sequence][2])
        assert (result.peaks[0].x, result.peaks[0].y) == (peak.x, peak.y)


def test_bad_frames_are_refused_and_the_gpu_server_stays_up(gpu_server):
    client, _, _, template = gpu_server
    with pytest.raises(FeatureMapError) as caught:
        client.match(np.zeros((3, 3), np.uint8), templates=["logo"], realtime=True)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(FeatureMapError) as caught:  # a layout no conversion reaches
        client.match(np.dstack([FRAME] * 2), templates=["logo"], realtime=True)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert client.get_template("logo").etag == template.etag
    result = list(client.stream([(0, time.time(), FRAME)], templates=["logo"], realtime=True))[0]
    peak, _ = expected_peak(FRAME)
    assert (result.peaks[0].x, result.peaks[0].y) == (peak.x, peak.y)


def test_a_frame_over_the_gpu_memory_budget_is_refused_with_the_flag_named():
    # The batcher the server runs, with a budget no frame fits (a second server would only add its warm-up).
    batcher = GpuBatcher(workers=1, max_batch=2, max_wait=0.0, memory_budget=4096, reports=Metrics())
    try:
        matcher = Matcher([TEMPLATE], device="cuda")
        assert matcher.device_bytes(FRAME.shape, FRAME.dtype) > 4096
        with pytest.raises(LimitExceeded, match="gpu_memory_budget"):
            batcher.find(matcher, FRAME, top_k=1)
    finally:
        batcher.stop()
