"""The fast float16 conversion gives numpy's result, bit for bit."""

import numpy as np

from featuremap.service.engine import to_float16


def test_matches_numpy_on_every_kind_of_value():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 6.1035156e-05,
                        5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1.0, -1.0, 0.33333334, 1e-45, -1e30],
                       np.float32)
    values = np.concatenate([bits.view(np.float32), special, rng.normal(0, 100, 100_000).astype(np.float32)])
    got = to_float16(values).view(np.uint16)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.isnan(got[nan].view(np.float16)).all()


def test_keeps_the_shape():
    maps = np.random.default_rng(1).random((3, 5, 7), dtype=np.float32)
    assert np.array_equal(to_float16(maps), maps.astype(np.float16))
