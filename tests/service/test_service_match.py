"""Match and StreamMatch over real gRPC against the engine's own results."""

import threading
import time

import cv2
import grpc
import numpy as np
import pytest

from featuremap.wire import map_array as decode_map
from featuremap.service.engine import Matcher
from featuremap.v1 import featuremap_pb2 as pb

from service_helpers import create, frame_message, scene


@pytest.fixture
def server_settings():
    return {"max_in_flight": 2}


def bank_of(stub, frame):
    cuts = {"a": (10, 20, 16, 16), "b": (60, 40, 24, 12), "c": (100, 70, 20, 20)}
    templates = {}
    for tid, (x, y, w, h) in cuts.items():
        templates[tid] = frame[y:y + h, x:x + w].copy()
        create(stub, templates[tid], tid)
    return cuts, templates


def config(**kwargs):
    maps = kwargs.pop("maps", pb.MAP_ENCODING_FLOAT32)
    return pb.MatchConfig(maps=pb.MapOptions(encoding=maps), **kwargs)


def test_match_equals_the_engine(server):
    stub, _, _ = server
    frame = scene(1)
    cuts, templates = bank_of(stub, frame)
    response = stub.Match(pb.MatchRequest(config=config(method=pb.METHOD_CCOEFF_NORMED), frame=frame_message(frame, 7)))
    result = response.result
    assert result.sequence == 7
    expected = Matcher(list(templates.values()), method="ccoeff_normed")(frame)
    for feature_map, want in zip(result.maps, expected, strict=True):
        assert np.array_equal(decode_map(feature_map), want)
    found = {p.template: (p.x, p.y, p.width, p.height) for p in result.peaks}
    assert found == {f"templates/{tid}": (x, y, w, h) for tid, (x, y, w, h) in cuts.items()}
    assert result.timing.compute_ms > 0


def test_padding_stride_and_encodings_map_back_to_frame_pixels(server):
    stub, _, _ = server
    frame = scene(2)
    create(stub, frame[30:47, 51:62].copy(), "odd")  # 17 x 11 at x=51, y=30
    # same: windows start at -(w//2) + 2j, -(h//2) + 2i, which hits (51, 30);
    # full: at -(w-1) + j, -(h-1) + i.
    for padding, stride in ((pb.PADDING_SAME, 2), (pb.PADDING_FULL, 1)):
        result = stub.Match(pb.MatchRequest(config=config(padding=padding, stride=stride, templates=["odd"],
                                                          maps=pb.MAP_ENCODING_UINT8),
                                            frame=frame_message(frame))).result
        (peak,) = result.peaks
        assert (peak.x, peak.y, peak.width, peak.height) == (51, 30, 11, 17)
        feature_map = result.maps[0]
        row, col = divmod(int(np.argmax(decode_map(feature_map))), feature_map.width)
        assert (feature_map.origin_x + col * stride, feature_map.origin_y + row * stride) == (51, 30)
    result = stub.Match(pb.MatchRequest(config=config(method=pb.METHOD_CCORR, templates=["odd"],
                                                      maps=pb.MAP_ENCODING_FLOAT16),
                                        frame=frame_message(frame))).result
    want = Matcher([frame[30:47, 51:62]], method="ccorr")(frame)[0]
    assert np.allclose(decode_map(result.maps[0]), want, rtol=2e-3)  # raw sums beyond float16's range


def stream(stub, messages, **kwargs):
    return stub.StreamMatch(iter(messages), timeout=60, **kwargs)


def test_stream_answers_every_frame_in_order_and_follows_config_changes(server):
    stub, _, _ = server
    frame = scene(3)
    _, templates = bank_of(stub, frame)
    frames = [np.roll(frame, shift, axis=1) for shift in range(6)]
    messages = [pb.StreamMatchRequest(config=config(templates=["a"]))]
    messages += [pb.StreamMatchRequest(frame=frame_message(f, i)) for i, f in enumerate(frames[:3])]
    messages += [pb.StreamMatchRequest(config=config(templates=["b", "c"], method=pb.METHOD_SQDIFF))]
    messages += [pb.StreamMatchRequest(frame=frame_message(f, i + 3)) for i, f in enumerate(frames[3:])]
    results = [r.result for r in stream(stub, messages)]
    assert [r.sequence for r in results] == list(range(6))
    for r, f in zip(results[:3], frames[:3]):
        assert [m.template for m in r.maps] == ["templates/a"]
        assert np.array_equal(decode_map(r.maps[0]), Matcher([templates["a"]])(f)[0])
    for r, f in zip(results[3:], frames[3:]):
        assert [m.template for m in r.maps] == ["templates/b", "templates/c"]
        want = Matcher([templates["b"], templates["c"]], method="sqdiff")(f)
        assert all(np.array_equal(decode_map(m), w) for m, w in zip(r.maps, want, strict=True))


def test_a_stream_keeps_its_snapshot_when_templates_are_deleted(server):
    stub, _, _ = server
    frame = scene(4)
    bank_of(stub, frame)
    gate = threading.Event()

    def requests():
        yield pb.StreamMatchRequest(config=config())
        yield pb.StreamMatchRequest(frame=frame_message(frame, 0))
        gate.wait(30)
        yield pb.StreamMatchRequest(frame=frame_message(frame, 1))

    responses = stub.StreamMatch(requests(), timeout=60)
    first = next(responses).result
    stub.DeleteTemplate(pb.DeleteTemplateRequest(name="templates/a"))
    gate.set()
    second = next(responses).result
    assert [m.template for m in first.maps] == [m.template for m in second.maps]
    assert "templates/a" in [m.template for m in second.maps]


def test_realtime_skips_stale_frames_and_reports_them(server, monkeypatch):
    stub, _, srv = server
    frame = scene(5, 480, 640)
    create(stub, frame[100:164, 200:264].copy(), "big")
    # Time controlled, not hoped for: matching is paused (an injected slow stage) until the
    # stream's reader has had a frame replaced by a newer one, so frames arrive faster than
    # they are matched on any machine; were stale frames never replaced, nothing would be skipped.
    process = srv.frames.process

    def paused(*args, **kwargs):
        wait_until(lambda: srv.metrics.skipped._value.get() > 0, timeout=60)
        return process(*args, **kwargs)

    monkeypatch.setattr(srv.frames, "process", paused)
    sent = 40
    messages = [pb.StreamMatchRequest(config=config(realtime=True, maps=pb.MAP_ENCODING_UNSPECIFIED))]
    messages += [pb.StreamMatchRequest(frame=frame_message(frame, i)) for i in range(sent)]
    results = [r.result for r in stream(stub, messages)]
    answered = [r.sequence for r in results]
    skipped = [s for r in results for s in r.skipped_sequences]
    assert answered == sorted(answered) and answered[-1] == sent - 1
    assert sorted(answered + skipped) == list(range(sent))  # every frame answered or reported skipped
    assert skipped, "frames arrived while matching was paused, yet nothing was skipped"


def test_without_realtime_every_frame_is_answered(server):
    stub, _, _ = server
    frame = scene(6, 240, 320)
    create(stub, frame[10:42, 10:42].copy(), "t")
    messages = [pb.StreamMatchRequest(config=config(maps=pb.MAP_ENCODING_UNSPECIFIED))]
    messages += [pb.StreamMatchRequest(frame=frame_message(frame, i)) for i in range(30)]
    results = [r.result for r in stream(stub, messages)]
    assert [r.sequence for r in results] == list(range(30))
    assert not any(r.skipped_sequences for r in results)


def test_eight_concurrent_streams(server, workers):
    stub, _, _ = server
    frame = scene(7)
    _, templates = bank_of(stub, frame)
    expected = {i: Matcher(list(templates.values()))(np.roll(frame, i, axis=0)) for i in range(8)}
    answered = {}

    def one(index):
        shifted = np.roll(frame, index, axis=0)
        messages = [pb.StreamMatchRequest(config=config())]
        messages += [pb.StreamMatchRequest(frame=frame_message(shifted, s)) for s in range(10)]
        results = [r.result for r in stream(stub, messages)]  # an RpcError fails the test
        assert [r.sequence for r in results] == list(range(10)), index
        for r in results:
            maps = [decode_map(m) for m in r.maps]
            assert all(np.array_equal(m, w) for m, w in zip(maps, expected[index], strict=True)), (index, r.sequence)
        answered[index] = len(results)

    workers.map(one, 8)  # the first worker's failure is re-raised here
    assert answered == {i: 10 for i in range(8)}


def active_streams(server) -> float:
    return server.metrics.streams._value.get()


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def endless_stream(stub, frame):
    """A stream that would send ``frame`` for ever, once its first answer is in."""

    def endless():
        yield pb.StreamMatchRequest(config=config())
        for i in range(10**6):
            yield pb.StreamMatchRequest(frame=frame_message(frame, i))

    call = stub.StreamMatch(endless(), timeout=60)
    next(call)
    return call


def test_a_client_that_vanishes_frees_its_stream(server):
    stub, _, srv = server
    frame = scene(8)
    bank_of(stub, frame)
    call = endless_stream(stub, frame)
    assert active_streams(srv) == 1
    call.cancel()
    assert wait_until(lambda: active_streams(srv) == 0)
    # And the server goes on serving.
    assert stub.Match(pb.MatchRequest(config=config(), frame=frame_message(frame))).result.maps


def test_a_client_that_stops_reading_is_stalled_not_buffered(server):
    stub, _, srv = server
    frame = scene(9, 480, 640)
    create(stub, frame[:16, :16].copy(), "t")
    pulled = []

    def counting():
        yield pb.StreamMatchRequest(config=config(maps=pb.MAP_ENCODING_FLOAT32))
        for i in range(10**6):
            pulled.append(i)
            yield pb.StreamMatchRequest(frame=frame_message(frame, i))

    call = stub.StreamMatch(counting(), timeout=60)
    next(call)  # read one response, then stop reading
    # Meanwhile others are served as usual.
    result = stub.Match(pb.MatchRequest(config=config(), frame=frame_message(frame)), timeout=30).result
    assert [p.template for p in result.peaks] == ["templates/t"]
    # Stalled, not buffered: however long it is left, the server takes no more frames than its
    # two queues and its compute pool hold (max_in_flight each) plus what the transport windows
    # hold (gRPC's flow-control window grows to at most 4 MiB a side; 16 MiB counts it twice over).
    frame_bytes = frame.nbytes
    bound = 3 * srv.frames.max_in_flight + 2 * -(-(16 << 20) // frame_bytes) + 2
    last = -1
    while len(pulled) != last:  # until the client's generator is no longer asked for frames...
        last = len(pulled)
        assert last <= bound, (last, bound)
        wait_until(lambda: len(pulled) > last, timeout=2.0)  # ...for 2 s: a wait, never an assertion
    assert len(pulled) <= bound, (len(pulled), bound)
    call.cancel()
    assert wait_until(lambda: active_streams(srv) == 0)


@pytest.mark.parametrize(
    "messages,code,text",
    [
        ([pb.StreamMatchRequest(frame=pb.Frame())], grpc.StatusCode.FAILED_PRECONDITION, "before any config"),
        ([pb.StreamMatchRequest()], grpc.StatusCode.INVALID_ARGUMENT, "must set config or frame"),
        ([pb.StreamMatchRequest(config=pb.MatchConfig(templates=["nope"]))], grpc.StatusCode.NOT_FOUND,
         "templates/nope does not exist"),
        ([pb.StreamMatchRequest(config=pb.MatchConfig(method=42))], grpc.StatusCode.INVALID_ARGUMENT, "unknown method"),
        ([pb.StreamMatchRequest(config=pb.MatchConfig()),
          pb.StreamMatchRequest(frame=pb.Frame(image=pb.Image(encoded=b"\x89PNG\r\n\x1a\nbroken")))],
         grpc.StatusCode.INVALID_ARGUMENT, "PNG header"),
        ([pb.StreamMatchRequest(config=pb.MatchConfig()),
          pb.StreamMatchRequest(frame=frame_message(np.zeros((8, 8), np.uint8)))],
         grpc.StatusCode.INVALID_ARGUMENT, "template templates/t (16x16) is larger than the frame (8x8)"),
        ([pb.StreamMatchRequest(config=pb.MatchConfig()),
          pb.StreamMatchRequest(frame=frame_message(np.zeros((8000, 8000), np.uint8)))],
         grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit of 16777216 (max_frame_pixels)"),
    ],
)
def test_bad_streams_get_their_code_and_the_server_keeps_serving(server, messages, code, text):
    stub, _, _ = server
    frame = scene(10)
    create(stub, frame[:16, :16].copy(), "t")
    with pytest.raises(grpc.RpcError) as caught:
        list(stream(stub, messages))
    assert caught.value.code() == code and text in caught.value.details(), caught.value.details()
    result = stub.Match(pb.MatchRequest(config=config(), frame=frame_message(frame))).result
    assert [p.template for p in result.peaks] == ["templates/t"]


def test_match_errors(server):
    stub, _, _ = server
    with pytest.raises(grpc.RpcError) as caught:
        stub.Match(pb.MatchRequest(config=config(), frame=frame_message(scene())))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # empty bank
    create(stub, scene()[:4, :4], "gray")
    two = np.dstack([scene(), scene()])  # a layout no conversion reaches
    with pytest.raises(grpc.RpcError) as caught:
        stub.Match(pb.MatchRequest(config=config(templates=["gray"]), frame=frame_message(two)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "channel" in caught.value.details()


def test_each_template_is_matched_in_its_own_layout(server):
    # A gray template and a colour one, both cut from one colour scene: a colour frame is converted
    # to gray for the first, a gray frame to BGR for the second; neither is skipped.
    stub, _, _ = server
    colour = scene(21, channels=3)
    gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    create(stub, gray[30:62, 40:72].copy(), "gray")
    create(stub, colour[60:92, 90:122].copy(), "colour")
    for frame in (colour, gray, cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)):
        result = stub.Match(pb.MatchRequest(config=config(maps=pb.MAP_ENCODING_FLOAT32),
                                            frame=frame_message(frame))).result
        assert [p.template for p in result.peaks] == ["templates/gray", "templates/colour"]
        assert [m.template for m in result.maps] == ["templates/gray", "templates/colour"]
        (x0, y0), (x1, y1) = [(p.x, p.y) for p in result.peaks]
        assert (x0, y0) == (40, 30) and (x1, y1) == (90, 60)


def test_a_logo_with_an_alpha_channel_is_matched_on_its_opaque_pixels(server, tmp_path):
    from featuremap.client import FeatureMapClient

    stub, _, srv = server
    background = scene(22, 160, 200, channels=3)
    logo = scene(23, 40, 40, channels=3)
    alpha = np.zeros((40, 40), np.uint8)
    cv2.circle(alpha, (20, 20), 18, 255, -1)  # a round logo: the corners transparent
    path = tmp_path / "logo.png"
    cv2.imwrite(str(path), np.dstack([logo, alpha]))
    frame = background.copy()
    inside = alpha > 0
    frame[50:90, 70:110][inside] = logo[inside]  # only the opaque part is drawn on the scene
    with FeatureMapClient(f"127.0.0.1:{srv.port}", timeout=30) as client:
        created = client.create_template(path, "logo")
        assert created.channels == 3  # BGR, its alpha the mask
        assert client.get_template("logo").mask is not None
        (peak,) = client.match(frame, templates="logo").peaks
    assert (peak.x, peak.y) == (70, 50) and peak.score > 0.99


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp"])
def test_encoded_frames(server, extension):
    stub, _, _ = server
    frame = scene(11, channels=3)
    create(stub, frame[40:72, 60:92].copy(), "colour")
    ok, data = cv2.imencode(extension, frame, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok
    result = stub.Match(pb.MatchRequest(config=config(maps=pb.MAP_ENCODING_UNSPECIFIED),
                                        frame=pb.Frame(image=pb.Image(encoded=data.tobytes())))).result
    (peak,) = result.peaks
    assert (peak.x, peak.y) == (60, 40) and peak.score > 0.9


def test_ssim_over_grpc_equals_the_engine(server):
    stub, _, _ = server
    frame = scene(12, channels=3)
    template = frame[20:35, 30:45].copy()
    create(stub, template, "s")
    for data_range, frame_in in ((0.0, frame), (100.0, frame)):
        result = stub.Match(pb.MatchRequest(config=config(method=pb.METHOD_SSIM, templates=["s"],
                                                          data_range=data_range),
                                            frame=frame_message(frame_in))).result
        want = Matcher([template], method="ssim", data_range=data_range or None)(frame_in)[0]
        assert np.array_equal(decode_map(result.maps[0]), want)
        assert (result.peaks[0].x, result.peaks[0].y) == (30, 20)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Match(pb.MatchRequest(config=config(method=pb.METHOD_SSIM, data_range=-1), frame=frame_message(frame)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_client_that_ends_its_stream_is_not_an_error_in_the_metrics(server):
    stub, _, srv = server
    frame = scene(8)
    bank_of(stub, frame)
    endless_stream(stub, frame).cancel()  # the client had seen enough
    assert wait_until(lambda: active_streams(srv) == 0)
    counted = {tuple(sample.labels.values()): sample.value for metric in srv.metrics.errors.collect()
               for sample in metric.samples if sample.name.endswith("_total")}
    assert not any(value for labels, value in counted.items() if "StreamMatch" in labels), counted
