"""The engine's bounded caches: entries and bytes, least recently used out."""

import cv2
import numpy as np
import pytest

from featuremap.service.engine import Kept, PoseSearch
from featuremap.service.engine.pose import search as pose_module


def test_kept_is_bounded_in_entries_and_bytes_least_recently_used_out():
    kept = Kept(10, max_bytes=100, size=len)
    for key in "abcd":
        kept.get(key, lambda: b"x" * 30)
    assert kept.keys() == ["b", "c", "d"] and kept.nbytes() == 90  # "a" went to make room
    kept.get("b", lambda: pytest.fail("kept: not made again"))  # used: now the most recent
    kept.get("e", lambda: b"y" * 30)
    assert kept.keys() == ["d", "b", "e"] and kept.nbytes() == 90
    kept.get("big", lambda: b"z" * 500)  # larger than the bound alone: kept (its caller holds it), nothing else
    assert kept.keys() == ["big"] and kept.nbytes() == 500
    kept.discard("big")
    assert kept.nbytes() == 0 and len(kept) == 0
    with pytest.raises(ValueError):
        Kept(3, max_bytes=10)


def test_tracking_a_drifting_pose_keeps_the_search_within_its_variant_bytes(monkeypatch):
    # Every frame fits a new angle and scale, and each makes variants of its own: bounded in bytes.
    monkeypatch.setattr(pose_module, "VARIANT_BYTES_KEPT", 2 << 20)
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (160, 200), dtype=np.uint8)
    template = scene[40:88, 60:108].copy()
    search = PoseSearch(template, angles=(-40, 40), scales=(0.8, 1.25))
    poses = search.search(scene)
    centre = (84.0, 64.0)
    for i in range(30):
        matrix = cv2.getRotationMatrix2D(centre, 0.9 * i, 1.0 + 0.005 * i)
        frame = cv2.warpAffine(scene, matrix, (200, 160), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        poses = search.track(frame, poses)
        assert search._variants.nbytes() <= 2 << 20
    assert search.retained_bytes() >= search._variants.nbytes() > 0
