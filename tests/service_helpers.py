"""Helpers for the service tests: a real server on a real port, real gRPC."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featuremap.wire import image_message as raw_image
from featuremap.service.edge.config import Settings
from featuremap.service.edge.server import create_server
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from workers import Workers

SERVING = health_pb2.HealthCheckResponse.SERVING
MESSAGE_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(channel: grpc.Channel, timeout: float = 120.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise TimeoutError("server did not reach SERVING")


def featuremap_command(*args: str, address: str | None = None, timeout: float = 120,
                       env: dict | None = None) -> subprocess.CompletedProcess:
    """The ``featuremap`` command run as a user runs it (its own process), its output captured."""
    command = [sys.executable, "-m", "featuremap.client.cli", *args]
    if address:
        command += ["--address", address]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def wait_serving_at(address: str, timeout: float = 120.0) -> None:
    """:func:`wait_serving` on a channel of its own to ``address``."""
    channel = grpc.insecure_channel(address)
    try:
        wait_serving(channel, timeout)
    finally:
        channel.close()


@contextmanager
def running_server(data_dir: Path, **settings):
    """An in-process server on a free loopback port; yields (stub, channel, server)."""
    server, port = create_server("127.0.0.1:0", Settings(data_dir=str(data_dir), **settings))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=MESSAGE_OPTIONS)
    try:
        wait_serving(channel)
        yield pb_grpc.FeatureMapServiceStub(channel), channel, server
    finally:
        channel.close()
        server.drain(0)


def start_process(data_dir: Path, port: int, *extra: str, env: dict | None = None,
                  log: Path | None = None) -> subprocess.Popen:
    """``featuremap-server serve`` as its own process, exactly as a deployment runs it: its output
    in pipes for the caller to read, or in the file ``log`` (a server that outlives the test's
    reading of it: unread pipes would fill and stall it)."""
    command = [sys.executable, "-m", "featuremap.service", "serve", "--address", f"127.0.0.1:{port}",
               "--data-dir", str(data_dir), *extra]
    if log is None:
        return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    with open(log, "w") as output:  # the child holds its own copy of the descriptor
        return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=output,
                                stderr=subprocess.STDOUT, text=True)


@contextmanager
def serving_process(data_dir: Path, *extra: str):
    """:func:`start_process` on a free port, its output in ``data_dir``'s ``server.log``, waited on
    until SERVING and ended after: (port, process)."""
    port = free_port()
    process = start_process(data_dir, port, *extra, log=Path(data_dir) / "server.log")
    try:
        wait_serving_at(f"127.0.0.1:{port}")
        yield port, process
    finally:
        process.terminate()
        process.wait(60)


def scene(seed: int = 0, height: int = 120, width: int = 160, channels: int = 1) -> np.ndarray:
    """A textured uint8 frame."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 1.2)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if channels == 1 else image


def create(stub, image: np.ndarray, template_id: str = "", **fields) -> pb.Template:
    request = pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image), **fields), template_id=template_id)
    return stub.CreateTemplate(request, timeout=30).template


def frame_message(image: np.ndarray, sequence: int = 0) -> pb.Frame:
    return pb.Frame(sequence=sequence, image=raw_image(image))


class Creators:
    """Threads creating 24x24 templates through ``stub`` until the server goes away.

    ``acknowledged`` maps the id of every template whose CreateTemplate
    answered to its pixels.
    """

    def __init__(self, stub, workers: int = 4) -> None:
        self.acknowledged: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._stub = stub
        self._workers = Workers()  # a writer's failure (other than the server going away) fails the test
        for w in range(workers):
            self._workers.start(self._write, w)

    def _write(self, worker: int) -> None:
        rng = np.random.default_rng(worker)
        for i in range(10**6):
            image = rng.integers(0, 256, (24, 24), dtype=np.uint8)
            try:
                self._stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(image)),
                                                                   template_id=f"w{worker}-{i}"), timeout=10)
            except grpc.RpcError:
                return  # the server is gone
            with self._lock:
                self.acknowledged[f"w{worker}-{i}"] = image

    def wait_for(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            self._workers.raise_first()
            assert time.monotonic() < deadline, f"{len(self.acknowledged)} of {count} creates in {timeout} s"
            time.sleep(0.01)

    def join(self) -> None:
        self._workers.join()


def all_templates(stub) -> dict[str, pb.Template]:
    """Every template of the bank, pixels included, by id."""
    found, token = {}, ""
    while True:
        page = stub.ListTemplates(pb.ListTemplatesRequest(page_size=1000, page_token=token,
                                                          view=pb.TEMPLATE_VIEW_FULL))
        found.update({t.name.split("/")[1]: t for t in page.templates})
        token = page.next_page_token
        if not token:
            return found
