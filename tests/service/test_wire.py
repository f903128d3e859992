"""featuremap.wire: the one layer that spells the wire, against the generated messages."""

import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

from featuremap import wire
from featuremap.client import client as client_module
from featuremap.service.pipeline import codec
from featuremap.service import engine
from featuremap.v1 import featuremap_pb2 as pb


def test_enum_tables_come_from_the_proto_and_agree_with_the_engine_and_the_client():
    assert wire.METHODS == {"sqdiff": 1, "sqdiff_normed": 2, "ccorr": 3, "ccorr_normed": 4, "ccoeff": 5,
                            "ccoeff_normed": 6, "ssim": 7}
    assert tuple(wire.METHODS) == engine.METHODS
    assert tuple(wire.PADDINGS) == engine.PADDINGS
    assert set(wire.BORDERS) == set(engine.BORDERS)
    assert wire.LOWER_IS_BETTER == engine.LOWER_IS_BETTER
    assert set(wire.MAP_ENCODINGS) == {"float32", "float16", "uint8"}
    assert get_args(client_module.Method) == tuple(wire.METHODS)
    assert get_args(client_module.Padding) == tuple(wire.PADDINGS)
    assert get_args(client_module.Border) == tuple(wire.BORDERS)
    assert get_args(client_module.MapEncoding) == tuple(wire.MAP_ENCODINGS)
    assert wire.name_of(wire.METHODS, 0, "method", wire.DEFAULT_METHOD) == "ccoeff_normed"
    with pytest.raises(wire.WireError, match="unknown method 99"):
        wire.name_of(wire.METHODS, 99, "method")


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_raw_images_round_trip(dtype, shape):
    array = (np.arange(np.prod(shape)) % 251).astype(dtype).reshape(shape)
    message = pb.Image.FromString(wire.image_message(array).SerializeToString())
    back = wire.raw_array(message.raw)
    assert back.dtype == dtype and back.shape == (5, 7, shape[2] if len(shape) == 3 else 1)
    assert np.array_equal(back.reshape(shape), array)
    assert not back.flags.writeable  # a view of the message's bytes, never copied


def test_raw_images_that_lie_about_their_size_are_refused():
    raw = pb.RawImage(height=4, width=4, channels=1, dtype=pb.DATA_TYPE_FLOAT32, data=b"\0" * 63)
    with pytest.raises(wire.WireError, match="63 bytes of data, but 4x4x1 float32 needs 64"):
        wire.raw_array(raw)
    with pytest.raises(wire.WireError, match="dtype 7"):
        wire.raw_array(pb.RawImage(height=1, width=1, channels=1, dtype=7, data=b"\0"))


@pytest.mark.parametrize("response", [pb.MatchResponse, pb.StreamMatchResponse])
@pytest.mark.parametrize("encoding", ["float32", "float16", "uint8"])
def test_the_response_encoder_writes_what_the_generated_messages_read(response, encoding):
    rng = np.random.default_rng(1)
    maps = [rng.normal(0, 1, (9, 13)).astype(np.float32), (rng.random((4, 6)) * 1e6).astype(np.float32)]
    result = pb.FrameResult(sequence=7, peaks=[pb.Peak(template="templates/a", x=3, y=4, width=5, height=6,
                                                       score=0.9, scale=1.0)],
                            timing=pb.Timing(decode_ms=1.5, compute_ms=2.5, encode_ms=0.5), skipped_sequences=[5, 6])
    result.capture_time.FromNanoseconds(1_700_000_000_123_456_789)
    encoded, expected = [], pb.FrameResult()
    expected.CopyFrom(result)
    for index, score_map in enumerate(maps):
        data, scale, offset = codec.encode_map(score_map, encoding)
        fields = dict(template=f"templates/m{index}", height=score_map.shape[0], width=score_map.shape[1],
                      encoding=wire.MAP_ENCODINGS[encoding], scale=scale, offset=offset, origin_x=-index,
                      origin_y=-2 * index, stride=index + 1)
        encoded.append(wire.EncodedMap(data=data, **fields))
        expected.maps.append(pb.FeatureMap(data=bytes(data), **fields))
    parsed = response.FromString(wire.response_bytes(response, result, encoded))
    assert parsed == response(result=expected)
    for feature_map, score_map in zip(parsed.result.maps, maps, strict=True):
        decoded = wire.map_array(feature_map)
        tolerance = {"float32": 0.0, "float16": 1e-3, "uint8": 1 / 255 + 1e-6}[encoding]
        span = float(score_map.max() - score_map.min()) if encoding == "uint8" else float(np.abs(score_map).max())
        assert np.abs(decoded - score_map).max() <= tolerance * span


def test_no_maps_is_the_plain_serialisation():
    result = pb.FrameResult(sequence=3, peaks=[pb.Peak(template="templates/a", score=1.0)])
    assert wire.response_bytes(pb.MatchResponse, result) == pb.MatchResponse(result=result).SerializeToString()


def test_the_client_library_loads_neither_the_server_nor_numba():
    code = ("import sys\n"
            "import featuremap.client, featuremap.client.video, featuremap.client.render\n"
            "loaded = [m for m in sys.modules if m == 'numba' or m.startswith(('numba.', 'featuremap.service'))]\n"
            "assert not loaded, loaded\n"
            "assert 'featuremap.wire' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
