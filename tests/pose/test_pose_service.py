"""Pose templates through the product: stored ranges, Match and StreamMatch poses, the CLI."""

import json
import math
import sqlite3
import subprocess
import sys

import cv2
import numpy as np
import pytest

from featuremap.client import FeatureMapError
from featuremap.service.store.sqlite_store import SQLiteStore
from featuremap.service.store.templates import StoredTemplate, from_row, to_row

from scenes import angle_error, photographs, place

pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def pictures():
    astronaut, coffee = photographs()
    return astronaut[80:144, 200:264].copy(), cv2.resize(coffee, (640, 480))


def test_a_pose_template_is_found_at_its_sub_pixel_pose(client, pictures):
    c, _ = client
    face, background = pictures
    created = c.create_template(face, "face", angle_range=(-180, 180), scale_range=(0.8, 1.25))
    assert created.angle_range == (-180.0, 180.0) and created.scale_range == (0.8, 1.25)
    assert c.get_template("face").angle_range == (-180.0, 180.0)
    frame = np.clip(place(background, face, 123.4, 1.1, 301.3, 222.8), 0, 255).astype(np.uint8)
    (peak,) = c.match(frame, templates="face").peaks
    assert math.hypot(peak.cx - 301.3, peak.cy - 222.8) < 0.3 and angle_error(peak.angle, 123.4) < 0.3
    assert abs(peak.scale - 1.1) < 0.011 and peak.score > 0.95
    # The box is the scaled template's before rotation, centred on (cx, cy).
    assert (peak.width, peak.height) == (70, 70)
    assert peak.x == pytest.approx(peak.cx - (64 * peak.scale - 1) / 2, abs=1e-3)


def test_a_stream_tracks_a_moving_pose_and_sends_the_pose_s_map(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "face", angle_range=(-180, 180))
    truths = [(10.0 + 4 * i, 200.0 + 7.3 * i, 150.0 + 3.1 * i) for i in range(6)]
    frames = [np.clip(place(background, face, a, 1.0, x, y), 0, 255).astype(np.uint8) for a, x, y in truths]
    results = list(c.stream(frames, templates="face", maps="float16"))
    assert len(results) == len(truths)
    for result, (angle, cx, cy) in zip(results, truths, strict=True):
        (peak,) = result.peaks
        assert math.hypot(peak.cx - cx, peak.cy - cy) < 0.3 and angle_error(peak.angle, angle) < 0.3
        # The map sent for a pose template is its template's turned to the pose, over the whole frame
        # (tests/service/test_pose_heatmaps.py: what it scores).
        feature_map = result.maps["templates/face"]
        assert feature_map.angle == pytest.approx(peak.angle, abs=1e-4)
        assert feature_map.scores.shape == (480 - feature_map.window_height + 1, 640 - feature_map.window_width + 1)


def test_pose_settings_are_refused_with_the_reason(client, pictures):
    c, _ = client
    face, background = pictures
    cases = [
        (dict(angle_range=(30, -30)), "reversed"),
        (dict(angle_range=(-190, 0)), "within"),
        (dict(scale_range=(0.5, 9)), "within"),
        (dict(angle_range=(-10, 10), angles=[0, 10]), "not both"),
        (dict(scale_range=(0.1, 1)), "too small to rotate"),
    ]
    for fields, reason in cases:
        with pytest.raises(FeatureMapError) as caught:
            c.create_template(face, "bad", **fields)
        assert caught.value.code_name == "INVALID_ARGUMENT" and reason in caught.value.details, fields
    c.create_template(face, "face", angle_range=(-180, 180))
    with pytest.raises(FeatureMapError) as caught:
        c.match(background, templates="face", method="ccorr")
    assert caught.value.code_name == "INVALID_ARGUMENT" and "pose search" in caught.value.details
    # Nothing was stored by the refused calls, and the server still answers.
    assert [t.id for t in c.list_templates()] == ["face"]
    assert c.match(background, templates="face", threshold=0.99).peaks == []


def test_pose_poses_within_the_template_pixel_limit(tmp_path, pictures):
    from service_helpers import running_server
    from featuremap.client import FeatureMapClient

    face, _ = pictures
    with running_server(tmp_path / "data", max_template_pixels=91 * 91) as (_, _, running):
        with FeatureMapClient(f"127.0.0.1:{running.port}", timeout=30) as c:
            c.create_template(face, "ok", angle_range=(-180, 180))  # the diagonal (90.5 px) squared
            with pytest.raises(FeatureMapError) as caught:
                c.create_template(face, "big", angle_range=(-180, 180), scale_range=(1, 1.5))
            assert caught.value.code_name == "RESOURCE_EXHAUSTED" and "max_template_pixels" in caught.value.details


def test_ranges_survive_the_row_format_and_old_banks_read_without_them(tmp_path):
    image = np.zeros((16, 16, 1), np.uint8)
    template = StoredTemplate(id="t", image=image, mask=None, angle_range=(-90.0, 90.0), scale_range=(0.5, 2.0))
    back = from_row("t", 1, to_row(template))
    assert (back.angle_range, back.scale_range, back.posed) == ((-90.0, 90.0), (0.5, 2.0), True)
    # A bank written before templates had ranges (or variants): the columns are added, old rows read as plain.
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(str(path))
    old.execute("CREATE TABLE templates (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
                "display_name TEXT NOT NULL, labels TEXT NOT NULL, pixels BLOB NOT NULL, shape TEXT NOT NULL, "
                "dtype TEXT NOT NULL, mask BLOB, mask_dtype TEXT, create_time REAL NOT NULL, etag TEXT NOT NULL)")
    old.execute("INSERT INTO templates (id, display_name, labels, pixels, shape, dtype, create_time, etag) VALUES "
                "('old', '', '{}', ?, '[16, 16, 1]', '|u1', 1.0, 'e')", (image.tobytes(),))
    old.commit()
    old.close()
    store = SQLiteStore(path)
    (loaded,) = store.load()
    assert loaded.id == "old" and not loaded.posed and loaded.scales == (1.0,)
    store.add(template)
    assert {t.id: t.angle_range for t in store.load()} == {"old": None, "t": (-90.0, 90.0)}
    store.close()


def test_the_cli_adds_a_pose_template(tmp_path, client, pictures):
    _, running = client
    face, _ = pictures
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face)
    out = subprocess.run([sys.executable, "-m", "featuremap.client.cli", "templates", "add", str(path), "--id", "face",
                          "--angle-range", "-180,180", "--scale-range=0.75,1.33", "--address",
                          f"127.0.0.1:{running.port}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["angle_range"] == [-180.0, 180.0] and shown["scale_range"] == [0.75, 1.33]


def test_a_turned_peak_is_drawn_turned():
    from featuremap.client import Peak
    from featuremap.client.render import Palette, draw_peaks

    frame = np.zeros((200, 200), np.uint8)
    peak = Peak("templates/t", 60.0, 60.0, 80, 80, 0.9, 1.0, 45.0, 99.5, 99.5)
    drawn = draw_peaks(frame, [peak], palette=Palette())
    lit = drawn.any(axis=2)
    # A diamond: its corners lie on the axes through the centre, ~56 px out; the square's corners stay dark.
    assert lit[99, 99 + 55] and lit[99 - 55, 99] and not lit[61, 61] and not lit[138, 138]
    upright = draw_peaks(frame, [Peak("templates/t", 60.0, 60.0, 80, 80, 0.9, 1.0, 0.0, 99.5, 99.5)]).any(axis=2)
    assert upright[61, 61]


def test_peaks_come_in_the_config_s_template_order_with_pose_templates_among_them(client, pictures):
    c, _ = client
    face, background = pictures
    c.create_template(face, "posed", angle_range=(-180, 180))
    c.create_template(background[100:140, 200:240].copy(), "plain")
    frame = np.clip(place(background, face, 40.0, 1.0, 420.0, 300.0), 0, 255).astype(np.uint8)
    for names in (["posed", "plain"], ["plain", "posed"]):
        peaks = c.match(frame, templates=names).peaks
        assert [p.template for p in peaks] == [f"templates/{n}" for n in names]


def test_a_pose_grid_larger_than_the_frame_searches_the_poses_that_fit(client, pictures):
    c, _ = client
    face, background = pictures
    small = cv2.resize(background, (160, 120))
    # Scales up to 3: the largest poses (192 px) are larger than the frame; the ones that fit are searched.
    c.create_template(face, "grows", scale_range=(0.9, 3.0), angle_range=(-30, 30))
    frame = np.clip(place(small, face, 10.0, 1.0, 80.0, 60.0), 0, 255).astype(np.uint8)
    (peak,) = c.match(frame, templates="grows").peaks
    assert math.hypot(peak.cx - 80.0, peak.cy - 60.0) < 1.0 and abs(peak.scale - 1.0) < 0.05
    # No pose fits at all: INVALID_ARGUMENT, saying so (never INTERNAL).
    c.create_template(face, "huge", scale_range=(2.5, 3.0))
    with pytest.raises(FeatureMapError) as caught:
        c.match(frame, templates="huge")
    assert caught.value.code.name == "INVALID_ARGUMENT" and "no pose fits the frame" in str(caught.value)


@pytest.mark.parametrize("seed", range(12))
def test_no_pose_range_template_or_frame_size_ends_in_internal(client, seed):
    # A fuzz over pose ranges and sizes: every call is answered, or refused with a reason.
    c, _ = client
    rng = np.random.default_rng(seed)
    side = int(rng.integers(8, 48))
    template = rng.integers(0, 256, (side, int(rng.integers(8, 48))), dtype=np.uint8)
    low = float(rng.uniform(0.3, 2.5))
    scales = (low, low * float(rng.uniform(1.0, 3.0)))
    spread = float(rng.uniform(0, 360))
    angles = (-spread / 2, spread / 2)
    frame = rng.integers(0, 256, (int(rng.integers(8, 140)), int(rng.integers(8, 140))), dtype=np.uint8)
    try:
        c.create_template(template, f"fuzz{seed}", scale_range=scales, angle_range=angles)
        c.match(frame, templates=f"fuzz{seed}")
    except FeatureMapError as error:
        assert error.code.name in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"), (error.code, str(error))
