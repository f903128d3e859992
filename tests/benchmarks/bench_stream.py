"""The service's overhead: the engine in-process beside StreamMatch over loopback (``make bench``).

One run, one bank (VGA gray frames, K=8 templates of 16x16, ccoeff_normed,
top-1 peaks): frames per second of

- the engine in this process (Matcher + find_peaks per frame, what the server
  computes per frame),
- StreamMatch to a ``featuremap-server serve`` process on loopback, peaks only,
- the same with every map returned as FLOAT16,

with the ratio to the engine and the p50/p99 frame latency seen by the client
(from handing a frame to gRPC to receiving its result).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

from featuremap.client.demo import answers, free_port
from featuremap.wire import image_message as raw_image
from featuremap.service.engine import Matcher, find_peaks, runtime, warmup
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

FRAMES = 120
OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def workload(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (480, 640), dtype=np.uint8) for _ in range(8)]
    templates = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(8)]
    return frames, templates


def engine_fps(frames, templates) -> float:
    matcher = Matcher(templates, method="ccoeff_normed")
    matcher(frames[0])
    started = time.perf_counter()
    for i in range(FRAMES):
        for score_map in matcher(frames[i % len(frames)]):
            find_peaks(score_map, method="ccoeff_normed", top_k=1, min_distance=8)
    return FRAMES / (time.perf_counter() - started)


def stream_run(stub, frames, encoding) -> tuple[float, list[float]]:
    """Frames per second and per-frame latencies (ms) of one StreamMatch of FRAMES frames."""
    messages = [pb.StreamMatchRequest(frame=pb.Frame(sequence=i, image=raw_image(frames[i % len(frames)])))
                for i in range(FRAMES)]
    sent = {}

    def requests():
        yield pb.StreamMatchRequest(config=pb.MatchConfig(maps=pb.MapOptions(encoding=encoding)))
        for message in messages:
            sent[message.frame.sequence] = time.perf_counter()
            yield message

    latencies = []
    started = time.perf_counter()
    for response in stub.StreamMatch(requests(), timeout=600):
        latencies.append((time.perf_counter() - sent[response.result.sequence]) * 1e3)
    elapsed = time.perf_counter() - started
    assert len(latencies) == FRAMES
    return FRAMES / elapsed, latencies


def main() -> None:
    runtime.retain_freed_memory()
    warmup()
    frames, templates = workload()
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [sys.executable, "-m", "featuremap.service", "serve", "--address", f"127.0.0.1:{port}",
             "--data-dir", data, "--log-level", "warning"],
            env=os.environ.copy(),
        )
        try:
            if not answers(f"127.0.0.1:{port}", 180.0):
                raise RuntimeError("the benchmark server did not become ready")
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
            stub = pb_grpc.FeatureMapServiceStub(channel)
            for i, template in enumerate(templates):
                stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(template)),
                                                             template_id=f"t{i}"))
            stream_run(stub, frames, pb.MAP_ENCODING_UNSPECIFIED)  # warm the server's plans
            rows = []
            # Alternate the contenders, three rounds, so drift in the machine's load hits all alike.
            results = {"engine": [], "peaks": [], "float16": []}
            latencies = {"peaks": [], "float16": []}
            for _ in range(3):
                results["engine"].append(engine_fps(frames, templates))
                for name, encoding in (("peaks", pb.MAP_ENCODING_UNSPECIFIED), ("float16", pb.MAP_ENCODING_FLOAT16)):
                    fps, lat = stream_run(stub, frames, encoding)
                    results[name].append(fps)
                    latencies[name] += lat
            engine = statistics.median(results["engine"])
            rows.append(("engine in-process", engine, None, None))
            for name, label in (("peaks", "StreamMatch, peaks only"), ("float16", "StreamMatch, FLOAT16 maps")):
                lat = np.array(latencies[name])
                rows.append((label, statistics.median(results[name]), np.percentile(lat, 50), np.percentile(lat, 99)))
            channel.close()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    print(f"StreamMatch vs the engine: VGA gray frames, K=8 templates 16x16, ccoeff_normed, top-1 peaks; "
          f"{FRAMES} frames per run, median of 3 runs; server: `featuremap-server serve` on loopback\n")
    header = f"{'':<28}{'frames/s':>10}{'vs engine':>11}{'p50 ms':>9}{'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for label, fps, p50, p99 in rows:
        extra = f"{p50:9.1f}{p99:9.1f}" if p50 is not None else f"{'-':>9}{'-':>9}"
        print(f"{label:<28}{fps:10.1f}{fps / engine:10.2f}x{extra}")
    print("\nlatency: from handing a frame to gRPC to receiving its result; frames are sent as fast as the "
          "stream takes them,\nso it includes the wait in the server's bounded queues.")


if __name__ == "__main__":
    main()
