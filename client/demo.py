"""``featuremap demo`` (``make demo``): the main job on embedded defaults.

Writes a sample video of a textured scene in which three distinct objects
move along known paths, starts a server (unless one answers at --address),
registers templates cut from the first frame, streams the video through the
server, writes ``overlay.mp4``, ``heatmap.png`` and ``detections.jsonl`` to
the output folder, and prints how far each detection was from the truth.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from .client import FeatureMapClient, FeatureMapError

SIZE = (480, 640)
OBJECT = 32
FPS = 30.0
TOLERANCE = 2.0


def path_of(name: str, t: int) -> tuple[int, int]:
    """Top-left (x, y) of object ``name`` in frame ``t``."""
    return {
        "demo-a": (40 + 3 * t, 60),
        "demo-b": (560, 40 + 3 * t),
        "demo-c": (100 + 2 * t, 400 - 2 * t),
    }[name]


def _objects(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Three patches that look nothing alike (and nothing like the background)."""
    patches = {}
    for name, colour in zip(("demo-a", "demo-b", "demo-c"), ((40, 40, 220), (40, 200, 40), (220, 120, 30))):
        patch = np.zeros((OBJECT, OBJECT, 3), np.uint8)
        patch[:] = colour
        cells = rng.integers(0, 2, (8, 8), dtype=np.uint8) * 255
        pattern = cv2.resize(cells, (OBJECT, OBJECT), interpolation=cv2.INTER_NEAREST)
        patch[pattern > 0] = 255 - np.array(colour, np.uint8)
        cv2.rectangle(patch, (0, 0), (OBJECT - 1, OBJECT - 1), (255, 255, 255), 2)
        patches[name] = patch
    return patches


def write_sample_video(path: Path, frames: int, seed: int = 3) -> None:
    """The scene: smooth texture, three objects moving along :func:`path_of`."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), (0, 0), 3.0)
    patches = _objects(rng)
    # MJPG at high quality: every frame a key frame, so objects keep their
    # pixels while they move.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE[1], SIZE[0]))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    if not writer.isOpened():
        raise OSError(f"cannot write the sample video {path}")
    for t in range(frames):
        frame = background.copy()
        for name, patch in patches.items():
            x, y = path_of(name, t)
            frame[y:y + OBJECT, x:x + OBJECT] = patch
        writer.write(frame)
    writer.release()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(address: str, timeout: float) -> bool:
    """Whether a server at ``address`` reports SERVING within ``timeout`` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    finally:
        channel.close()


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every detection is within 2 px of the truth."""
    from .cli import METHOD_DEFAULT, CommandError, watch

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "sample.avi"
    write_sample_video(video, args.frames)
    print(f"sample video: {video} ({args.frames} frames, {SIZE[1]}x{SIZE[0]})")
    server = None
    address = args.address or os.environ.get("FEATUREMAP_ADDRESS", "localhost:50051")
    if args.address and not answers(address, 3.0):
        raise CommandError(f"featuremap demo: no featuremap server answers at {address} (leave --address out to "
                           "let the demo start its own)")
    if not answers(address, 1.0):
        address = f"127.0.0.1:{free_port()}"
        data = tempfile.mkdtemp(prefix="featuremap-demo-")
        server = subprocess.Popen([sys.executable, "-m", "featuremap.service", "serve", "--address", address,
                                   "--data-dir", data, "--log-level", "error"])
        print(f"started a server at {address} (data in {data})")
        if not answers(address, 180.0):
            server.kill()
            raise CommandError(f"the demo server at {address} did not become ready")
    try:
        first = cv2.VideoCapture(str(video)).read()[1]
        secure = {"token": args.token, "tls": args.tls, "ca_file": args.ca_file, "cert_file": args.cert_file,
                  "key_file": args.key_file} if server is None else {}
        with FeatureMapClient(address, timeout=args.timeout, **secure) as client:
            for name in ("demo-a", "demo-b", "demo-c"):
                x, y = path_of(name, 0)
                try:
                    client.delete_template(name)
                except FeatureMapError:
                    pass  # not there yet
                client.create_template(first[y:y + OBJECT, x:x + OBJECT], template_id=name, display_name=name)
            result = client.match(first, templates=["demo-a"], maps="float32")
        from .render import map_heatmap, write_image

        write_image(out / "heatmap.png", map_heatmap(first, result.maps["templates/demo-a"], result.peaks))
        watch_args = argparse.Namespace(
            source=str(video), address=address, timeout=args.timeout,
            **{"token": None, "tls": False, "ca_file": None, "cert_file": None, "key_file": None, **secure}, template=["demo-a", "demo-b", "demo-c"],
            method="ccoeff_normed", top_k=1, threshold=METHOD_DEFAULT, out=str(out / "overlay.mp4"), heatmap_out=None,
            jsonl=str(out / "detections.jsonl"), realtime=False, max_frames=None, window=4, source_timeout=5.0,
            max_reconnects=0,
        )
        summary = watch(watch_args, progress=sys.stderr.isatty())
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            shutil.rmtree(data, ignore_errors=True)
    worst = {name: 0.0 for name in ("demo-a", "demo-b", "demo-c")}
    misses = 0
    for entry in summary["results"]:
        found = {p["template"].split("/")[-1]: p for p in entry["peaks"]}
        for name in worst:
            x, y = path_of(name, entry["sequence"])
            peak = found.get(name)
            error = float("inf") if peak is None else float(np.hypot(peak["x"] - x, peak["y"] - y))
            worst[name] = max(worst[name], error)
            misses += error > TOLERANCE
    print(f"{summary['frames']} frames at {summary['fps']:.1f} fps; outputs in {out}/: overlay.mp4, heatmap.png, "
          "detections.jsonl")
    for name, error in worst.items():
        print(f"  {name}: largest distance from its true path {error:.1f} px")
    if summary["frames"] != args.frames or misses:
        print(f"FAILED: {misses} detections further than {TOLERANCE} px from the truth", file=sys.stderr)
        return 2
    print(f"every detection within {TOLERANCE:.0f} px of the truth on every frame")
    return 0


def main() -> None:
    """``python -m featuremap.client.demo``: the same as ``featuremap demo``."""
    from .cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
