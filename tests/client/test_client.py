"""FeatureMapClient against a real in-process server."""

import time

import cv2
import grpc
import numpy as np
import pytest

from featuremap.client import FeatureMapClient, FeatureMapError, FeatureMapWarning, render
from featuremap.service.engine import Matcher

from service_helpers import free_port, scene


def test_bank_calls_take_ids_or_names(client, tmp_path):
    c, _ = client
    frame = scene(1)
    a = c.create_template(frame[10:26, 20:36], template_id="a", display_name="A", labels={"k": "v"})
    assert (a.name, a.id, a.height, a.width, a.channels) == ("templates/a", "a", 16, 16, 1)
    path = tmp_path / "b.png"
    cv2.imwrite(str(path), frame[40:60, 50:80])
    b = c.create_template(path, template_id="b")
    assert np.array_equal(c.get_template("templates/b").image, frame[40:60, 50:80])
    assert [t.id for t in c.list_templates(page_size=1)] == ["a", "b"]
    c.delete_template("b")
    with pytest.raises(FeatureMapError) as caught:
        c.get_template(b.name)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and "does not exist" in caught.value.details
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_match_returns_plain_objects(client):
    c, _ = client
    frame = scene(2)
    c.create_template(frame[30:50, 40:70], template_id="t")
    result = c.match(frame, sequence=5, maps="float32")
    assert result.sequence == 5
    (peak,) = result.peaks
    assert (peak.template, peak.x, peak.y, peak.width, peak.height) == ("templates/t", 40, 30, 30, 20)
    feature_map = result.maps["templates/t"]
    assert np.array_equal(feature_map.scores, Matcher([frame[30:50, 40:70]])(frame)[0])
    assert (feature_map.origin, feature_map.stride) == ((0, 0), 1)
    assert result.timing["compute_ms"] > 0


def test_maps_come_back_placed_and_heatmaps_land_on_the_template(client):
    c, _ = client
    frame = scene(5)
    c.create_template(frame[30:50, 41:71], template_id="t")  # 30 x 20 at x=41, y=30
    result = c.match(frame, padding="same", stride=2, maps="float32")
    feature_map = result.maps["templates/t"]
    # same padding centres the window on each position; stride 2 samples every other one.
    assert (feature_map.origin, feature_map.stride) == ((-15, -10), 2)
    assert feature_map.scores.shape == ((120 + 1) // 2, (160 + 1) // 2)
    row, col = np.unravel_index(np.argmax(feature_map.scores), feature_map.scores.shape)
    assert (-15 + 2 * col, -10 + 2 * row) == (41, 30) == (result.peaks[0].x, result.peaks[0].y)
    # Drawn opaque, the best score's colour sits on the template's centre in the frame.
    heat = render.map_heatmap(frame, feature_map, result.peaks, alpha=1.0)
    hottest = render.heatmap(feature_map.scores)[row, col]
    assert np.array_equal(heat[30 + 10, 41 + 15], hottest)
    assert not np.array_equal(heat[30 + 10 - 4, 41 + 15 - 4], hottest)


def test_stream_is_pipelined_and_in_order(client):
    c, _ = client
    frame = scene(3)
    c.create_template(frame[30:50, 40:70], template_id="t")
    sent, received = [], []

    def frames():
        for i in range(12):
            sent.append(i)
            yield (i, 1000.0 + i, np.roll(frame, i, axis=1))

    for result in c.stream(frames(), window=4):
        # The window lets frames go out before earlier results come back.
        received.append((result.sequence, len(sent)))
        assert result.timestamp == pytest.approx(1000.0 + result.sequence)
        assert (result.peaks[0].x, result.peaks[0].y) == (40 + result.sequence, 30)
    assert [s for s, _ in received] == list(range(12))
    assert received[0][1] > 1, "the first result came back before a second frame was sent"
    # Never more than the window beyond what has been answered.
    assert all(sent_then - (seq + 1) <= 4 for seq, sent_then in received)


def test_stream_with_jpeg_frames(client):
    c, _ = client
    frame = scene(4, channels=3)
    c.create_template(frame[30:62, 40:72], template_id="t")
    results = list(c.stream([frame] * 3, encoding="jpeg", quality=95))
    assert [(r.peaks[0].x, r.peaks[0].y) for r in results] == [(40, 30)] * 3


def test_stopping_early_cancels_the_call(client):
    c, server = client
    frame = scene(5)
    c.create_template(frame[:16, :16], template_id="t")

    def endless():
        while True:
            yield frame

    for result in c.stream(endless()):
        if result.sequence == 3:
            break
    deadline = time.monotonic() + 10
    while server.metrics.streams._value.get() != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metrics.streams._value.get() == 0


def test_stream_errors_are_feature_map_errors(client):
    c, _ = client
    with pytest.raises(FeatureMapError) as caught:
        list(c.stream([scene()], templates=["missing"]))
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_an_unreachable_server_is_a_clear_error_not_a_hang(workers):
    codes = []

    def calls():
        with FeatureMapClient(f"127.0.0.1:{free_port()}", timeout=5) as c:
            with pytest.raises(FeatureMapError) as caught:
                list(c.list_templates())
            codes.append(caught.value.code)
            with pytest.raises(FeatureMapError):
                list(c.stream([scene()]))

    workers.start(calls)
    workers.join(timeout=120)  # a hang fails here (a bound on the wait, far past the client's 5 s timeout)
    assert codes == [grpc.StatusCode.UNAVAILABLE]


def test_bad_settings_are_refused_before_any_call(client):
    c, _ = client
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        c.match(scene(), method="nope")


def test_sharp_edges_of_the_client(client, tmp_path):
    c, _ = client
    frame = scene(6)
    # A TIFF (which the server does not decode) is decoded here; 16-bit is sent as 8-bit, with a note.
    cv2.imwrite(str(tmp_path / "t.tiff"), frame[10:30, 20:50].astype(np.uint16) * 257)
    with pytest.warns(FeatureMapWarning, match="t.tiff is 16-bit: sent as 8-bit"):
        created = c.create_template(tmp_path / "t.tiff", template_id="face", scales=[1.0, 1.2], angles=[-7.5, 0])
    assert np.allclose(c.get_template("face").image, frame[10:30, 20:50])
    assert (created.scales, created.angles) == ((1.0, 1.2), (-7.5, 0.0))  # as given, not float32's 1.2000000476...
    c.create_template(frame[60:80, 90:120], template_id="f")
    # A string is one name, not a list of one-letter names.
    assert {p.template for p in c.match(frame, templates="face").peaks} == {"templates/face"}
    with pytest.raises(FeatureMapError) as caught:
        c.match(frame, templates="nothing-here")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND and caught.value.code_name == "NOT_FOUND"
    (tmp_path / "junk.tiff").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.tiff: not an image file OpenCV reads"):
        c.create_template(tmp_path / "junk.tiff")


def test_the_default_threshold_turns_peaks_into_detections(client):
    c, _ = client
    rng = np.random.default_rng(9)
    frame = scene(7)
    c.create_template(frame[40:64, 50:74], template_id="here")
    c.create_template(cv2.GaussianBlur(rng.integers(0, 256, (24, 24), dtype=np.uint8), (0, 0), 1.2),
                      template_id="elsewhere")
    assert [p.template for p in c.match(frame).peaks] == ["templates/here"]
    assert len(c.match(frame, threshold=None).peaks) == 2  # None: every peak, as the wire's default
    assert len(c.match(frame, method="ccorr").peaks) == 2  # no default for the unnormalised methods


def test_one_exception_tree_each_kind_also_the_builtin_it_refines(client, tmp_path):
    from featuremap.client import (FeatureMapError, FileError, InvalidArgumentError, NotFoundError,
                                   SettingTypeError)

    c, _ = client
    with pytest.raises(NotFoundError) as caught:
        c.get_template("nothing-here")
    assert isinstance(caught.value, (FeatureMapError, LookupError)) and caught.value.code_name == "NOT_FOUND"
    assert "templates/nothing-here" in str(caught.value)  # the template named as the user named it
    with pytest.raises(FileError) as missing:
        c.create_template(tmp_path / "nope.png", "nope")
    assert isinstance(missing.value, (FeatureMapError, FileNotFoundError))
    with pytest.raises(InvalidArgumentError):
        c.match(scene(), method="nope")
    with pytest.raises(SettingTypeError):
        c.match(scene(), colour="red")
    with pytest.raises(ValueError):  # what code written against the builtins catches still catches
        c.match(scene(), method="nope")
    import featuremap.client as package

    assert {"FeatureMapClient", "FeatureMapError", "NotFoundError"} <= set(dir(package))


def test_labels_of_nearby_detections_do_not_overlap():
    placed = []
    boxes = [(40, 40, 30, 20), (44, 42, 30, 20), (48, 44, 30, 20), (40, 0, 30, 20)]  # touching, one at the top
    for box in boxes:
        left, top = render.place_label(box, (60, 14), (120, 160), placed)
        assert 0 <= left <= 160 - 60 and 0 <= top <= 120 - 14
        rect = (left, top, left + 60, top + 14)
        assert all(rect[2] <= a or rect[0] >= c or rect[3] <= b or rect[1] >= d for a, b, c, d in placed), placed
        placed.append(rect)


def test_heatmaps_carry_a_colour_bar_and_the_templates_name(client):
    c, _ = client
    frame = scene(5)
    c.create_template(frame[30:50, 41:71], template_id="named")
    result = c.match(frame, maps="float32")
    plain = render.map_heatmap(frame, result.maps["templates/named"], result.peaks, legend=False)
    heat = render.map_heatmap(frame, result.maps["templates/named"], result.peaks)
    assert heat.shape[0] == plain.shape[0] and heat.shape[1] > plain.shape[1]  # a panel at the right
    bar = heat[:, plain.shape[1] + 2:plain.shape[1] + 8].astype(int)
    top, bottom = bar[0, 0], bar[-1, 0]  # BGR
    assert top[2] > top[0] and bottom[0] > bottom[2]  # the bar runs from hot red (best) to cold blue (worst)
    assert not np.array_equal(heat[:12, :40], plain[:12, :40])  # the title written over the top-left
