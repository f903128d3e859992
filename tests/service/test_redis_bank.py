"""Several replicas sharing one template bank through a real Redis."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import grpc
import numpy as np
import pytest
import redis

from featuremap.client import FeatureMapClient
from featuremap.wire import image_message as raw_image
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from workers import Workers
from service_helpers import (
    MESSAGE_OPTIONS,
    Creators,
    all_templates,
    free_port,
    frame_message,
    scene,
    start_process,
    wait_serving,
)

if shutil.which("redis-server") is None:
    if os.environ.get("CI"):
        raise RuntimeError("redis-server is missing in CI: .ci/run installs it")
    pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it",
                allow_module_level=True)


class RedisServer:
    """A real redis-server on a free port, which a test may kill and start again."""

    def __init__(self, folder) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save",
                                         "", "--appendonly", "no", "--dir", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.process.terminate()
    server.process.wait(10)


@pytest.fixture
def redis_url(redis_server):
    return redis_server.url


@pytest.fixture
def cluster(tmp_path, redis_url):
    """Three replicas on one Redis bank: (stubs, processes, addresses)."""
    processes, stubs, channels, addresses = [], [], [], []
    for i in range(3):
        port = free_port()
        metrics = free_port()
        addresses.append((f"127.0.0.1:{port}", f"127.0.0.1:{metrics}"))
        processes.append(start_process(tmp_path / f"r{i}", port, "--bank", redis_url, "--metrics-address",
                                       f"127.0.0.1:{metrics}"))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=MESSAGE_OPTIONS)
        channels.append(channel)
        stubs.append(pb_grpc.FeatureMapServiceStub(channel))
    for channel in channels:
        wait_serving(channel)
    yield stubs, processes, addresses
    for channel in channels:
        channel.close()
    for process in processes:
        if process.poll() is None:
            process.terminate()
        process.wait(30)
        process.stdout.close()
        process.stderr.close()


@pytest.fixture
def replicas(cluster):
    return cluster[0]


def names(stub):
    return [t.name for t in stub.ListTemplates(pb.ListTemplatesRequest()).templates]


#: How long a replica may take to see another's write before a test fails. A bound on a wait,
#: not a latency claim: replicas converge in well under a second on an idle machine (the
#: figure is in the README), but a correctness test never asserts how fast a machine is.
CONVERGE = 60.0


def within(seconds, predicate):
    """Poll ``predicate`` until it holds or ``seconds`` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_a_template_created_on_one_replica_is_served_by_all(replicas):
    one, two, three = replicas
    frame = scene(1)
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[20:40, 30:60])),
                                                template_id="shared"))
    assert within(CONVERGE, lambda: all(names(s) == ["templates/shared"] for s in (two, three)))
    for stub in (two, three):
        result = stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["shared"]),
                                            frame=frame_message(frame))).result
        assert [(p.x, p.y) for p in result.peaks] == [(30, 20)]
    three.DeleteTemplate(pb.DeleteTemplateRequest(name="templates/shared"))
    assert within(CONVERGE, lambda: all(names(s) == [] for s in replicas))
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
    assert within(CONVERGE, lambda: all(names(s) == ["templates/a", "templates/b"] for s in replicas))


def test_an_unreachable_bank_fails_at_start(tmp_path):
    process = start_process(tmp_path, free_port(), "--bank", f"redis://127.0.0.1:{free_port()}/0")
    assert process.wait(60) == 2
    assert "cannot reach the bank" in process.stderr.read()
    process.stdout.close()
    process.stderr.close()


def frames_served(metrics_address: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10).read().decode()
    match = re.search(r'featuremap_frames_total\{rpc="StreamMatch"\} ([0-9.]+)', text)
    return float(match.group(1)) if match else 0.0


def test_the_client_spreads_streams_over_the_replicas(cluster):
    stubs, _, addresses = cluster
    frame = scene(2)
    stubs[0].CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[:16, :16])),
                                                     template_id="spread"))
    assert within(CONVERGE, lambda: all(names(s) == ["templates/spread"] for s in stubs))
    with FeatureMapClient(",".join(grpc_address for grpc_address, _ in addresses), timeout=30) as client:
        for _ in range(9):
            assert len(list(client.stream([frame] * 3, templates=["spread"]))) == 3
    served = [frames_served(metrics) for _, metrics in addresses]
    assert sum(served) == 27 and all(count > 0 for count in served), served


def test_watch_survives_the_death_of_a_replica(cluster, tmp_path):
    stubs, processes, addresses = cluster
    video = tmp_path / "v.avi"
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for _ in range(300):
        writer.write(background)
    writer.release()
    stubs[0].CreateTemplate(pb.CreateTemplateRequest(
        template=pb.Template(image=raw_image(cv2.VideoCapture(str(video)).read()[1][30:62, 40:72])),
        template_id="still"))
    assert within(CONVERGE, lambda: all(names(s) == ["templates/still"] for s in stubs))
    lines = tmp_path / "d.jsonl"
    watch = subprocess.Popen(
        [sys.executable, "-m", "featuremap.client.cli", "watch", str(video), "--template", "still", "--jsonl",
         str(lines), "--window", "2", "--address", ",".join(a for a, _ in addresses)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Kill -9 the replica that serves the stream, once it has answered some frames.
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        served = [frames_served(metrics) for _, metrics in addresses]
        busy = [i for i, count in enumerate(served) if count >= 20]
        victim = busy[0] if busy else None
        time.sleep(0.02)
    assert victim is not None
    processes[victim].kill()
    _, err = watch.communicate(timeout=120)
    assert watch.returncode == 0, err
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["sequence"] for e in entries] == list(range(300))
    assert all(e["peaks"] and (e["peaks"][0]["x"], e["peaks"][0]["y"]) == (40, 30) for e in entries)
    assert "resuming" in err


def test_templates_stay_intact_when_a_replica_dies_mid_write(cluster):
    stubs, processes, _ = cluster
    creators = Creators(stubs[0])
    creators.wait_for(40)
    processes[0].kill()
    creators.join()
    # The others catch up with the last writes (waited for, not slept on).
    assert within(CONVERGE, lambda: set(creators.acknowledged) <= set(all_templates(stubs[1])))
    listed = all_templates(stubs[1])
    assert set(creators.acknowledged) <= set(listed)
    for tid, template in listed.items():
        assert (template.height, template.width, template.channels) == (24, 24, 1)  # never half a template
        if tid in creators.acknowledged:
            assert template.image.raw.data == creators.acknowledged[tid].tobytes()


def test_a_replica_reads_its_own_writes_while_another_replica_writes(replicas):
    reads_own_writes(replicas, 150)


@pytest.mark.soak
def test_a_replica_reads_its_own_writes_soak(replicas):
    reads_own_writes(replicas, 2000)


def reads_own_writes(replicas, writes: int) -> None:
    one, two, _ = replicas
    image = raw_image(scene(6)[:12, :12])
    stop = threading.Event()
    written = []

    def other_writer():
        i = 0
        while not stop.is_set():  # an RpcError here fails the test (Workers re-raises it)
            two.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id=f"b{i}"),
                               timeout=10)
            written.append(i)
            i += 1

    writer = Workers()
    writer.start(other_writer)
    missing = []
    try:
        for i in range(writes):
            one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id=f"a{i}"),
                               timeout=10)
            for _ in range(3):  # each read right after the write, while the other replica writes
                try:
                    one.GetTemplate(pb.GetTemplateRequest(name=f"templates/a{i}"), timeout=10)
                except grpc.RpcError as error:
                    missing.append((i, error.code()))
            writer.raise_first()
    finally:
        stop.set()
        writer.join()
    assert written, "the other replica wrote nothing while this one was read"
    assert not missing, f"{len(missing)} of {3 * writes} reads missed the replica's own write: {missing[:5]}"
    # And every replica sees every write.
    want = set(all_templates(two)) | {f"a{i}" for i in range(writes)}
    assert within(CONVERGE, lambda: set(all_templates(one)) == want == set(all_templates(two)))


def test_redis_down_is_unavailable_for_writes_and_matching_goes_on(redis_server, replicas):
    one, two, _ = replicas
    frame = scene(7)
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[20:40, 30:60])),
                                                template_id="kept"))
    assert within(CONVERGE, lambda: names(two) == ["templates/kept"])
    redis_server.kill()
    for call, request in ((one.CreateTemplate, pb.CreateTemplateRequest(
            template=pb.Template(image=raw_image(frame[:8, :8])), template_id="lost")),
            (two.DeleteTemplate, pb.DeleteTemplateRequest(name="templates/kept"))):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        assert "retry later" in caught.value.details()
    # Reads and matching go on from the replicas' memory.
    result = two.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=frame_message(frame)), timeout=30).result
    assert [(p.x, p.y) for p in result.peaks] == [(30, 20)]
    redis_server.start()  # an empty Redis (no persistence here): the replicas recover and follow it
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(frame[:8, :8])),
                                                template_id="after"), timeout=30)
    assert within(CONVERGE, lambda: "templates/after" in names(two))


def test_a_bank_behind_tls_and_a_password(tmp_path):
    # rediss:// with credentials, the CA passed in the URL, as a managed Redis or the manifests' Secret give them.
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "redis.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "redis.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    port = free_port()
    redis_process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--tls-cert-file", str(tmp_path / "redis.pem"), "--tls-key-file", str(tmp_path / "redis.key"),
         "--tls-ca-cert-file", str(tmp_path / "redis.pem"), "--tls-auth-clients", "no",
         "--requirepass", "s3cret-pass", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:s3cret-pass@localhost:{port}/0?ssl_ca_certs={tmp_path / 'redis.pem'}"
    client = redis.Redis.from_url(url)
    try:
        assert within(10, lambda: _pings(client))
        server_port = free_port()
        process = start_process(tmp_path / "data", server_port, "--bank", url)
        channel = grpc.insecure_channel(f"127.0.0.1:{server_port}", options=MESSAGE_OPTIONS)
        wait_serving(channel)
        stub = pb_grpc.FeatureMapServiceStub(channel)
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(scene(8)[:8, :8])),
                                                     template_id="secure"))
        assert client.zrange("featuremap:order", 0, -1) == [b"secure"]
        channel.close()
        process.terminate()
        process.wait(30)
        process.stdout.close()
        process.stderr.close()
        # A wrong password stops the start with one line, which never shows the password.
        wrong = start_process(tmp_path / "data2", free_port(), "--bank", url.replace("s3cret-pass", "wrong-pass"))
        assert wrong.wait(60) == 2
        err = wrong.stderr.read()
        wrong.stdout.close()
        wrong.stderr.close()
        assert "cannot reach the bank" in err and "wrong-pass" not in err and "Traceback" not in err
    finally:
        client.close()
        redis_process.terminate()
        redis_process.wait(10)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_pose_template_s_ranges_reach_every_replica(replicas):
    one, two, _ = replicas
    image = scene(2)[10:42, 20:52]
    one.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(
        image=raw_image(image), angle_range=pb.Range(low=-90, high=90), scale_range=pb.Range(low=0.8, high=1.2)),
        template_id="posed"))
    assert within(CONVERGE, lambda: "templates/posed" in names(two))
    got = two.GetTemplate(pb.GetTemplateRequest(name="templates/posed")).template
    assert (got.angle_range.low, got.angle_range.high) == (-90, 90)
    assert (round(got.scale_range.low, 5), round(got.scale_range.high, 5)) == (0.8, 1.2)
    (peak,) = two.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["posed"]),
                                        frame=frame_message(scene(2)))).result.peaks
    # Cut at (20, 10), 32x32: its centre is (35.5, 25.5), unturned, unscaled.
    assert abs(peak.cx - 35.5) < 0.1 and abs(peak.cy - 25.5) < 0.1
    assert abs(peak.angle) < 0.1 and abs(peak.scale - 1.0) < 0.01
