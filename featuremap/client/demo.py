"""``featuremap demo`` (``make demo``): the product on a real scene, on embedded defaults.

The scene is a photograph (NASA's portrait of astronaut Eileen Collins, public
domain, as shipped by scikit-image; ``client/data/astronaut.jpg``). A camera
pans over its upper part; two objects cut from its lower part (the mission
patch and the name tag) move across the view while they grow or shrink and
turn; a third (a piece of the helmet) never appears. The demo starts a
server (unless one answers), registers the three as templates, the moving
ones with scales and angles, streams the video through ``featuremap watch``,
writes ``overlay.mp4``, ``heatmap.png``, ``contact_sheet.png`` and
``detections.jsonl``, and sums up per template: how often it was found
where it truly was, and that the absent one was never drawn.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .client import FeatureMapClient, FeatureMapError
from .runs import METHOD_DEFAULT, CommandError, watch

PHOTO = Path(__file__).with_name("data") / "astronaut.jpg"
VIEW = (240, 320)  # the camera's frame, height x width
FPS = 30.0
TOLERANCE = 4.0  # pixels between a detection's centre and the truth's
SCALES = [0.8, 0.9, 1.0, 1.1, 1.2]
ANGLES = [-20.0, -10.0, 0.0, 10.0, 20.0]


@dataclass(frozen=True)
class Thing:
    """An object of the demo: where it is cut from the photo, and how it moves (None: it never appears)."""

    name: str
    box: tuple[int, int, int, int]  # x, y, width, height in the photo (its lower part, never in view)
    size: tuple[int, int]  # (width, height) of the template
    moves: bool


THINGS = (
    Thing("demo-patch", (130, 345, 80, 80), (56, 56), True),
    Thing("demo-nametag", (275, 335, 64, 40), (60, 38), True),
    Thing("demo-helmet", (330, 395, 60, 60), (48, 48), False),
)


def template_of(photo: np.ndarray, thing: Thing) -> np.ndarray:
    x, y, w, h = thing.box
    return cv2.resize(photo[y:y + h, x:x + w], thing.size, interpolation=cv2.INTER_AREA)


def camera(t: int, frames: int) -> tuple[int, int]:
    """Top-left (x, y) of the view in the photo at frame ``t``: a pan over the photo's upper part."""
    u = t / max(1, frames - 1)
    return round(20 + 150 * u), round(10 + 60 * math.sin(math.pi * u))


def pose(thing: Thing, t: int, frames: int) -> tuple[float, float, float, float]:
    """(centre x, centre y, scale, angle) of a moving thing in the view at frame ``t``."""
    u = t / max(1, frames - 1)
    # Their paths never cross: the demo shows finding, not occlusion.
    if thing.name == "demo-patch":
        return 50 + 200 * u, 60 + 30 * u, 0.8 + 0.4 * u, -20 + 40 * u
    return 270 - 190 * u, 200 - 15 * u, 1.2 - 0.35 * u, 15 - 30 * u


def _paste(view: np.ndarray, image: np.ndarray, cx: float, cy: float, scale: float, angle: float) -> None:
    """``image`` scaled, turned (degrees, counter-clockwise as OpenCV's) and centred at (cx, cy) on ``view``."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale)
    matrix[:, 2] += (cx - (width - 1) / 2, cy - (height - 1) / 2)
    size = (view.shape[1], view.shape[0])
    warped = cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.full((height, width), 255, np.uint8), matrix, size, flags=cv2.INTER_NEAREST)
    view[covered > 0] = warped[covered > 0]


def write_sample_video(path: Path, frames: int) -> None:
    """The camera's video: the photo panned, the moving things on it (MJPG, every frame a key frame)."""
    photo = cv2.imread(str(PHOTO))
    if photo is None:
        raise OSError(f"cannot read the demo's photograph {PHOTO}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (VIEW[1], VIEW[0]))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    if not writer.isOpened():
        raise OSError(f"cannot write the sample video {path}")
    for t in range(frames):
        x, y = camera(t, frames)
        view = photo[y:y + VIEW[0], x:x + VIEW[1]].copy()
        for thing in THINGS:
            if thing.moves:
                _paste(view, template_of(photo, thing), *pose(thing, t, frames))
        writer.write(view)
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
    """Run the demo; 0 when every moving thing was found where it was (95% of frames) and the absent one never."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "sample.avi"
    write_sample_video(video, args.frames)
    print(f"sample video: {video} ({args.frames} frames, {VIEW[1]}x{VIEW[0]}, a camera panning over {PHOTO.name})")
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
        print(f"started a server at {address} (data in {data}); waiting while it compiles its kernels "
              "(the first run on this machine: about a minute; later runs load them from the cache)", flush=True)
        if not answers(address, 180.0):
            server.kill()
            raise CommandError(f"the demo server at {address} did not become ready")
    try:
        photo = cv2.imread(str(PHOTO))
        first = cv2.VideoCapture(str(video)).read()[1]
        secure = {"token": args.token, "tls": args.tls, "ca_file": args.ca_file, "cert_file": args.cert_file,
                  "key_file": args.key_file} if server is None else {}
        with FeatureMapClient(address, timeout=args.timeout, **secure) as client:
            for thing in THINGS:
                try:
                    client.delete_template(thing.name)
                except FeatureMapError:
                    pass  # not there yet
                steps = dict(scales=SCALES, angles=ANGLES) if thing.moves else {}
                client.create_template(template_of(photo, thing), template_id=thing.name, display_name=thing.name,
                                       **steps)
            result = client.match(first, templates="demo-patch", maps="float32")
        from .render import map_heatmap, write_image

        write_image(out / "heatmap.png", map_heatmap(first, result.maps["templates/demo-patch"], result.peaks))
        watch_args = argparse.Namespace(
            source=str(video), address=address, timeout=args.timeout,
            **{"token": None, "tls": False, "ca_file": None, "cert_file": None, "key_file": None, **secure},
            template=[thing.name for thing in THINGS], method="ccoeff_normed", top_k=1, threshold=METHOD_DEFAULT,
            out=str(out / "overlay.mp4"), heatmap_out=None, jsonl=str(out / "detections.jsonl"), realtime=False,
            max_frames=None, window=4, source_timeout=5.0, max_reconnects=0,
        )
        summary = watch(watch_args, progress=sys.stderr.isatty())
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            shutil.rmtree(data, ignore_errors=True)
    contact_sheet(out / "overlay.mp4", out / "contact_sheet.png", summary["frames"])
    return report(summary, args.frames, out)


def hits(summary: dict, frames: int) -> dict[str, int]:
    """Per thing: frames where it was found within TOLERANCE of the truth (for the absent one: frames drawn)."""
    counts = {thing.name: 0 for thing in THINGS}
    for entry in summary["results"]:
        found = {p["template"].split("/")[-1]: p for p in entry["peaks"]}
        for thing in THINGS:
            peak = found.get(thing.name)
            if not thing.moves:
                counts[thing.name] += peak is not None
                continue
            if peak is None:
                continue
            cx, cy, _, _ = pose(thing, entry["sequence"], frames)
            centre = (peak["x"] + peak["width"] / 2, peak["y"] + peak["height"] / 2)
            counts[thing.name] += math.hypot(centre[0] - cx, centre[1] - cy) <= TOLERANCE
    return counts


def report(summary: dict, frames: int, out: Path) -> int:
    """Print the closing summary; 0 when the demo did what it shows."""
    counts = hits(summary, frames)
    print(f"{summary['frames']} frames at {summary['fps']:.1f} fps; outputs in {out}/: overlay.mp4, heatmap.png, "
          "contact_sheet.png, detections.jsonl")
    ok = summary["frames"] == frames
    for thing in THINGS:
        if thing.moves:
            rate = counts[thing.name] / max(1, frames)
            print(f"  {thing.name}: found within {TOLERANCE:.0f} px of where it was on {counts[thing.name]}/{frames} "
                  f"frames ({rate:.0%}), while it moved, grew or shrank and turned")
            ok = ok and rate >= 0.95
        else:
            print(f"  {thing.name}: absent from the scene, drawn on {counts[thing.name]} frames")
            ok = ok and counts[thing.name] == 0
    if not ok:
        print("FAILED: the demo did not find what it should have", file=sys.stderr)
        return 2
    print("every moving object found where it was, and the absent one never drawn")
    return 0


def contact_sheet(video: Path, path: Path, frames: int, count: int = 6) -> None:
    """A few annotated frames of the overlay video, in a grid of three columns."""
    from .render import write_image

    capture = cv2.VideoCapture(str(video))
    wanted = {round(i * (frames - 1) / (count - 1)) for i in range(count)}
    tiles, index = [], 0
    while len(tiles) < len(wanted):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            cv2.putText(frame, f"frame {index}", (6, frame.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(frame)
        index += 1
    capture.release()
    if not tiles:
        return
    while len(tiles) % 3:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + 3]) for i in range(0, len(tiles), 3)]
    write_image(path, np.vstack(rows))

