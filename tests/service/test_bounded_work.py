"""Bounded work per request: memory budget, chunked peaks, decode bombs, deadlines, probes under load."""

import re
import statistics
import threading
import time

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featuremap.service.pipeline import frames as frames_module
from featuremap.service.pipeline.codec import jpeg_scans
from featuremap.service.engine import Cancelled
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc
from featuremap.wire import image_message

from service_helpers import MESSAGE_OPTIONS, free_port, running_server, scene, start_process, wait_serving


def checkerboard(side: int) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side]
    return ((x // 64 + y // 64) % 2 * 200 + 20).astype(np.uint8)


def memory_of(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key))


def create_tiny(stub, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        image = image_message(rng.integers(0, 256, (8, 8), dtype=np.uint8))
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image), template_id=f"t{i}"))


def test_a_small_png_of_4096x4096_against_80_templates_completes_in_bounded_memory(tmp_path):
    # Before: memory grew as templates x frame pixels, and one such request OOM-killed the server at 4 GiB.
    port = free_port()
    process = start_process(tmp_path, port)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=MESSAGE_OPTIONS)
    try:
        wait_serving(channel)
        stub = pb_grpc.FeatureMapServiceStub(channel)
        create_tiny(stub, 80)
        ok, png = cv2.imencode(".png", checkerboard(4096))
        assert len(png) < 400_000
        idle = memory_of(process.pid, "VmRSS")
        result = stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=pb.Image(
            encoded=png.tobytes()))), timeout=600).result
        assert sorted(p.template for p in result.peaks) == sorted(f"templates/t{i}" for i in range(80))
        assert memory_of(process.pid, "VmHWM") - idle < 1 << 30
    finally:
        channel.close()
        process.terminate()
        process.wait(60)
        process.stdout.close()
        process.stderr.close()


def test_only_what_cannot_fit_the_budget_is_refused(tmp_path):
    with running_server(tmp_path, memory_budget=512 << 20) as (stub, _, server):
        create_tiny(stub, 4)
        # VGA and 1024x1024 fit; 4096x4096 needs more than the whole budget even a template at a time.
        for frame in (scene(1), checkerboard(1024)):
            result = stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=image_message(frame))),
                                timeout=120).result
            assert len(result.peaks) == 4
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=image_message(
                checkerboard(4096)))), timeout=120)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(memory_budget)" in caught.value.details()
        assert server.frames.budget.used == 0


def test_maps_that_could_not_be_sent_are_refused_before_matching(tmp_path):
    with running_server(tmp_path) as (stub, _, _):
        create_tiny(stub, 6)  # 6 FLOAT32 maps of 2041x2041: 100 MB, over the 64 MiB message limit
        frame = pb.Frame(image=image_message(checkerboard(2048)))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=pb.MatchConfig(maps=pb.MapOptions(encoding=pb.MAP_ENCODING_FLOAT32)),
                                       frame=frame), timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_message_bytes)" in caught.value.details()


def test_too_many_variants_are_refused(tmp_path):
    with running_server(tmp_path, max_variants_per_request=16) as (stub, _, _):
        image = image_message(scene(2)[:24, :24])
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image, scales=[0.8, 1, 1.2],
                                                                          angles=[-20, -10, 0, 10, 20])))
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=image, scales=[1, 1.1])))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=image_message(scene(2)))),
                       timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "17 scale/rotation variants" in caught.value.details()


def repeated_scans(image: np.ndarray, copies: int) -> bytes:
    """A progressive JPEG whose first scan after the DC one is repeated ``copies`` times (same header)."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = data.tobytes()
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    scan = data[starts[1]:starts[2]]
    return data[:starts[2]] + scan * copies + data[starts[2]:]


def test_a_jpeg_decode_bomb_is_refused_from_its_markers(tmp_path):
    bomb = repeated_scans(checkerboard(512), 300)
    assert jpeg_scans(bomb) > 300
    with running_server(tmp_path) as (stub, _, _):
        create_tiny(stub, 1)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=pb.Image(encoded=bomb))),
                       timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_jpeg_scans)" in caught.value.details()
        ok, normal = cv2.imencode(".jpg", scene(3), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
        stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=pb.Image(encoded=normal.tobytes()))),
                   timeout=30)


def test_a_call_past_its_deadline_stops_its_work(tmp_path, monkeypatch):
    # Time controlled: the work's first check between chunks waits until the client has seen
    # its deadline pass, so the deadline falls mid-work on any machine, however fast.
    expired = threading.Event()
    outcomes = []
    compute = frames_module.compute

    def paused(*args, cancelled, **kwargs):
        def ask():
            expired.wait(60)
            return cancelled()

        try:
            computed = compute(*args, cancelled=ask, **kwargs)
        except Cancelled:
            outcomes.append("cancelled")
            raise
        outcomes.append("finished")
        return computed

    monkeypatch.setattr(frames_module, "compute", paused)
    with running_server(tmp_path) as (stub, _, server):
        create_tiny(stub, 80)
        big = pb.Frame(image=image_message(checkerboard(4096)))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=pb.MatchConfig(), frame=big), timeout=1.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        expired.set()
        # Stopped at the first check after the deadline, it lets go of its memory.
        assert wait_for(lambda: outcomes, 60) and outcomes == ["cancelled"]
        assert wait_for(lambda: server.frames.budget.used == 0, 60)


def wait_for(predicate, timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` s pass (a bound on a wait, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def small_server(tmp_path, monkeypatch):
    """A server with 12 RPC threads (2 streams, 2 Match calls, 8 held back) whose matching is paused.

    Yields (stub, channel, release): every Match waits, holding its RPC thread, until ``release``
    is set, so the pool is saturated for as long as the test needs, on any machine.
    """
    release = threading.Event()
    process = frames_module.FrameProcessor.process

    def paused(self, *args, **kwargs):
        release.wait(120)
        return process(self, *args, **kwargs)

    monkeypatch.setattr(frames_module.FrameProcessor, "process", paused)
    with running_server(tmp_path, max_streams=2, max_calls=2) as (stub, channel, _):
        try:
            yield stub, channel, release
        finally:
            release.set()


def test_health_answers_with_twice_as_many_heavy_calls_as_rpc_threads(small_server, workers):
    health_under_load(*small_server, workers, checks=100)


@pytest.mark.soak
def test_health_answers_under_load_soak(small_server, workers):
    health_under_load(*small_server, workers, checks=3000)


def health_under_load(stub, channel, release, workers, checks: int) -> None:
    create_tiny(stub, 16)
    threads = 2 + 2 + 8  # max_streams + max_calls + the threads held back for light calls
    request = pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=image_message(scene(4, 480, 640))))
    outcomes = []

    def heavy(_):
        while not release.is_set():  # the admitted calls hold their threads; the refused ones come back
            try:
                stub.Match(request, timeout=120)
                outcomes.append("ok")
            except grpc.RpcError as error:
                outcomes.append(error.code())

    for i in range(2 * threads):
        workers.start(heavy, i)
    assert wait_for(lambda: grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes, 60)
    health = health_pb2_grpc.HealthStub(channel)
    latencies = []
    for _ in range(checks):
        started = time.perf_counter()
        # A deadline bounds the wait (were health queued behind the paused calls, it would never
        # answer); the latencies are reported, never asserted: they measure the machine.
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING
        latencies.append(time.perf_counter() - started)
    release.set()
    workers.join()
    assert "ok" in outcomes and set(outcomes) == {"ok", grpc.StatusCode.RESOURCE_EXHAUSTED}
    print(f"health under load: median {statistics.median(latencies) * 1e3:.1f} ms, "
          f"max {max(latencies) * 1e3:.1f} ms over {checks} checks")


def smooth_png(side: int, seed: int = 0, channels: int = 1) -> bytes:
    """A side x side PNG that compresses well (a few KB) and decodes to side^2 x channels bytes."""
    image = cv2.resize(scene(seed, 32, 32, channels), (side, side), interpolation=cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".png", image)
    return data.tobytes()


def test_frames_waiting_in_a_stream_are_charged_to_the_memory_budget(tmp_path, monkeypatch):
    # Matching paused (an injected stage); a client streams large frames as fast as it can.
    release = threading.Event()
    process = frames_module.FrameProcessor.process

    def paused(self, *args, **kwargs):
        release.wait(120)
        return process(self, *args, **kwargs)

    png = smooth_png(2048)
    pulled = []
    seen_in_use = []

    with running_server(tmp_path, memory_budget=1 << 30) as (stub, _, server):
        create_tiny(stub, 1)
        monkeypatch.setattr(frames_module.FrameProcessor, "process", paused)
        queued = server.frames.queued
        per_frame = len(png) + 2048 * 2048 * 4
        assert per_frame <= queued.total < 12 * per_frame  # room for some of the 12 frames, not all

        def requests():
            yield pb.StreamMatchRequest(config=pb.MatchConfig())
            for i in range(12):
                pulled.append(i)
                seen_in_use.append(queued.used)
                yield pb.StreamMatchRequest(frame=pb.Frame(sequence=i, image=pb.Image(encoded=png)))

        call = stub.StreamMatch(requests(), timeout=120)
        # The reader stops reading once the frames' share is full (the rest wait in the transport,
        # a few KB each, and flow control slows the client): however long it is left, what the
        # server holds for waiting frames stays within the share, and the gauge shows it.
        assert wait_for(lambda: queued.used > 0, 60)
        assert wait_for(lambda: len(pulled) == 12, 60)  # all sent: the transport holds the rest
        for _ in range(20):
            assert 0 < queued.used <= queued.total
            time.sleep(0.05)
        assert max(seen_in_use) <= queued.total
        release.set()
        assert [r.result.sequence for r in call] == list(range(12))  # every frame answered, in order
        assert wait_for(lambda: queued.used == 0, 30)


def test_a_frame_that_can_never_fit_the_waiting_share_is_resource_exhausted(tmp_path):
    with running_server(tmp_path, memory_budget=256 << 20) as (stub, _, server):
        create_tiny(stub, 1)
        huge = smooth_png(4096, channels=3)  # 48 MiB decoded (BGR): over the waiting frames' 32 MiB
        requests = [pb.StreamMatchRequest(config=pb.MatchConfig()),
                    pb.StreamMatchRequest(frame=pb.Frame(sequence=0, image=pb.Image(encoded=huge)))]
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamMatch(iter(requests), timeout=60))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = caught.value.details()
        assert "memory_budget" in details and "of 32 MiB" in details  # the waiting frames' share
        assert server.frames.queued.used == 0


def every_pose_refused(stub, height: int, width: int) -> grpc.RpcError:
    """An 8x8 template at scales 1-8 and every angle (3,636 poses) matched on a frame of height x width:
    the RESOURCE_EXHAUSTED error it must meet."""
    template = pb.Template(image=image_message(scene()[:8, :8]), angle_range=pb.Range(low=-180, high=180),
                           scale_range=pb.Range(low=1, high=8))
    stub.CreateTemplate(pb.CreateTemplateRequest(template=template, template_id="everything"))
    request = pb.MatchRequest(config=pb.MatchConfig(templates=["everything"]),
                              frame=pb.Frame(image=image_message(scene(1, height, width))))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Match(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return caught.value


def test_a_pose_grid_is_admitted_by_the_poses_it_would_try(tmp_path):
    # An 8x8 template at scales 1-8 and every angle: thousands of poses, once counted as one variant.
    with running_server(tmp_path, max_variants_per_request=1024) as (stub, _, server):
        caught = every_pose_refused(stub, 240, 320)
        details = caught.details()
        assert "max_variants_per_request" in details and "1024" in details
        assert re.search(r"have \d{4,} scale/rotation variants", details)
        assert server.frames.budget.used == 0  # refused before any work


def test_probes_on_the_health_port_answer_through_a_flood_beyond_the_rpc_limit(tmp_path, monkeypatch, workers):
    # 12 RPC threads and a limit of 48 calls at once on the main port; 64 clients call Match without
    # pause (the admitted ones held by a paused stage): the main port refuses even health checks
    # past its limit, the health port has threads of its own and answers every probe.
    release = threading.Event()
    process = frames_module.FrameProcessor.process

    def paused(self, *args, **kwargs):
        release.wait(120)
        return process(self, *args, **kwargs)

    health_port = free_port()
    with running_server(tmp_path, max_streams=2, max_calls=2, health_address=f"127.0.0.1:{health_port}") as (
            stub, _, server):
        create_tiny(stub, 4)
        monkeypatch.setattr(frames_module.FrameProcessor, "process", paused)
        request = pb.MatchRequest(config=pb.MatchConfig(), frame=pb.Frame(image=image_message(scene(4, 120, 160))))
        refused = []

        def flood(_):
            while not release.is_set():
                try:
                    stub.Match(request, timeout=120)
                except grpc.RpcError as error:
                    refused.append(error.code())

        for i in range(64):
            workers.start(flood, i)
        assert wait_for(lambda: len(refused) > 100, 60)
        probe = grpc.insecure_channel(f"127.0.0.1:{server.health_port}")
        health = health_pb2_grpc.HealthStub(probe)
        try:
            for _ in range(50):  # each bounded by a deadline: a probe that queued would miss it
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                    health_pb2.HealthCheckResponse.SERVING
        finally:
            probe.close()
            release.set()
        workers.join()
        assert set(refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED}


def test_a_pose_search_is_held_to_the_budget_by_its_real_size(tmp_path):
    # Past the variants limit (raised here), the search's own estimate (a map and spectra per pose
    # over the top level: 2 GiB for this grid on VGA) meets the budget before any work.
    with running_server(tmp_path, max_variants_per_request=10000, memory_budget=512 << 20) as (stub, _, server):
        assert "memory_budget" in every_pose_refused(stub, 480, 640).details()
        assert server.frames.budget.used == 0


def test_maps_of_turned_templates_are_sized_at_their_largest_turn(tmp_path):
    # A 100x100 pose template's map under 'full' padding is drawn at its pose: at 45 degrees on a
    # 143-pixel canvas, 642x642 on a 500x500 frame (1.65 MB of float32), where the unturned
    # template's is 599x599 (1.44 MB). Sized by the unturned template, this frame passed the check
    # and its answer could not be sent.
    part = scene(3, 100, 100)
    frame = scene(4, 500, 500)
    turn = cv2.getRotationMatrix2D((49.5, 49.5), 45.0, 1.0)
    turn[:, 2] += (250 - 49.5, 250 - 49.5)
    inside = cv2.warpAffine(np.ones_like(part), turn, (500, 500)) > 0
    frame[inside] = cv2.warpAffine(part, turn, (500, 500))[inside]
    with running_server(tmp_path, max_message_bytes=1_500_000) as (stub, _, _):
        stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(
            image=image_message(part), angle_range=pb.Range(low=-180, high=180)), template_id="turning"))
        config = pb.MatchConfig(templates=["turning"], padding=pb.PADDING_FULL,
                                maps=pb.MapOptions(encoding=pb.MAP_ENCODING_FLOAT32))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=config, frame=pb.Frame(image=image_message(frame))), timeout=120)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_message_bytes)" in caught.value.details()
        # Padding 'same' keeps the frame's size whatever the turn: 1 MB, sent, drawn at the pose.
        config.padding = pb.PADDING_SAME
        result = stub.Match(pb.MatchRequest(config=config, frame=pb.Frame(image=image_message(frame))),
                            timeout=120).result
        (pose,) = result.peaks
        (sent,) = result.maps
        assert abs(abs(pose.angle) % 90 - 45) < 1 and (sent.height, sent.width) == (500, 500)
        assert sent.angle == pose.angle and sent.window_width > 100


# Pose templates whose maps' size the check once missed: each frame passed it, and its answer could
# not be sent. Now refused before matching (RESOURCE_EXHAUSTED, naming max_message_bytes).
POSE_MAP_SIZES = {
    # 64x64 searched at scales 1.5-2 under 'valid' padding: where no pose is found its map falls
    # back to the template as registered (scale 1), 417x577 float32 on a 480x640 frame (0.96 MB),
    # where the scale range's least window gives 385x545 (0.84 MB).
    "fallback to scale 1": (pb.Template(image=image_message(scene(5, 64, 64)), scale_range=pb.Range(low=1.5, high=2.0)),
                            pb.PADDING_VALID, (480, 640), 900_000),
    # One angle, 45 degrees, under 'full' padding: where a pose is found its map is drawn on the
    # turned canvas (642x642 float32 on a 500x500 frame, 1.65 MB), not the unturned box's (599x599,
    # 1.44 MB).
    "one fixed turn": (pb.Template(image=image_message(scene(3, 100, 100)), angle_range=pb.Range(low=45, high=45)),
                       pb.PADDING_FULL, (500, 500), 1_500_000),
}


@pytest.mark.parametrize("case", POSE_MAP_SIZES)
def test_a_pose_templates_map_is_sized_at_its_largest_before_matching(tmp_path, case):
    template, padding, (height, width), limit = POSE_MAP_SIZES[case]
    with running_server(tmp_path, max_message_bytes=limit) as (stub, _, _):
        stub.CreateTemplate(pb.CreateTemplateRequest(template=template, template_id="posed"))
        config = pb.MatchConfig(templates=["posed"], padding=padding, maps=pb.MapOptions(encoding=pb.MAP_ENCODING_FLOAT32))
        frame = pb.Frame(image=image_message(scene(6, height, width)))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Match(pb.MatchRequest(config=config, frame=frame), timeout=120)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "(max_message_bytes)" in caught.value.details()
