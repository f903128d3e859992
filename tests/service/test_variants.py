"""Templates that match across scale and rotation, over real gRPC."""

import math

import cv2
import grpc
import numpy as np
import pytest

from featuremap.service.pipeline.codec import decode_image
from featuremap.wire import image_message as raw_image
from featuremap.service.store.variants import make_variant
from featuremap.v1 import featuremap_pb2 as pb

from service_helpers import frame_message, running_server


def textured(rng, height, width, sigma=1.5):
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width), dtype=np.uint8), (0, 0), sigma)


def paste_transformed(scene, obj, scale, angle, centre):
    """Paste ``obj`` resized by ``scale`` and rotated by ``angle`` degrees, centred at ``centre``."""
    h, w = obj.shape
    small = cv2.resize(obj, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    canvas = max(sh, sw) * 2
    big = np.zeros((canvas, canvas), np.uint8)
    cover = np.zeros((canvas, canvas), np.uint8)
    y0, x0 = (canvas - sh) // 2, (canvas - sw) // 2
    big[y0:y0 + sh, x0:x0 + sw] = small
    cover[y0:y0 + sh, x0:x0 + sw] = 1
    rotation = cv2.getRotationMatrix2D(((canvas - 1) / 2, (canvas - 1) / 2), angle, 1.0)
    big = cv2.warpAffine(big, rotation, (canvas, canvas), flags=cv2.INTER_LINEAR)
    cover = cv2.warpAffine(cover, rotation, (canvas, canvas), flags=cv2.INTER_NEAREST)
    top, left = centre[1] - canvas // 2, centre[0] - canvas // 2
    region = scene[top:top + canvas, left:left + canvas]
    region[cover > 0] = big[cover > 0]
    return scene


SCALES = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2]
ANGLES = [-30, -20, -10, 0, 10, 20, 30]


def test_an_object_scaled_and_turned_is_found_with_its_scale_and_angle(server):
    stub, _, _ = server
    rng = np.random.default_rng(7)
    obj = textured(rng, 48, 48, sigma=2.0)
    scene = textured(rng, 240, 320)
    centre = (200, 120)
    paste_transformed(scene, obj, 0.7, 20, centre)
    stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(obj), scales=SCALES,
                                                                      angles=ANGLES), template_id="obj"))
    result = stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["obj"]), frame=frame_message(scene))).result
    (peak,) = result.peaks
    assert abs(peak.scale - 0.7) <= 0.1 + 1e-6 and abs(peak.angle - 20) <= 10
    found_centre = (peak.x + peak.width / 2, peak.y + peak.height / 2)
    assert math.dist(found_centre, centre) <= 3, (found_centre, centre, peak)
    assert peak.score > 0.8


def test_rotated_corners_are_masked_out(server):
    stub, _, _ = server
    rng = np.random.default_rng(8)
    obj = textured(rng, 40, 40, sigma=2.0)
    variant, mask = make_variant(obj[:, :, None], None, 1.0, 45)
    assert mask is not None and mask[0, 0] == 0 and mask[mask.shape[0] // 2, mask.shape[1] // 2] == 1
    # The 45-degree object on a bright background (geometry is the test
    # above's business: here the object is the variant itself). If the black
    # corners of the variant counted, they would drag the score down.
    scene = np.clip(textured(rng, 200, 200).astype(int) + 120, 0, 255).astype(np.uint8)
    top, left = 70, 60
    region = scene[top:top + mask.shape[0], left:left + mask.shape[1]]
    region[mask > 0] = variant[:, :, 0][mask > 0]
    stub.CreateTemplate(pb.CreateTemplateRequest(template=pb.Template(image=raw_image(obj), angles=[45]),
                                                 template_id="turned"))
    (peak,) = stub.Match(pb.MatchRequest(config=pb.MatchConfig(templates=["turned"]),
                                         frame=frame_message(scene))).result.peaks
    # The box is the template's (40x40) before rotation, turned by 45 degrees about the variant's centre.
    centre = (left + (mask.shape[1] - 1) / 2, top + (mask.shape[0] - 1) / 2)
    assert (peak.cx, peak.cy, peak.angle) == (*centre, 45) and peak.score > 0.999
    assert (peak.width, peak.height) == (40, 40) and (peak.x, peak.y) == (centre[0] - 19.5, centre[1] - 19.5)
    unmasked = cv2.matchTemplate(scene, variant[:, :, 0], cv2.TM_CCOEFF_NORMED)
    assert unmasked[top, left] < 0.9  # what the corners would have cost


def test_variants_are_stored_and_validated(tmp_path):
    data = tmp_path / "data"
    image = textured(np.random.default_rng(1), 30, 30)
    with running_server(data) as (stub, _, _):
        created = stub.CreateTemplate(pb.CreateTemplateRequest(
            template=pb.Template(image=raw_image(image), scales=[0.5, 1], angles=[-15, 15]), template_id="v")).template
        assert list(created.scales) == [0.5, 1] and list(created.angles) == [-15, 15]
        for template, message in (
            (pb.Template(image=raw_image(image), scales=[0.0]), "scales must be between"),
            (pb.Template(image=raw_image(image), angles=list(range(20))), "at most 16"),
            (pb.Template(image=raw_image(image), scales=[0.06]), "smaller than 3 pixels"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.CreateTemplate(pb.CreateTemplateRequest(template=template))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in caught.value.details()
    with running_server(data) as (stub, _, _):
        got = stub.GetTemplate(pb.GetTemplateRequest(name="templates/v")).template
        assert list(got.scales) == [0.5, 1] and list(got.angles) == [-15, 15]
        assert np.array_equal(decode_image(got.image, "t", 10**6)[:, :, 0], image)


def test_a_bank_from_before_variants_still_opens(tmp_path):
    import sqlite3

    from featuremap.service.store.sqlite_store import SQLiteStore as Store

    path = tmp_path / "bank.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE templates (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
               "display_name TEXT NOT NULL, labels TEXT NOT NULL, pixels BLOB NOT NULL, shape TEXT NOT NULL, "
               "dtype TEXT NOT NULL, mask BLOB, mask_dtype TEXT, create_time REAL NOT NULL, etag TEXT NOT NULL)")
    db.execute("INSERT INTO templates (id, display_name, labels, pixels, shape, dtype, create_time, etag) "
               "VALUES ('old', '', '{}', ?, '[2, 2, 1]', '|u1', 1.0, 'e')", (bytes(4),))
    db.commit()
    db.close()
    (old,) = Store(path).load()
    assert (old.id, old.scales, old.angles, old.texture_threshold) == ("old", (1.0,), (0.0,), 0.0)
    # The bank calibrates what the row predates: a flat template is as plain as any.
    from featuremap.service.store.bank import Bank

    assert Bank(Store(path), max_templates=10).get("templates/old").texture_threshold == 0.9999


def test_a_bank_row_that_cannot_be_calibrated_keeps_no_threshold_and_the_bank_opens(tmp_path, caplog):
    import sqlite3

    from featuremap.service.store.bank import Bank
    from featuremap.service.store.sqlite_store import SQLiteStore as Store

    path = tmp_path / "bank.db"
    Store(path).close()  # today's schema
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(templates)")]
    assert "texture_threshold" in columns
    # Written before templates carried a threshold (0), with a mask today's checks refuse (NaN).
    db.execute("INSERT INTO templates (id, display_name, labels, pixels, shape, dtype, mask, mask_dtype, create_time, "
               "etag) VALUES ('odd', '', '{}', ?, '[4, 4, 1]', '|u1', ?, '<f4', 1.0, 'e')",
               (bytes(range(16)), np.full(16, np.nan, np.float32).tobytes()))
    db.commit()
    db.close()
    with caplog.at_level("WARNING", logger="featuremap.bank"):
        bank = Bank(Store(path), max_templates=10)
    assert bank.get("templates/odd").texture_threshold == 0.0
    assert "template odd keeps no texture threshold" in caplog.text
