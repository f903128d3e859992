"""auto decides by a cost model calibrated on the machine: measured once, kept beside Numba's cache."""

import dataclasses
import json

import numpy as np
import pytest

from featuremap.service.engine import Matcher, calibrate
from featuremap.service.engine.calibration import cache_file, fit_spectral
from featuremap.service.engine.plan import CostModel, cost_model, use_cost_model


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    previous = cost_model()
    yield tmp_path
    use_cost_model(previous)


def test_calibration_is_measured_once_kept_and_reused(cache_dir):
    model = calibrate()
    (kept,) = cache_dir.glob("featuremap-cost-*.json")
    assert CostModel(**json.loads(kept.read_text())) == model
    assert all(np.isfinite(v) and v > 0 for v in dataclasses.astuple(model))
    assert cost_model() == model
    # A cached file is read, not measured again (a planted one wins).
    kept.write_text(json.dumps({"direct_scale": 3.0, "spectral_frame_scale": 0.5, "spectral_template_scale": 0.25}))
    assert calibrate() == CostModel(3.0, 0.5, 0.25) == cost_model()
    # A file of an older model's fields is measured afresh, not misread.
    kept.write_text(json.dumps({"direct_scale": 3.0, "spectral_scale": 0.5}))
    assert calibrate() == CostModel(**json.loads(kept.read_text())) != CostModel(3.0, 0.5, 0.25)
    # Another thread count has a file of its own.
    assert cache_file(threads=97) != kept


def test_a_changed_engine_is_calibrated_afresh(cache_dir, monkeypatch):
    from featuremap.service.engine import calibration

    before = cache_file()
    assert cache_file() == before  # the key is stable while nothing changes
    source = calibration._engine_source()
    assert b"def correlate_direct" in source  # the kernels' code is part of the key
    monkeypatch.setattr(calibration, "_engine_source", lambda: source + b"# a faster kernel")
    assert cache_file() != before


def test_auto_follows_the_cost_model(cache_dir):
    rng = np.random.default_rng(0)
    rng.random((120, 160))  # drawn as before, so the templates stay the same
    templates = [rng.random((24, 24)).astype(np.float32) for _ in range(4)]
    use_cost_model(CostModel(direct_scale=1e-6))  # direct made to look free
    assert set(Matcher(templates, method="ccorr").algorithms((120, 160)).values()) == {"direct"}
    use_cost_model(CostModel(direct_scale=1e6))  # and ruinous
    assert set(Matcher(templates, method="ccorr").algorithms((120, 160)).values()) == {"spectral"}


def test_another_compile_target_is_calibrated_afresh(cache_dir, monkeypatch):
    # The same CPU model compiled for an x86-64 level (an image's warm cache) runs other code.
    import numba

    before = cache_file()
    monkeypatch.setattr(numba.config, "CPU_NAME", "x86-64-v2")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert cache_file() != before


def test_the_spectral_fit_separates_the_frames_cost_from_the_templates():
    # Timings made from known factors (frame's part x 1.4 + templates' part x 0.5, as on a
    # 2-core AVX-512 VM) are fitted back exactly: one factor could not hold both a bank of 4
    # (mostly the frame's part) and one of 32 (mostly the templates').
    parts = [(4.0, 1.0), (4.0, 8.0), (9.0, 2.0), (4.0, 3.0)]
    frame_scale, template_scale = fit_spectral([(f, t, 1.4 * f + 0.5 * t) for f, t in parts])
    assert frame_scale == pytest.approx(1.4, rel=1e-9) and template_scale == pytest.approx(0.5, rel=1e-9)
    # Timings no positive pair fits (the bank of 32 measured faster than the bank of 4: noise)
    # fall back to one factor for both, never a negative cost.
    frame_scale, template_scale = fit_spectral([(4.0, 1.0, 10.0), (4.0, 8.0, 2.0)])
    assert frame_scale == template_scale == pytest.approx((10.0 / 5.0 * 2.0 / 12.0) ** 0.5)
