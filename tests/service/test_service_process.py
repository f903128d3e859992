"""The server as a process: settings, health, reflection, metrics, kill -9 and SIGTERM."""

import json
import os
import signal
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from featuremap.service.pipeline.codec import decode_image
from featuremap.wire import image_message as raw_image
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from service_helpers import (
    MESSAGE_OPTIONS,
    Creators,
    all_templates,
    frame_message,
    free_port,
    running_server,
    scene,
    start_process,
    wait_serving,
)


def connect(port):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=MESSAGE_OPTIONS)
    return channel, pb_grpc.FeatureMapServiceStub(channel)


def stop(process, sig=signal.SIGTERM, timeout=30):
    """Stop the process; what it wrote to stderr is kept in ``process.stderr_text``."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout)
    finally:
        process.stdout.close()
        process.stderr_text = process.stderr.read() if not process.stderr.closed else ""
        process.stderr.close()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--max-streams", "0", "max_streams must be > 0"),
        ("--max-frame-pixels", "lots", "max_frame_pixels must be an integer"),
        ("--log-format", "xml", "log_format must be text or json"),
        ("--metrics-address", "nowhere", "metrics_address must be host:port"),
    ],
)
def test_a_bad_setting_fails_at_start_with_a_clear_message(tmp_path, flag, value, message):
    process = start_process(tmp_path, free_port(), flag, value)
    assert process.wait(60) == 1  # a usage error
    assert message in process.stderr.read()
    stop(process)


def one_line_error(process) -> str:
    """The process's stderr, checked to be one line without a traceback."""
    err = process.stderr.read()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "no tokens file" not in line]
    assert len(lines) == 1, err
    return lines[0]


def test_a_second_server_on_a_busy_address_exits_2(tmp_path):
    port = free_port()
    first = start_process(tmp_path / "one", port)
    channel, _ = connect(port)
    try:
        wait_serving(channel)
        second = start_process(tmp_path / "two", port)
        assert second.wait(60) == 2
        assert "address in use" in one_line_error(second)
        stop(second)
        wait_serving(channel, timeout=5)  # the first one is untouched
    finally:
        channel.close()
        assert stop(first) == 0


def _corrupt(folder):
    folder.mkdir()
    (folder / "bank.db").write_bytes(b"this is not a SQLite file" * 100)


def _truncated(folder):
    folder.mkdir()
    with running_server(folder) as (stub, _, _):
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(scene(1)[:8, :8]))))
    data = (folder / "bank.db").read_bytes()
    (folder / "bank.db").write_bytes(data[:50])


def _directory(folder):
    (folder / "bank.db").mkdir(parents=True)


def _read_only(folder):
    folder.mkdir()
    folder.chmod(0o500)


def _under_a_file(folder):
    folder.parent.joinpath("file").write_text("a file, not a folder")
    return folder.parent / "file" / "data"


@pytest.mark.parametrize("spoil", [_corrupt, _truncated, _directory, _read_only, _under_a_file])
def test_a_bank_that_cannot_be_opened_stops_the_start_with_one_line(tmp_path, spoil):
    folder = tmp_path / "data"
    folder = spoil(folder) or folder
    if spoil is _read_only and os.access(folder, os.W_OK):
        folder.chmod(0o700)
        pytest.skip("root writes to read-only folders")
    process = start_process(folder, free_port())
    try:
        assert process.wait(120) == 2
        line = one_line_error(process)
        assert "cannot open the bank" in line and "bank.db" in line
    finally:
        stop(process)
        if folder.is_dir():
            folder.chmod(0o700)


def test_pools_and_numba_are_sized_by_the_cpus_setting(tmp_path):
    port = free_port()
    process = start_process(tmp_path, port, "--cpus", "1", "--log-format", "json", "--memory-budget", str(1 << 30))
    channel, _ = connect(port)
    try:
        wait_serving(channel)
    finally:
        channel.close()
        stop(process)
    events = [json.loads(line) for line in process.stderr_text.splitlines() if line.startswith("{")]
    (serving,) = [e for e in events if e["message"] == "serving"]
    # 1 GiB: a quarter kept for prepared matchers, an eighth for waiting frames, the rest for work.
    assert (serving["cpus"], serving["numba_threads"], serving["memory_budget_mib"]) == (1, 1, 640)
    assert serving["queued_frames_mib"] == 128


def test_settings_come_from_the_environment_and_flags_win(tmp_path):
    process = start_process(tmp_path, free_port(), env={"FEATUREMAP_MAX_IN_FLIGHT": "-3"})
    assert process.wait(60) == 1 and "max_in_flight must be > 0" in process.stderr.read()
    stop(process)
    port = free_port()
    process = start_process(tmp_path, port, "--max-in-flight", "3", "--log-format", "json",
                            env={"FEATUREMAP_MAX_IN_FLIGHT": "-3"})
    try:
        channel, _ = connect(port)
        wait_serving(channel)
        channel.close()
    finally:
        assert stop(process) == 0


def test_health_is_not_serving_until_the_warmup_is_done(tmp_path):
    # A fresh kernel cache: the warm-up compiles everything, which takes seconds.
    port = free_port()
    process = start_process(tmp_path / "data", port, env={"NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    channel, _ = connect(port)
    health = health_pb2_grpc.HealthStub(channel)
    statuses = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service="featuremap.v1.FeatureMapService"),
                                      timeout=2).status
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            if not statuses or statuses[-1] != status:
                statuses.append(status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.05)
        assert statuses == [health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING]
    finally:
        channel.close()
        assert stop(process) == 0


def test_reflection_lists_the_service_and_metrics_are_served(tmp_path):
    metrics_port = free_port()
    with running_server(tmp_path, metrics_address=f"127.0.0.1:{metrics_port}") as (stub, channel, _):
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for a in answers for s in a.list_services_response.service}
        assert {"featuremap.v1.FeatureMapService", "grpc.health.v1.Health"} <= services
        frame = scene()
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[:8, :8]))))
        stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=frame_message(frame)))
        with pytest.raises(grpc.RpcError):
            stub.GetTemplate(pb.GetTemplateRequest(name="templates/missing"))
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'featuremap_frames_total{rpc="Match"} 1.0' in text
        assert "featuremap_bank_templates 1.0" in text
        assert 'featuremap_errors_total{code="NOT_FOUND",rpc="GetTemplate"} 1.0' in text
        assert 'featuremap_frame_latency_seconds_count{rpc="Match"} 1.0' in text


def test_reflection_answers_v1_clients_too(tmp_path):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    with running_server(tmp_path) as (_, channel, _):
        pool = descriptor_pool.Default()
        request_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionRequest"))
        response_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("grpc.reflection.v1.ServerReflectionResponse"))
        call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                     request_serializer=request_type.SerializeToString,
                                     response_deserializer=response_type.FromString)
        answers = list(call(iter([request_type(list_services=""),
                                  request_type(file_containing_symbol="featuremap.v1.FeatureMapService"),
                                  request_type(file_containing_symbol="grpc.reflection.v1.ServerReflection")]),
                            timeout=10))
        services = {s.name for s in answers[0].list_services_response.service}
        assert {"featuremap.v1.FeatureMapService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= services
        for answer, name in zip(answers[1:], ("featuremap/v1/featuremap.proto", "grpc/reflection/v1/reflection.proto"),
                                strict=True):
            files = [descriptor_pb2.FileDescriptorProto.FromString(data)
                     for data in answer.file_descriptor_response.file_descriptor_proto]
            assert name in {f.name for f in files}


def test_every_acknowledged_template_survives_kill_9(tmp_path):
    data, port = tmp_path / "data", free_port()
    process = start_process(data, port)
    channel, stub = connect(port)
    wait_serving(channel)
    creators = Creators(stub)
    creators.wait_for(40)
    stop(process, signal.SIGKILL)
    creators.join()
    channel.close()
    process = start_process(data, port)
    channel, stub = connect(port)
    try:
        wait_serving(channel)
        stored = {tid: decode_image(t.image, "t", 10**6)[:, :, 0] for tid, t in all_templates(stub).items()}
        missing = set(creators.acknowledged) - set(stored)
        assert not missing, f"{len(missing)} acknowledged templates lost"
        for tid, image in creators.acknowledged.items():
            assert np.array_equal(stored[tid], image), tid
        # Unacknowledged writes may or may not be there, but never half-written.
        assert all(image.shape == (24, 24) for image in stored.values())
    finally:
        channel.close()
        assert stop(process) == 0


def test_sigterm_lets_streams_in_flight_finish_and_exits_0(tmp_path, workers):
    data, port = tmp_path / "data", free_port()
    process = start_process(data, port, "--grace-seconds", "20")
    channel, stub = connect(port)
    wait_serving(channel)
    frame = scene(1, 240, 320)
    stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[:32, :32]))))
    started = threading.Event()

    def requests():
        yield pb.StreamMatchRequest(config=pb.MatchConfig())
        for i in range(20):
            if i == 2:
                started.set()
            time.sleep(0.05)
            yield pb.StreamMatchRequest(frame=frame_message(frame, i))

    results = []
    workers.start(lambda: results.extend(r.result.sequence for r in stub.StreamMatch(requests(), timeout=60)))
    assert started.wait(30)
    process.send_signal(signal.SIGTERM)
    workers.join()  # the stream's RpcError, if any, fails the test here
    assert results == list(range(20))
    assert process.wait(60) == 0
    assert "draining" in process.stderr.read()
    stop(process)
    channel.close()
