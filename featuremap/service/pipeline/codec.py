"""The server's side of images and maps: frames and templates decoded within its limits, maps encoded.

Encoded images have their dimensions read from the file header and checked
against the pixel limit before anything is decoded, so a few kilobytes that
claim to be a 100000 x 100000 PNG cost nothing. Raw images are views of the
request's bytes (``featuremap.wire``): nothing is copied or scanned here; the
engine checks values (NaN, channels) once, when it matches.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb

from ..engine import to_float16
from ..errors import InvalidArgument, LimitExceeded

_HALF_MAX = 65504.0


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidArgument("PNG header is truncated or corrupt")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_frame(data: bytes) -> int:
    """Where a JPEG's start-of-frame segment begins (its size and component count are in it)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise InvalidArgument("JPEG header is corrupt")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        # Start-of-frame markers (all but DHT, JPG and DAC) carry the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                break
            return i
        i += 2 + length
    raise InvalidArgument("JPEG header is truncated or corrupt: no frame size found")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = _jpeg_frame(data)
    height, width = struct.unpack(">HH", data[i + 5:i + 9])
    return width, height


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise InvalidArgument("WebP header is truncated or corrupt")


def encoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of a PNG, JPEG or WebP file, without decoding it."""
    size_of = {"png": _png_size, "jpeg": _jpeg_size, "webp": _webp_size}.get(wire.encoded_format(data) or "")
    if size_of is not None:
        return size_of(data)
    raise InvalidArgument("encoded image is not PNG, JPEG or WebP: send one of those, or raw pixels")


def _encoded_channels(data: bytes) -> int:
    """Channels a PNG, JPEG or WebP decodes to (OpenCV, unchanged), from its header; 4 when unsure."""
    kind = wire.encoded_format(data)
    if kind == "png" and len(data) > 25:
        return {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}.get(data[25], 4)  # IHDR colour type
    if kind == "jpeg":
        i = _jpeg_frame(data)
        return 1 if i + 9 < len(data) and data[i + 9] == 1 else 3  # the frame's component count
    if kind == "webp":
        return 4 if data[12:16] == b"VP8X" and len(data) > 20 and data[20] & 0x10 else 3
    return 4


def held_bytes(image: pb.Image, max_pixels: int, what: str = "frame", limit_name: str = "max_frame_pixels") -> int:
    """Bytes a frame holds from arrival to answer: its encoded bytes and its decoded pixels.

    From the header alone (nothing is decoded), after the pixel limit is
    checked: the channels the header says, of 4 bytes each for a 16-bit PNG
    (kept as float32), else 1. A raw frame is its own bytes (decoding is a view).
    """
    kind = image.WhichOneof("content")
    if kind == "raw":
        _check_pixels(image.raw.width, image.raw.height, max_pixels, what, limit_name)
        return len(image.raw.data)
    if kind != "encoded":
        return 0
    data = image.encoded
    width, height = encoded_size(data)
    _check_pixels(width, height, max_pixels, what, limit_name)
    deep = wire.encoded_format(data) == "png" and len(data) > 24 and data[24] == 16
    return len(data) + width * height * _encoded_channels(data) * (4 if deep else 1)


def _check_pixels(width: int, height: int, max_pixels: int, what: str, limit_name: str) -> None:
    if width < 1 or height < 1:
        raise InvalidArgument(f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise LimitExceeded(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} ({limit_name})"
        )


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) a JPEG has, counted from its markers without decoding.

    A progressive JPEG decodes every scan over the whole image: a small file
    that repeats one scan thousands of times costs CPU-minutes. Baseline
    files have one scan, normal progressive ones about ten.
    """
    scans, i, size = 0, 2, len(data)
    while i + 4 <= size:
        if data[i] != 0xFF:
            i = data.find(b"\xff", i)  # inside entropy-coded data: on to the next marker
            if i < 0:
                break
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            i += 2  # stuffed byte, restart markers: no length
            continue
        if marker == 0xD9:
            break  # end of image
        length = (data[i + 2] << 8) | data[i + 3]
        if marker == 0xDA:
            scans += 1
        i += 2 + length
    return scans


def decode_image(image: pb.Image, what: str, max_pixels: int, limit_name: str = "max_pixels", *,
                 max_jpeg_scans: int | None = None) -> np.ndarray:
    """A proto Image as an HxWxC array (uint8 or float32; raw images are uncopied, read-only views).

    Raises
    ------
    InvalidArgument
        Missing, malformed or corrupt images.
    LimitExceeded
        More pixels than ``max_pixels``, checked before any decoding.
    """
    kind = image.WhichOneof("content")
    if kind is None:
        raise InvalidArgument(f"{what} has no image: set raw or encoded")
    if kind == "raw":
        _check_pixels(image.raw.width, image.raw.height, max_pixels, what, limit_name)
        try:
            return wire.raw_array(image.raw, what)
        except wire.WireError as error:
            raise InvalidArgument(str(error)) from None
    data = image.encoded
    width, height = encoded_size(data)
    _check_pixels(width, height, max_pixels, what, limit_name)
    if max_jpeg_scans is not None and wire.encoded_format(data) == "jpeg":
        scans = jpeg_scans(data)
        if scans > max_jpeg_scans:
            raise LimitExceeded(f"{what} is a JPEG of {scans} scans, over the limit of {max_jpeg_scans} "
                                "(max_jpeg_scans): re-encode it (baseline JPEG has one scan)")
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InvalidArgument(f"{what} could not be decoded: the file is corrupt or truncated")
    if array.dtype == np.uint16:  # 16-bit PNG: keep the 0..255 scale of 8-bit images
        array = (array / np.float32(257.0)).astype(np.float32)
    elif array.dtype != np.uint8:
        raise InvalidArgument(f"{what} decodes to {array.dtype}: send 8- or 16-bit images")
    return array[:, :, None] if array.ndim == 2 else array


def split_alpha(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A BGRA template as BGR, its alpha the mask (unless a mask was given: an explicit mask wins).

    A logo with transparent corners is matched on its opaque pixels only: a
    pixel counts where its alpha is at least half (8- and 16-bit alike, both
    on the 0..255 scale here); a fully opaque alpha adds no mask. Other
    layouts are returned as they are.

    Raises
    ------
    InvalidArgument
        An alpha with no pixel at least half opaque: nothing would be matched.
    """
    if image.ndim != 3 or image.shape[2] != 4:
        return image, mask
    colour, alpha = np.ascontiguousarray(image[:, :, :3]), image[:, :, 3]
    if mask is None:
        keep = alpha >= 127.5
        if not keep.any():
            raise InvalidArgument("template image is transparent everywhere (its alpha channel): nothing to match")
        if not keep.all():
            mask = keep.astype(np.uint8)[:, :, None]
    return colour, mask


def encode_map(score_map: np.ndarray, encoding: str) -> tuple[memoryview, float, float]:
    """(data, scale, offset) of a float32 map in a map encoding (``wire.MAP_ENCODINGS``); score = value * scale + offset.

    ``data`` is a view of a fresh array, not a copy: the response encoder
    writes it straight into the response.
    """
    if encoding == "float32":
        return _bytes_view(np.ascontiguousarray(score_map, "<f4")), 1.0, 0.0
    if encoding == "float16":
        peak = max(float(score_map.max()), -float(score_map.min())) if score_map.size else 0.0
        scale = 1.0 if peak <= _HALF_MAX else peak / _HALF_MAX
        values = score_map if scale == 1.0 else score_map / np.float32(scale)
        return _bytes_view(to_float16(values)), scale, 0.0
    low, high = float(score_map.min()), float(score_map.max())
    scale = (high - low) / 255.0 if high > low else 1.0
    # In float64: the span of a map near float32's limits overflows float32.
    values = np.rint((score_map.astype(np.float64) - low) / scale)
    return _bytes_view(np.clip(values, 0, 255).astype(np.uint8)), scale, low


def _bytes_view(array: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(array)).cast("B")
