"""Several replicas sharing one template bank through a real Redis."""

import os
import shutil
import subprocess
import time

import grpc
import numpy as np
import pytest
import redis

from featuremap.service.codec import raw_image
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from service_helpers import MESSAGE_OPTIONS, free_port, frame_message, scene, start_process, wait_serving

if shutil.which("redis-server") is None:
    if os.environ.get("CI"):
        raise RuntimeError("redis-server is missing in CI: .ci/run installs it")
    pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it",
                allow_module_level=True)


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    client = redis.Redis(port=port)
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


@pytest.fixture
def replicas(tmp_path, redis_url):
    processes, stubs, channels = [], [], []
    for i in range(3):
        port = free_port()
        processes.append(start_process(tmp_path / f"r{i}", port, "--bank", redis_url))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=MESSAGE_OPTIONS)
        channels.append(channel)
        stubs.append(pb_grpc.FeatureMapServiceStub(channel))
    for channel in channels:
        wait_serving(channel)
    yield stubs
    for channel in channels:
        channel.close()
    for process in processes:
        process.terminate()
        process.wait(30)
        process.stdout.close()
        process.stderr.close()


def names(stub):
    return [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates]


def within(seconds, predicate):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_template_created_on_one_replica_is_served_by_all_within_a_second(replicas):
    one, two, three = replicas
    frame = scene(1)
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[20:40, 30:60])),
                                                template_id="shared"))
    created = time.monotonic()
    assert within(1.0, lambda: all(names(s) == ["templates/shared"] for s in (two, three)))
    assert time.monotonic() - created <= 1.0
    for stub in (two, three):
        result = stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["shared"]),
                                            frame=frame_message(frame))).result
        assert [(p.x, p.y) for p in result.peaks] == [(30, 20)]
    three.DeleteTemplate(pb.DeleteTemplateRequest(name="templates/shared"))
    assert within(1.0, lambda: all(names(s) == [] for s in replicas))
    with pytest.raises(grpc.RpcError) as caught:
        one.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["shared"]), frame=frame_message(frame)))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_ids_are_unique_across_replicas_and_order_is_shared(replicas):
    one, two, _ = replicas
    image = raw_image(np.zeros((8, 8), np.uint8) + np.arange(8, dtype=np.uint8))
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id="a"))
    with pytest.raises(grpc.RpcError) as caught:
        two.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id="a"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    two.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id="b"))
    assert within(1.0, lambda: all(names(s) == ["templates/a", "templates/b"] for s in replicas))


def test_an_unreachable_bank_fails_at_start(tmp_path):
    process = start_process(tmp_path, free_port(), "--bank", f"redis://127.0.0.1:{free_port()}/0")
    assert process.wait(60) == 2
    assert "cannot reach the bank" in process.stderr.read()
    process.stdout.close()
    process.stderr.close()
