"""Pose heatmaps in the pose's frame: a pose template's map is its template drawn at the best pose.

A real server on a real port, real gRPC: a textured, asymmetric part cut from
a photograph is pasted turned into another photograph; the map sent for it
must be the turned template's (hot where the pose is, its window the turned
canvas), and say so on the wire (FeatureMap.angle, template_scale,
window_width, window_height).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from featuremap import wire
from featuremap.boxes import resized_size, turned_canvas
from featuremap.client import FeatureMapClient, render
from featuremap.client.client import _feature_map
from featuremap.service.engine import Matcher
from featuremap.service.pipeline.budget import MemoryBudget
from featuremap.service.pipeline.matching import compute
from featuremap.service.pipeline.plans import MatchOptions, Plan
from featuremap.service.store.prepared import PreparedCache
from featuremap.service.store.templates import StoredTemplate
from featuremap.service.store.variants import make_variant
from featuremap.v1 import featuremap_pb2 as pb

from scenes import angle_error, photographs, place
from service_helpers import running_server

pytest.importorskip("skimage.data")

NAME = "templates/part"
#: Where the part is pasted, and how: turned well away from upright, a little enlarged.
ANGLE, SCALE, CX, CY = 60.0, 1.1, 150.3, 120.6


@pytest.fixture(scope="module")
def pictures():
    """(the part: the astronaut's face, 64x64, no symmetry; a 320x240 background of coffee)."""
    astronaut, coffee = photographs()
    return astronaut[80:144, 200:264].copy(), cv2.resize(coffee, (320, 240))


@pytest.fixture(scope="module")
def served(tmp_path_factory, pictures):
    """A client of a server whose bank holds the part, found at any angle and at scales 0.8-1.25."""
    part, _ = pictures
    with running_server(tmp_path_factory.mktemp("data")) as (_, _, running):
        with FeatureMapClient(f"127.0.0.1:{running.port}", timeout=60) as client:
            client.create_template(part, "part", angle_range=(-180, 180), scale_range=(0.8, 1.25))
            yield client, running


def pasted(background: np.ndarray, part: np.ndarray, angle: float = ANGLE, scale: float = SCALE,
           cx: float = CX, cy: float = CY) -> np.ndarray:
    return np.clip(place(background, part, angle, scale, cx, cy), 0, 255).astype(np.uint8)


def window_centre(feature_map, row: int, col: int) -> tuple[float, float]:
    """The frame position of the centre of map pixel (row, col)'s window, by the map's own placement."""
    return (feature_map.origin_x + col * feature_map.stride + (feature_map.window_width - 1) / 2.0,
            feature_map.origin_y + row * feature_map.stride + (feature_map.window_height - 1) / 2.0)


def matched(served, pictures):
    """The part pasted at its pose over the background, matched with maps: (frame, result, its one peak)."""
    client, _ = served
    part, background = pictures
    frame = pasted(background, part)
    result = client.match(frame, templates="part", maps="float32")
    (peak,) = result.peaks
    return frame, result, peak


def test_a_pose_template_s_map_is_its_template_at_the_pose(served, pictures):
    frame, result, peak = matched(served, pictures)
    assert math.hypot(peak.cx - CX, peak.cy - CY) < 0.5 and angle_error(peak.angle, ANGLE) < 0.5
    feature_map = result.maps[NAME]
    # The wire says what the map is: the pose's angle and scale, its window the turned, scaled canvas.
    assert feature_map.angle == pytest.approx(peak.angle, abs=1e-4)
    assert feature_map.template_scale == pytest.approx(peak.scale, abs=1e-5) and feature_map.turned
    window = turned_canvas(*resized_size(64, 64, feature_map.template_scale), feature_map.angle)
    assert feature_map.window == window and window[0] > 64 * SCALE
    assert feature_map.origin == (0, 0)  # 'valid': the map starts at the frame's corner
    assert feature_map.scores.shape == (240 - window[1] + 1, 320 - window[0] + 1)
    # Its best window is centred on the pose, and scores it as the pose's own template would.
    row, col = np.unravel_index(np.argmax(feature_map.scores), feature_map.scores.shape)
    centre = window_centre(feature_map, row, col)
    assert math.hypot(centre[0] - peak.cx, centre[1] - peak.cy) <= 1.5
    assert feature_map.scores[row, col] > 0.9
    # What a server before this sent, the unturned template's map, is cold there.
    unturned = Matcher([pictures[0]])(frame)[0]
    assert unturned[round(peak.cy - 31.5), round(peak.cx - 31.5)] < 0.5 and unturned.max() < 0.6


def test_a_pose_map_is_placed_by_its_window_under_padding_and_stride(served, pictures):
    client, _ = served
    part, background = pictures
    result = client.match(pasted(background, part), templates="part", maps="float32", padding="same", stride=2)
    (peak,) = result.peaks
    feature_map = result.maps[NAME]
    width, height = feature_map.window
    assert (width, height) == turned_canvas(*resized_size(64, 64, feature_map.template_scale), feature_map.angle)
    # 'same' centres each window on its position: the origin is half the turned window, not half the template.
    assert feature_map.origin == (-(width // 2), -(height // 2)) and feature_map.stride == 2
    assert feature_map.scores.shape == ((240 + 1) // 2, (320 + 1) // 2)
    row, col = np.unravel_index(np.argmax(feature_map.scores), feature_map.scores.shape)
    centre = window_centre(feature_map, row, col)
    assert math.hypot(centre[0] - peak.cx, centre[1] - peak.cy) <= 1.5 + math.sqrt(2)  # a stride-2 grid
    assert feature_map.scores[row, col] > 0.8


def test_without_a_pose_the_map_is_the_unturned_template_s(served, pictures):
    client, _ = served
    part, background = pictures
    result = client.match(background, templates="part", maps="float32")
    assert result.peaks == []
    feature_map = result.maps[NAME]
    assert (feature_map.angle, feature_map.template_scale, feature_map.turned) == (0.0, 1.0, False)
    assert feature_map.window == (64, 64) and feature_map.origin == (0, 0)
    assert np.array_equal(feature_map.scores, Matcher([part])(background)[0])


def test_a_stream_s_maps_follow_its_poses_beside_plain_templates(served, pictures):
    client, _ = served
    part, background = pictures
    client.create_template(background[10:40, 20:60].copy(), "plain", replace=True)
    client.create_template(background[150:180, 240:280].copy(), "listed", angles=[30], replace=True)
    truths = [(-35.0 + 40 * i, 1.0 + 0.05 * i, 150.0 + 6.5 * i, 115.0 + 4.2 * i) for i in range(3)]
    frames = [pasted(background, part, *truth) for truth in truths]
    results = list(client.stream(frames, templates=["plain", "part", "listed"], maps="float16"))
    for result, (angle, _, _, _) in zip(results, truths, strict=True):
        assert list(result.maps) == ["templates/plain", NAME, "templates/listed"]  # the config's order
        pose = next(p for p in result.peaks if p.template == NAME)
        assert angle_error(pose.angle, angle) < 0.5
        feature_map = result.maps[NAME]
        assert feature_map.angle == pytest.approx(pose.angle, abs=1e-4)
        assert feature_map.template_scale == pytest.approx(pose.scale, abs=1e-5)
        row, col = np.unravel_index(np.argmax(feature_map.scores), feature_map.scores.shape)
        centre = window_centre(feature_map, row, col)
        assert math.hypot(centre[0] - pose.cx, centre[1] - pose.cy) <= 1.5 and feature_map.scores[row, col] > 0.9
        # A plain template's map is its own; one with explicit angles only, its variant's, and says so.
        plain, listed = result.maps["templates/plain"], result.maps["templates/listed"]
        assert (plain.angle, plain.template_scale, plain.window) == (0.0, 1.0, (40, 30))
        assert (listed.angle, listed.template_scale, listed.window) == (30.0, 1.0, turned_canvas(40, 30, 30.0))


def test_the_turned_template_s_matcher_is_held_in_the_budget_and_not_kept(pictures):
    part, background = pictures
    frame = pasted(background, part)[:, :, None]
    template = StoredTemplate(id="part", image=part[:, :, None], mask=None, etag="1", angle_range=(-180.0, 180.0))
    prepared, budget = PreparedCache(), MemoryBudget(1 << 34)
    held = []  # what the budget held each time the engine asked whether to go on
    computed = compute(Plan((template,), False, MatchOptions(maps="float32")), prepared, frame, budget=budget,
                       cancelled=lambda: held.append(budget.used) or False)
    (peak,) = computed.peaks
    (placed,) = computed.maps
    assert placed.angle == peak.angle and placed.scale == peak.scale
    # The map's call came last (after the search): the turned variant's Matcher, its working and kept bytes.
    image, mask = make_variant(part[:, :, None], None, peak.scale, peak.angle)
    assert placed.window == (image.shape[1], image.shape[0])
    working, retained = Matcher([image], masks=[mask]).memory_estimate(frame.shape[:2])
    assert held[-1] == working + retained > 0 and budget.used == 0
    # A frame's own variant is not among the prepared Matchers, which are kept by variant (none here).
    assert prepared._matchers.keys() == []


def test_the_heatmap_of_a_pose_s_map_is_hot_at_the_pose(served, pictures):
    frame, result, peak = matched(served, pictures)
    feature_map = result.maps[NAME]
    row, col = np.unravel_index(np.argmax(feature_map.scores), feature_map.scores.shape)
    hottest = render.heatmap(feature_map.scores)[row, col]

    def hottest_at(drawn: np.ndarray) -> tuple[float, float]:
        """Where the best score's colour lies in a heatmap drawn opaque (the mean of its pixels)."""
        ys, xs = np.nonzero(np.all(drawn == hottest, axis=2))
        assert len(xs), "the best score's colour is not drawn"
        return float(xs.mean()), float(ys.mean())

    # Drawn opaque, the hottest colour lies on the pose's centre.
    bare = render.map_heatmap(frame, feature_map, alpha=1.0, legend=False)
    x, y = hottest_at(bare)
    assert math.hypot(x - peak.cx, y - peak.cy) <= 1.5
    # With the result's peaks, the pose's frame is drawn over that heat (white lines, anti-aliased: only
    # ever lighter), the heat left as it is elsewhere; its x axis starts at the centre.
    heat = render.map_heatmap(frame, feature_map, result.peaks, alpha=1.0, legend=False)
    over = np.any(heat != bare, axis=2)
    assert np.all(heat[over] >= bare[over]) and over[round(peak.cy), round(peak.cx)]
    # Placed by the template's own size instead (a window guessed from the peak: a server before the
    # window's size), the heat would miss the pose by half the difference of the windows.
    guessed = dataclasses.replace(feature_map, window_width=0, window_height=0)
    x, y = hottest_at(render.map_heatmap(frame, guessed, result.peaks, alpha=1.0, legend=False))
    assert math.hypot(x - peak.cx, y - peak.cy) > 10
    with_legend = render.map_heatmap(frame, feature_map, result.peaks)
    assert with_legend.shape[1] > frame.shape[1]


def test_the_map_fields_are_additive_and_an_old_server_s_map_reads_as_unturned():
    numbers = {f.name: f.number for f in pb.FeatureMap.DESCRIPTOR.fields}
    assert numbers == {"template": 1, "height": 2, "width": 3, "encoding": 4, "data": 5, "scale": 6, "offset": 7,
                       "origin_x": 8, "origin_y": 9, "stride": 10, "angle": 11, "template_scale": 12,
                       "window_width": 13, "window_height": 14}
    data = np.arange(6, dtype="<f4").tobytes()
    old = pb.FeatureMap(template=NAME, height=2, width=3, encoding=pb.MAP_ENCODING_FLOAT32, data=data, scale=1.0,
                        origin_x=-2, origin_y=-1, stride=1)
    read = _feature_map(pb.FeatureMap.FromString(old.SerializeToString()))
    assert (read.angle, read.template_scale, read.window, read.turned) == (0.0, 1.0, (0, 0), False)
    # The server's encoder writes them (scale 1 as the default 0, which reads as 1).
    for template_scale in (1.0, 1.25):
        entry = wire.EncodedMap(template=NAME, height=2, width=3, encoding=pb.MAP_ENCODING_FLOAT32,
                                data=memoryview(data), angle=-42.5, template_scale=template_scale, window_width=91,
                                window_height=77)
        (message,) = pb.MatchResponse.FromString(
            wire.response_bytes(pb.MatchResponse, pb.FrameResult(sequence=1), [entry])).result.maps
        assert message.template_scale == (0.0 if template_scale == 1.0 else template_scale)
        read = _feature_map(message)
        assert (read.angle, read.template_scale, read.window) == (-42.5, template_scale, (91, 77))
        assert read.origin == (0, 0) and read.scores.shape == (2, 3)
