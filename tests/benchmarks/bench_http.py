"""The HTTP gateway's overhead: Match over HTTP/JSON beside gRPC Match on the same image (``make bench``).

One ``featuremap-server serve`` process on loopback with ``--http-address``;
one template (48x48, cut from the frame), ccoeff_normed, top-1 peak; the
frame a JPEG of the demo's photograph (scikit-image's astronaut) at VGA and
1080p. Each call waits for its answer before the next (latency, not
throughput). Contenders, in turn within each round so that drift in the
machine's load hits all alike:

- gRPC Match, the JPEG in ``Image.encoded``;
- HTTP, the raw JPEG as the body (``image/jpeg``), options in the query;
- HTTP, a JSON MatchRequest with the JPEG in base64;
- HTTP, a multipart form (the JPEG as the ``image`` part, options as fields).

The HTTP client is ``http.client`` on one keep-alive connection with
TCP_NODELAY set (it sends headers and body in two writes: without it, Nagle's
algorithm holds the body for the server's delayed ACK, ~40 ms). The server
side needs nothing: aiohttp sets TCP_NODELAY and writes headers with the body.

Then, where chromium and playwright are installed, the live view's own
figures: the page streaming Chromium's fake camera (a VGA y4m clip at 10 fps)
over the WebSocket, its end-to-end latency (capture to result drawn) and
results per second, from the page's result model.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import cv2
import grpc
import numpy as np

from featuremap.client.demo import answers, free_port
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

ROUNDS = {"VGA": 60, "1080p": 30}
SIZES = {"VGA": (640, 480), "1080p": (1920, 1080)}
OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
BOUNDARY = "featuremap-bench-boundary"


def photograph(size: tuple[int, int]) -> bytes:
    data = (resources.files("featuremap.client.data") / "astronaut.jpg").read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(image, size, interpolation=cv2.INTER_CUBIC),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpeg.tobytes()


class Client:
    """A keep-alive HTTP/1.1 connection with TCP_NODELAY."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: bytes, kind: str) -> dict:
        self.connection.request("POST", path, body=body, headers={"Content-Type": kind})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)


def contenders(stub, client: Client, jpeg: bytes, template: str):
    """name -> a call that matches ``jpeg`` against ``template`` once and returns the best peak's (x, y)."""
    config = pb.MatchConfig(templates=[template])
    grpc_request = pb.MatchRequest(config=config, frame=pb.Frame(image=pb.Image(encoded=jpeg)))
    json_body = json.dumps({"config": {"templates": [template]},
                            "frame": {"image": {"encoded": base64.b64encode(jpeg).decode()}}}).encode()
    form = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"templates\"\r\n\r\n{template}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"frame.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()

    def best(answer: dict) -> tuple[float, float]:
        peak = answer["result"]["peaks"][0]
        return peak["x"], peak["y"]

    return {
        "gRPC Match": lambda: (lambda p: (p.x, p.y))(stub.Match(grpc_request, timeout=60).result.peaks[0]),
        "HTTP raw image/jpeg": lambda: best(client.post(f"/v1/frames:match?config.templates={template}", jpeg,
                                                        "image/jpeg")),
        "HTTP JSON + base64": lambda: best(client.post("/v1/frames:match", json_body, "application/json")),
        "HTTP multipart": lambda: best(client.post("/v1/frames:match", form,
                                                   f"multipart/form-data; boundary={BOUNDARY}")),
    }


def live_view(port: int) -> str:
    """The live view's latency and results per second from the fake camera (or why it was not run)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from browser import browser, chromium_path, write_clip
        import playwright  # noqa: F401
    except ImportError:
        return "live view: not measured (playwright is not installed: the test extra)"
    executable = chromium_path()
    if executable is None:
        return "live view: not measured (no chromium: apt-get install chromium)"
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder), frames=60)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        ok, png = cv2.imencode(".png", clip.template)
        pb_grpc.FeatureMapServiceStub(channel).CreateTemplate(pb.CreateTemplateRequest(
            template=pb.Template(image=pb.Image(encoded=png.tobytes())), template_id="object"))
        channel.close()
        with browser(executable, clip.file) as launched:
            page = launched.new_context(permissions=["camera"]).new_page()
            page.goto(f"http://127.0.0.1:{port + 1}/")
            page.wait_for_selector('#templates li[data-name="templates/object"]', timeout=60_000)
            page.click("#camera")
            page.wait_for_function("() => window.featuremapLive.drawn.length >= 20", timeout=120_000)
            first = page.evaluate("() => [window.featuremapLive.drawn.length, Date.now()]")
            page.wait_for_function("() => window.featuremapLive.drawn.length >= 120", timeout=120_000)
            last = page.evaluate("() => [window.featuremapLive.drawn.length, Date.now()]")
            drawn = page.evaluate("() => window.featuremapLive.drawn.slice(20).map((d) => d.latency)")
            stats = page.evaluate("() => ({...window.featuremapLive.stats, latencies: [], arrivals: []})")
    fps = (last[0] - first[0]) * 1000 / (last[1] - first[1])
    latencies = sorted(drawn)
    return (f"live view (chromium's fake camera, VGA at 10 fps, JPEG over the WebSocket, one 64x64 template): "
            f"{fps:.1f} results/s, latency capture to result p50 {statistics.median(latencies):.0f} ms, "
            f"p90 {latencies[int(0.9 * (len(latencies) - 1))]:.0f} ms; {stats['answered']} answered, "
            f"{stats['dropped']} dropped by the page, {stats['skipped']} skipped by the server")


def main() -> None:
    port = free_port()
    http_port = port + 1
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [sys.executable, "-m", "featuremap.service", "serve", "--address", f"127.0.0.1:{port}",
             "--http-address", f"127.0.0.1:{http_port}", "--data-dir", data, "--log-level", "warning"],
            env=os.environ.copy())
        try:
            if not answers(f"127.0.0.1:{port}", 180.0):
                raise RuntimeError("the benchmark server did not become ready")
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
            stub = pb_grpc.FeatureMapServiceStub(channel)
            client = Client(http_port)
            rows = []
            for label, size in SIZES.items():
                jpeg = photograph(size)
                frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                x, y = size[0] // 2, size[1] // 3
                ok, png = cv2.imencode(".png", frame[y:y + 48, x:x + 48])
                template = f"target-{label.lower()}"
                stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=pb.Image(
                    encoded=png.tobytes())), template_id=template))
                calls = contenders(stub, client, jpeg, template)
                times: dict[str, list[float]] = {name: [] for name in calls}
                for name, call in calls.items():  # warm: plans prepared, connections open
                    assert call() == (x, y), (name, call())
                for _ in range(ROUNDS[label]):
                    for name, call in calls.items():
                        started = time.perf_counter()
                        call()
                        times[name].append((time.perf_counter() - started) * 1e3)
                base = statistics.median(times["gRPC Match"])
                for name in calls:
                    median = statistics.median(times[name])
                    rows.append((label, len(jpeg), name, median, median / base))
            client.connection.close()
            channel.close()
            live = live_view(port)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    print("Match over HTTP/JSON vs gRPC, one call at a time on loopback: one 48x48 template, ccoeff_normed, "
          f"top-1; the astronaut photograph as JPEG (quality 90); median of {ROUNDS['VGA']} (VGA) and "
          f"{ROUNDS['1080p']} (1080p) calls each, contenders in turn\n")
    header = f"{'frame':<7}{'JPEG':>9}  {'':<22}{'median ms':>10}{'vs gRPC':>9}"
    print(header)
    print("-" * len(header))
    for label, size, name, median, ratio in rows:
        print(f"{label:<7}{size / 1024:8.0f}K  {name:<22}{median:10.2f}{ratio:8.2f}x")
    print("\ntarget: a raw VGA JPEG body within 1.3x of gRPC's time.")
    print(live)


if __name__ == "__main__":
    main()
