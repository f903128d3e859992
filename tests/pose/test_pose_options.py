"""The pose search's options and what each pose carries, through the product.

min_visible, max_overlap and the candidate budget go from the client (and the
CLI's flags) through PeakOptions to the engine; each pose's visible share and
ambiguity come back in the wire's Peak, the client's Peak, the JSON lines and
the overlay (a clipped part's box dashed). Real servers on real ports.
"""

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from featuremap.client import FeatureMapError, InvalidArgumentError, Peak, SettingTypeError
from featuremap.client.render import Palette, draw_peaks
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.wire import image_message

from scenes import photographs, place

pytest.importorskip("skimage.data")

#: A part whose centre is here in a 640-wide frame has about 30% of its 64-pixel box (turned by 15 degrees)
#: outside the frame's right edge.
CLIPPED = (15.0, 626.7, 240.0)


def u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pictures():
    astronaut, coffee = photographs()
    return astronaut[80:144, 200:264].copy(), cv2.resize(coffee, (640, 480))


@pytest.fixture(scope="module")
def helmet():
    """Another part of the astronaut's picture than the face."""
    astronaut, _ = photographs()
    return astronaut[20:84, 150:214].copy()


@pytest.fixture(scope="module")
def symmetric():
    """A texture that looks the same turned half way round (its 180-degree twin is itself)."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (48, 48), dtype=np.uint8), (0, 0), 1.5).astype(np.float32)
    return ((texture + texture[::-1, ::-1]) / 2).astype(np.uint8)


def clipped_frame(pictures) -> np.ndarray:
    face, background = pictures
    angle, cx, cy = CLIPPED
    return u8(place(background, face, angle, 1.0, cx, cy))


def overlapping_frame(pictures) -> np.ndarray:
    """Two parts whose turned boxes overlap a little (centres 52 px apart): each about 1/10 of the other."""
    face, background = pictures
    return u8(place(place(background, face, 20.0, 1.0, 250.0, 200.0), face, -35.0, 1.0, 302.0, 206.0))


def cli(*args, port):
    return subprocess.run([sys.executable, "-m", "featuremap.client.cli", *args, "--address", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120)


def test_max_overlap_decides_whether_overlapping_parts_both_come_back(client, pictures):
    c, _ = client
    face, _ = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    frame = overlapping_frame(pictures)
    both = c.match(frame, templates="face", top_k=2, max_overlap=1.0).peaks
    assert sorted(round(p.cx) for p in both) == [250, 302]
    (kept,) = c.match(frame, templates="face", top_k=2, max_overlap=0.0).peaks
    assert round(kept.cx) == 302  # the whole one; the other is partly under it and scores less
    # A stream (tracking from the last frame's poses on its second frame) is held to it too.
    for result in c.stream([frame, frame], templates="face", top_k=2, max_overlap=0.0):
        assert len(result.peaks) == 1


def test_the_candidate_budget_bounds_the_places_the_search_refines(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    frame = u8(place(place(background, face, 20.0, 1.0, 150.0, 150.0), face, 100.0, 1.0, 450.0, 330.0))
    assert len(c.match(frame, templates="face", top_k=2, candidates=1).peaks) == 1
    assert sorted(round(p.cx) for p in c.match(frame, templates="face", top_k=2, candidates=4).peaks) == [150, 450]


def test_min_visible_reports_a_part_clipped_at_the_frame_s_edge(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    _, cx, cy = CLIPPED
    frame = clipped_frame(pictures)
    assert c.match(frame, templates="face", min_visible=1.0).peaks == []  # whole parts only
    (peak,) = c.match(frame, templates="face", min_visible=0.5).peaks
    assert math.hypot(peak.cx - cx, peak.cy - cy) < 1.0 and 0.6 < peak.visible < 0.8
    # In a stream: the part whole in the first frame, clipped in the second (tracked from the first).
    whole = u8(place(background, face, CLIPPED[0], 1.0, 560.0, 240.0))
    lenient = [r.peaks for r in c.stream([whole, frame], templates="face", min_visible=0.5)]
    assert [len(p) for p in lenient] == [1, 1] and lenient[0][0].visible == pytest.approx(1.0, abs=1e-4)
    assert 0.6 < lenient[1][0].visible < 0.8


def test_min_visible_1_keeps_whole_parts_and_only_those(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    # The part whole in the first frame (its turned box 20 px inside the right edge), clipped in the second.
    whole = u8(place(background, face, CLIPPED[0], 1.0, 560.0, 240.0))
    strict = [r.peaks for r in c.stream([whole, clipped_frame(pictures)], templates="face", min_visible=1.0)]
    assert len(strict[0]) == 1 and strict[1] == []


def test_visible_and_ambiguity_arrive_on_the_wire(server, client, pictures, symmetric, helmet):
    stub, _, _ = server
    c, _ = client
    face, background = pictures
    c.create_template(symmetric, "twin", angle_range=(-180, 180))  # the full circle: ambiguity is measured
    c.create_template(helmet, "narrow", angle_range=(-30, 30))  # not the full circle: not measured
    c.create_template(background[400:440, 40:80].copy(), "plain")  # no ranges: not a pose
    c.create_template(face, "edge", angle_range=(-180, 180))
    frame = u8(place(place(clipped_frame(pictures), symmetric, 30.0, 1.0, 300.0, 200.0), helmet, 10.0, 1.0, 150.0,
                     300.0))
    config = pb.MatchConfig(templates=["twin", "narrow", "plain", "edge"],
                            peaks=pb.PeakOptions(threshold=0.7, min_visible=0.5))
    reply = stub.Match(pb.MatchRequest(config=config, frame=pb.Frame(image=image_message(frame))), timeout=60)
    peaks = {p.template.split("/")[1]: p for p in reply.result.peaks}
    assert set(peaks) == {"twin", "narrow", "plain", "edge"}
    assert all(p.HasField("visible") for p in peaks.values())  # sent for every peak, 1 included
    assert peaks["twin"].ambiguity > 0.9 and peaks["twin"].visible == 1.0
    assert peaks["narrow"].ambiguity == 0.0 and peaks["narrow"].visible == 1.0
    assert (peaks["plain"].visible, peaks["plain"].ambiguity) == (1.0, 0.0)
    assert 0.6 < peaks["edge"].visible < 0.8
    # The client's Peak carries them as sent; a peak without visible (an older server) reads as whole.
    got = {p.template.split("/")[1]: p for p in c.match(frame, templates=list(peaks), min_visible=0.5).peaks}
    assert got["twin"].ambiguity > 0.9 and 0.6 < got["edge"].visible < 0.8 and got["plain"].visible == 1.0
    from featuremap.client.client import _result

    assert _result(pb.FrameResult(peaks=[pb.Peak(template="templates/old", score=0.9)])).peaks[0].visible == 1.0


def test_bad_pose_options_are_invalid_argument_with_the_reason_and_the_server_goes_on(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    c.create_template(background[100:140, 200:240].copy(), "plain")
    cases = [
        (dict(min_visible=0.0), "min_visible"), (dict(min_visible=1.5), "min_visible"),
        (dict(min_visible=float("nan")), "min_visible"), (dict(max_overlap=-0.1), "max_overlap"),
        (dict(max_overlap=1.5), "max_overlap"), (dict(candidates=0), "candidates"), (dict(candidates=100000), "candidates"),
    ]
    for options, reason in cases:
        for templates in ("face", "plain"):  # checked with the config, pose templates in it or not
            with pytest.raises(FeatureMapError) as caught:
                c.match(background, templates=templates, **options)
            assert caught.value.code_name == "INVALID_ARGUMENT" and reason in caught.value.details, options
            assert len(caught.value.details) < 200
        with pytest.raises(FeatureMapError) as streamed:  # a stream's config is refused before its frames
            list(c.stream([background], templates="face", **options))
        assert streamed.value.code_name == "INVALID_ARGUMENT" and reason in streamed.value.details, options
    # What protobuf could not carry is refused by the client, saying why.
    with pytest.raises(InvalidArgumentError, match="candidates"):
        c.match(background, templates="face", candidates=-1)
    with pytest.raises(SettingTypeError, match="min_visible"):
        c.match(background, templates="face", min_visible="most")  # type: ignore[typeddict-item]
    # The server still serves, the bank as it was.
    assert [t.id for t in c.list_templates()] == ["face", "plain"]
    frame = clipped_frame(pictures)
    assert len(c.match(frame, templates="face", min_visible=0.5, max_overlap=0.2, candidates=8).peaks) == 1


def test_a_clipped_part_is_drawn_with_a_dashed_box():
    frame = np.zeros((200, 200), np.uint8)

    def edge(drawn, x):  # the box's left edge, away from its corners (and the label above it)
        return drawn.any(axis=2)[75:125, x]

    whole = Peak("templates/t", 60.0, 60.0, 80, 80, 0.9, 1.0, 0.0, 99.5, 99.5)
    clipped = Peak("templates/t", 60.0, 60.0, 80, 80, 0.9, 1.0, 0.0, 99.5, 99.5, visible=0.7)
    solid, dashed = edge(draw_peaks(frame, [whole], palette=Palette()), 60), \
        edge(draw_peaks(frame, [clipped], palette=Palette()), 60)
    assert solid.all()
    assert 0.3 < dashed.mean() < 0.85 and np.count_nonzero(np.diff(dashed.astype(int)) == 1) >= 2
    # Turned, too: a point on the turned box's edge between dashes stays dark somewhere along it.
    turned = draw_peaks(frame, [Peak("templates/t", 60.0, 60.0, 80, 80, 0.9, 1.0, 30.0, 99.5, 99.5, visible=0.7)],
                        palette=Palette()).any(axis=2)
    corners = cv2.boxPoints(((99.5, 99.5), (80, 80), -30.0))
    a, b = corners[0], corners[1]
    along = [turned[round(a[1] + (b[1] - a[1]) * t), round(a[0] + (b[0] - a[0]) * t)] for t in np.linspace(0.2, 0.8, 49)]
    assert 0.3 < np.mean(along) < 0.85


def test_the_cli_sends_the_pose_options_and_writes_visible_and_ambiguity(tmp_path, client, pictures):
    c, running = client
    face, _ = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    frame = clipped_frame(pictures)
    cv2.imwrite(str(tmp_path / "clipped.png"), frame)
    strict = cli("match", str(tmp_path / "clipped.png"), "--template", "face", "--min-visible", "1", port=running.port)
    assert strict.returncode == 0, strict.stderr
    assert json.loads(strict.stdout)["peaks"] == []
    overlay = tmp_path / "overlay.png"
    matched = cli("match", str(tmp_path / "clipped.png"), "--template", "face", "--min-visible", "0.5",
                  "--max-overlap", "0.3", "--candidates", "6", "--overlay", str(overlay), port=running.port)
    assert matched.returncode == 0, matched.stderr
    (peak,) = json.loads(matched.stdout)["peaks"]
    assert 0.6 < peak["visible"] < 0.8 and 0.0 <= peak["ambiguity"] <= 1.0
    # The overlay's box is dashed: along its left edge (inside the frame) drawn pixels alternate with the frame's.
    drawn = np.any(cv2.imread(str(overlay)) != cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), axis=2)
    corners = cv2.boxPoints(((peak["cx"], peak["cy"]), (peak["width"], peak["height"]), -peak["angle"]))
    left = corners[np.argsort(corners[:, 0])[:2]]
    along = np.array([drawn[round(left[0][1] + (left[1][1] - left[0][1]) * t),
                            round(left[0][0] + (left[1][0] - left[0][0]) * t)] for t in np.linspace(0.2, 0.8, 49)])
    assert 0.3 < along.mean() < 0.85 and np.count_nonzero(np.diff(along.astype(int)) == 1) >= 2
    # watch's JSON lines carry them for every peak.
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "f0.png"), frame)
    lines = tmp_path / "d.jsonl"
    watched = cli("watch", str(folder), "--template", "face", "--min-visible", "0.5", "--jsonl", str(lines),
                  port=running.port)
    assert watched.returncode == 0, watched.stderr
    (entry,) = [json.loads(line) for line in lines.read_text().splitlines()]
    (row,) = entry["peaks"]
    assert 0.6 < row["visible"] < 0.8 and "ambiguity" in row
    # Out-of-range flags: a share the CLI refuses itself (usage, 1); a budget over the engine's, the server (2).
    usage = cli("match", str(tmp_path / "clipped.png"), "--min-visible", "0", port=running.port)
    assert usage.returncode == 1 and "--min-visible: 0 must be above 0 and at most 1" in usage.stderr
    refused = cli("match", str(tmp_path / "clipped.png"), "--template", "face", "--candidates", "100000",
                  port=running.port)
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr and "candidates" in refused.stderr
