"""atheris harness: coverage-guided fuzzing of image decoding (header parsing, raw checks, OpenCV).

Run by tests/service/test_fuzz_atheris.py; by hand: python tests/service/fuzz_codec.py -runs=100000
"""

import sys

import atheris
import cv2  # noqa: F401  (C extensions and heavy modules load uninstrumented)
import numpy as np

from featuremap.service import errors  # noqa: F401  (loads the engine, uninstrumented)
from featuremap.v1 import featuremap_pb2 as pb

with atheris.instrument_imports():
    from featuremap.service.pipeline import codec

PREFIXES = [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X"]


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        prefix = PREFIXES[fdp.ConsumeIntInRange(0, len(PREFIXES) - 1)]
        image = pb.Image(encoded=prefix + fdp.ConsumeBytes(fdp.remaining_bytes()))
    else:
        image = pb.Image(raw=pb.RawImage(height=fdp.ConsumeIntInRange(0, 300), width=fdp.ConsumeIntInRange(0, 300),
                                         channels=fdp.ConsumeIntInRange(0, 5), dtype=fdp.ConsumeIntInRange(0, 3),
                                         data=fdp.ConsumeBytes(fdp.remaining_bytes())))
    try:
        out = codec.decode_image(image, "fuzz", 512 * 512)
    except errors.ServiceError:
        return  # refused with a status: the expected outcome for garbage
    assert isinstance(out, np.ndarray) and out.ndim == 3
    # Decoded files have 1, 3 or 4 channels; a raw image has the channels it
    # declares (the engine refuses counts it cannot match).
    assert out.shape[2] in (1, 3, 4) or image.HasField("raw")
    assert out.shape[0] * out.shape[1] <= 512 * 512
    assert out.dtype in (np.uint8, np.float32)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
