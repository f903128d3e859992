"""featuremap's CUDA path beside torch/cuDNN and the CPU engine, in one run: ``make bench-cuda``.

Needs an NVIDIA GPU and featuremap[cuda] (DEVELOPERS.md says how to run it on
the device machine); elsewhere it says why and exits 0. For each workload
(VGA unless named; K templates of k x k) it prints the median ms per frame of

- featuremap-cuda, one frame per call and in batches of 16 (uint8 frames
  uploaded, peaks found on the GPU, only the top-1 peaks downloaded),
- torch/cuDNN fp32 (conv2d with the bank as output channels; the same
  uint8 upload, the ccoeff_normed window statistics from box filters, a
  top-1 argmax per map downloaded), and with TF32 where named,
- the CPU engine on this machine's cores (Matcher.find, peaks only),

then the server: 16 concurrent VGA gray streams (K=8 k=16, ccoeff_normed,
peaks only, raw frames), each client its own process, against
``featuremap-server serve --device cuda`` on this machine: frames/s together.
Targets (issue 15, H100) are printed beside the figures.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import time

import numpy as np

from featuremap.service.engine import Matcher, cuda_problem, warmup
from timing import median_ms

WORKLOADS = [  # name, height, width, channels, K, k, method, (single, batched) targets in ms or None
    ("gray K=8 k=16 ccoeff_normed", 480, 640, 1, 8, 16, "ccoeff_normed", (0.5, 0.3)),
    ("gray K=8 k=16 ccorr", 480, 640, 1, 8, 16, "ccorr", None),
    ("gray K=32 k=16 ccorr", 480, 640, 1, 32, 16, "ccorr", None),
    ("BGR K=8 k=16 ccoeff_normed", 480, 640, 3, 8, 16, "ccoeff_normed", None),
    ("1080p gray K=64 k=32 ccorr", 1080, 1920, 1, 64, 32, "ccorr", None),
]
BATCH = 16
STREAMS = 16
STREAM_SECONDS = 10.0


def bank(rng, height, width, channels, count, side):
    shape = (height, width) if channels == 1 else (height, width, channels)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    templates = []
    for _ in range(count):
        y, x = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        templates.append(frame[y:y + side, x:x + side].copy())
    return frame, templates


def torch_runner(frames, templates, method: str, tf32: bool):
    """torch/cuDNN fp32 (or TF32) for one batch of uint8 frames: upload, maps, top-1 per map downloaded."""
    import torch
    import torch.nn.functional as F

    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    device = torch.device("cuda")
    stack = np.stack([t if t.ndim == 3 else t[:, :, None] for t in templates]).astype(np.float32)
    weights = torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous().to(device)  # (K, C, k, k)
    k_count, channels, side = weights.shape[0], weights.shape[1], weights.shape[2]
    n = channels * side * side
    if method == "ccoeff_normed":
        weights = weights - weights.mean(dim=(2, 3), keepdim=True)
        tnorm = weights.pow(2).sum(dim=(1, 2, 3)).sqrt().view(1, -1, 1, 1)
    ones = torch.ones((1, channels, side, side), device=device)
    host = torch.from_numpy(np.stack([f if f.ndim == 3 else f[:, :, None] for f in frames])).pin_memory()

    def run():
        x = host.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        corr = F.conv2d(x, weights)
        if method == "ccoeff_normed":
            s1 = F.conv2d(x, ones)
            s2 = F.conv2d(x * x, ones)
            var = (s2 - s1 * s1 / n).clamp_min(1e-6)
            corr = corr / (var.sqrt() * tnorm)
        flat = corr.view(corr.shape[0], k_count, -1)
        best = flat.argmax(dim=2)
        best.cpu()

    return run


def table() -> None:
    rng = np.random.default_rng(0)
    try:
        import torch
        have_torch = torch.cuda.is_available()
        print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version() if have_torch else '-'}")
    except ImportError:
        have_torch = False
        print("torch: not importable, its columns are empty")
    print(f"{'workload':32} {'fm-cuda 1':>10} {'fm-cuda b16':>12} {'torch 1':>9} {'torch b16':>10} "
          f"{'torch tf32':>11} {'fm-cpu':>9}   targets")
    for name, height, width, channels, count, side, method, targets in WORKLOADS:
        frame, templates = bank(rng, height, width, channels, count, side)
        frames = [np.roll(frame, i, axis=1) for i in range(BATCH)]
        gpu = Matcher(templates, method=method, device="cuda")
        cpu = Matcher(templates, method=method)
        single = median_ms(lambda: gpu.find([frame]), 50)
        batched = median_ms(lambda: gpu.find(frames), 10) / BATCH
        cpu_ms = median_ms(lambda: cpu.find([frame]), 5)
        row = [single, batched]
        if have_torch:
            row.append(median_ms(torch_runner([frame], templates, method, False), 50))
            row.append(median_ms(torch_runner(frames, templates, method, False), 10) / BATCH)
            row.append(median_ms(torch_runner([frame], templates, method, True), 50) if height > 720 else float("nan"))
        else:
            row += [float("nan")] * 3
        target = f"<= {targets[0]} / {targets[1]} ms" if targets else "at or under torch fp32"
        print(f"{name:32} {row[0]:10.3f} {row[1]:12.3f} {row[2]:9.3f} {row[3]:10.3f} {row[4]:11.3f} {cpu_ms:9.2f}"
              f"   {target}; fm-cuda/torch {row[0] / row[2]:.2f}x single, {row[1] / row[3]:.2f}x batched")


def _client(port: int, seconds: float, template_ids: list[str], counter) -> None:
    from featuremap.client import FeatureMapClient

    rng = np.random.default_rng(os.getpid())
    frame = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    deadline = time.monotonic() + seconds
    frames = 0

    def source():
        while time.monotonic() < deadline:
            yield frame

    with FeatureMapClient(f"127.0.0.1:{port}", timeout=seconds + 60) as client:
        for _ in client.stream(source(), templates=template_ids, method="ccoeff_normed", window=4):
            frames += 1
    with counter.get_lock():
        counter.value += frames


def server_streams() -> None:
    from featuremap.client import FeatureMapClient

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from service_helpers import free_port, wait_serving  # noqa: E402
    import grpc
    import tempfile

    port = free_port()
    data = tempfile.mkdtemp()
    server = subprocess.Popen([sys.executable, "-m", "featuremap.service", "serve", "--address", f"127.0.0.1:{port}",
                               "--data-dir", data, "--device", "cuda", "--max-streams", str(STREAMS + 4)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{port}"), timeout=600)
        rng = np.random.default_rng(1)
        frame, templates = bank(rng, 480, 640, 1, 8, 16)
        with FeatureMapClient(f"127.0.0.1:{port}", timeout=60) as client:
            ids = [client.create_template(t, template_id=f"t{i}").id for i, t in enumerate(templates)]
        counter = multiprocessing.Value("l", 0)
        clients = [multiprocessing.Process(target=_client, args=(port, STREAM_SECONDS, ids, counter))
                   for _ in range(STREAMS)]
        started = time.monotonic()
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.monotonic() - started
        print(f"server --device cuda, {STREAMS} VGA gray streams (K=8 k=16 ccoeff_normed, peaks only, raw frames, "
              f"a process each): {counter.value / elapsed:.0f} frames/s together (target >= 1000)")
    finally:
        server.terminate()
        server.wait(60)


def main() -> int:
    problem = cuda_problem()
    if problem is not None:
        print(f"bench_cuda: no GPU to measure on: {problem}")
        return 0
    from numba import cuda

    gpu = cuda.get_current_device().name
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    print(f"GPU: {gpu}; CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}")
    warmup("cuda")
    table()
    server_streams()
    return 0


if __name__ == "__main__":
    sys.exit(main())
