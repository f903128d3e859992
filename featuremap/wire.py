"""featuremap.wire: numpy arrays and names on one side, the v1 messages on the other.

The one layer that knows how the wire spells things, shared by the client
and the server (it imports nothing of featuremap but the generated stubs):

- enum tables (name <-> number) read from the proto's descriptors, with the
  defaults the proto documents for the UNSPECIFIED values;
- raw images <-> arrays, feature maps -> arrays;
- :class:`Peak`, the one type of a template found in a frame, from the
  server's frame path to the client, and its message both ways;
- the one encoder of ``MatchResponse``/``StreamMatchResponse`` bytes, which
  writes the maps' data straight into the response (field numbers read from
  the descriptors, so a renumbered proto cannot break it silently).

Converting a float32 map *into* an encoding (FLOAT16 with a fast kernel,
UINT8 quantisation) is the server's work; this module takes the converted
bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from featuremap.v1 import featuremap_pb2 as pb


class WireError(ValueError):
    """A message that does not describe what it claims (an image of the wrong size, an unknown enum value)."""


@dataclass(frozen=True)
class Peak:
    """A template found in a frame: its box's top-left corner (x, y), size, score and centre (cx, cy).

    The one type of a result from the server's frame path to the client (the
    engine's own are a map's maximum, ``engine.Peak``, and a pose,
    ``engine.Pose``; the frame path makes this of them). For a template with
    an angle or scale range (pose search), (x, y, width, height) is the scaled
    template's box before rotation; it turns by ``angle`` (degrees,
    counter-clockwise as displayed) about (cx, cy). ``visible`` is the share
    of that box inside the frame (under 1 for a part clipped at the frame's
    edge, 1 otherwise); ``ambiguity`` a pose's 180-degree twin's score over its
    own (near 1: the angle may be off by 180; 0 where not measured). The
    fields share the wire's ``Peak`` message's names, so a field added to both
    travels (:func:`peak_message`, :func:`peak_of`).
    """

    template: str
    x: float
    y: float
    width: int
    height: int
    score: float
    scale: float = 1.0
    angle: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    visible: float = 1.0
    ambiguity: float = 0.0

    @classmethod
    def centred(cls, template: str, cx: float, cy: float, width: float, height: float, score: float,
                scale: float = 1.0, angle: float = 0.0, visible: float = 1.0, ambiguity: float = 0.0) -> Peak:
        """A peak whose box (``width`` x ``height``, before rotation by ``angle``) is centred on (cx, cy)."""
        return cls(template, cx - (width - 1.0) / 2.0, cy - (height - 1.0) / 2.0, max(1, round(width)),
                   max(1, round(height)), score, scale, angle, cx, cy, visible, ambiguity)


def peak_message(peak: Peak) -> pb.Peak:
    """A peak as the wire's message."""
    return pb.Peak(**{field.name: getattr(peak, field.name) for field in fields(Peak)})


def peak_of(message: pb.Peak) -> Peak:
    """The peak a message carries (a server before ``visible`` sends none: whole; before ``scale``, 0: 1)."""
    values = {field.name: getattr(message, field.name) for field in fields(Peak)}
    values["scale"] = values["scale"] or 1.0
    if not message.HasField("visible"):
        values["visible"] = 1.0
    return Peak(**values)


def _names(enum: EnumDescriptor, prefix: str) -> dict[str, int]:
    """{"ccoeff_normed": 6, ...}: the enum's values without prefix and UNSPECIFIED, lower case."""
    return {value.name[len(prefix):].lower(): value.number for value in enum.values if value.number != 0}


#: Method names, as the engine names them, and their wire numbers.
METHODS = cast("dict[str, pb.Method]", _names(pb.Method.DESCRIPTOR, "METHOD_"))
PADDINGS = cast("dict[str, pb.Padding]", _names(pb.Padding.DESCRIPTOR, "PADDING_"))
BORDERS = cast("dict[str, pb.Border]", _names(pb.Border.DESCRIPTOR, "BORDER_"))
MAP_ENCODINGS = cast("dict[str, pb.MapEncoding]", _names(pb.MapEncoding.DESCRIPTOR, "MAP_ENCODING_"))
#: What an UNSPECIFIED (0) value means, as the proto's comments say.
DEFAULT_METHOD, DEFAULT_PADDING, DEFAULT_BORDER = "ccoeff_normed", "valid", "constant"
#: Methods whose best match is the lowest score (the proto says "lower is better").
LOWER_IS_BETTER = frozenset({"sqdiff", "sqdiff_normed"})

_DTYPES: dict[int, np.dtype[Any]] = {pb.DATA_TYPE_UINT8: np.dtype(np.uint8), pb.DATA_TYPE_FLOAT32: np.dtype("<f4")}
_MAP_DTYPES: dict[int, np.dtype[Any]] = {MAP_ENCODINGS["float32"]: np.dtype("<f4"), MAP_ENCODINGS["float16"]: np.dtype("<f2"),
               MAP_ENCODINGS["uint8"]: np.dtype(np.uint8)}


def name_of(table: dict[str, Any], number: int, what: str, default: str | None = None) -> str | None:
    """The name of wire value ``number`` in ``table`` (``default`` for 0); WireError if unknown."""
    if number == 0:
        return default
    for name, value in table.items():
        if value == number:
            return name
    raise WireError(f"unknown {what} {number}: see the {what} enum in featuremap.proto")


# -- images ---------------------------------------------------------------------


def encoded_format(data: bytes) -> str | None:
    """"png", "jpeg" or "webp" by a file's magic bytes (the encodings ``Image.encoded`` takes); else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def image_message(array: np.ndarray) -> pb.Image:
    """An HxW or HxWxC array as a raw Image: uint8 stays uint8, anything else goes as float32."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"an image is HxW or HxWxC, got shape {array.shape}")
    dtype = pb.DATA_TYPE_UINT8 if array.dtype == np.uint8 else pb.DATA_TYPE_FLOAT32
    data = np.ascontiguousarray(array, _DTYPES[dtype]).tobytes()
    height, width, channels = array.shape
    return pb.Image(raw=pb.RawImage(height=height, width=width, channels=channels, dtype=dtype, data=data))


def raw_array(raw: pb.RawImage, what: str = "image") -> np.ndarray:
    """A RawImage as an HxWxC array viewing the message's bytes (read-only, uncopied).

    Raises
    ------
    WireError
        An unknown dtype, or data whose length is not height x width x
        channels x the dtype's size.
    """
    dtype = _DTYPES.get(raw.dtype)
    if dtype is None:
        raise WireError(f"{what} has dtype {raw.dtype}: use DATA_TYPE_UINT8 or DATA_TYPE_FLOAT32")
    expected = raw.height * raw.width * raw.channels * dtype.itemsize
    if len(raw.data) != expected:
        raise WireError(f"{what} has {len(raw.data)} bytes of data, but {raw.height}x{raw.width}x{raw.channels} "
                        f"{dtype.name} needs {expected}")
    return np.frombuffer(raw.data, dtype).reshape(raw.height, raw.width, raw.channels)


# -- feature maps ---------------------------------------------------------------


def map_array(feature_map: pb.FeatureMap) -> np.ndarray:
    """A FeatureMap's scores as a float32 (height, width) array (score = value * scale + offset)."""
    dtype = _MAP_DTYPES.get(feature_map.encoding)
    if dtype is None:
        raise WireError(f"feature map of {feature_map.template} has unknown encoding {feature_map.encoding}")
    expected = feature_map.height * feature_map.width * dtype.itemsize
    if len(feature_map.data) != expected:
        raise WireError(f"feature map of {feature_map.template} has {len(feature_map.data)} bytes, "
                        f"{feature_map.height}x{feature_map.width} needs {expected}")
    values: np.ndarray = np.frombuffer(feature_map.data, dtype).astype(np.float32)
    values = values.reshape(feature_map.height, feature_map.width)
    if feature_map.scale != 1.0 or feature_map.offset != 0.0:
        # In float64: near float32's limits the product overflows float32.
        limit = float(np.finfo(np.float32).max)
        restored = values.astype(np.float64) * feature_map.scale + feature_map.offset
        values = np.clip(restored, -limit, limit).astype(np.float32)
    return values


@dataclass(frozen=True)
class EncodedMap:
    """One ``FrameResult.maps`` entry whose data is already in its encoding.

    ``data`` is any buffer (a memoryview of a fresh array): the response
    encoder copies it once, into the response. ``angle`` and
    ``template_scale`` are the template's rotation and scale the map was drawn
    at, ``window_width`` and ``window_height`` the window each map pixel
    scores (0: unknown). The fields share the wire's ``FeatureMap``
    message's names, so a field added to both travels (:func:`_map_parts`).
    """

    template: str
    height: int
    width: int
    encoding: pb.MapEncoding
    data: memoryview
    scale: float = 1.0
    offset: float = 0.0
    origin_x: int = 0
    origin_y: int = 0
    stride: int = 1
    angle: float = 0.0
    template_scale: float = 1.0
    window_width: int = 0
    window_height: int = 0


# Protobuf's wire format for the one message whose size matters: maps are
# megabytes, and building them as protobuf objects and serialising them
# copied each map twice (~13 ms a frame for eight FLOAT16 VGA maps).
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tag(message: type[Message], field: str) -> bytes:
    """The key of a length-delimited field (message or bytes), its number read from the descriptor."""
    return _varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | 2)


_MAPS = _tag(pb.FrameResult, "maps")
_DATA = _tag(pb.FeatureMap, "data")


def _map_parts(entry: EncodedMap) -> list[bytes | memoryview]:
    """The wire bytes of one ``FrameResult.maps`` entry: its header fields, then its data, uncopied."""
    values = {field.name: getattr(entry, field.name) for field in fields(EncodedMap) if field.name != "data"}
    # Scale 1 goes as the field's default, 0, which reads as 1 (what a server before the field meant).
    values["template_scale"] = 0.0 if entry.template_scale == 1.0 else entry.template_scale
    head = pb.FeatureMap(**values).SerializeToString()
    data = memoryview(entry.data).cast("B")
    size = _varint(len(data))
    body = len(head) + len(_DATA) + len(size) + len(data)
    return [_MAPS, _varint(body), head, _DATA, size, data]


def response_bytes(response: type[Message], result: pb.FrameResult, maps: Sequence[EncodedMap] = ()) -> bytes:
    """A serialised ``response`` (MatchResponse or StreamMatchResponse) carrying ``result`` and ``maps``.

    Fields may come in any order on the wire, so the maps follow the rest of
    the FrameResult; the one copy of their data is the final join.
    """
    head = result.SerializeToString()
    parts = [part for entry in maps for part in _map_parts(entry)]
    size = len(head) + sum(len(part) for part in parts)
    tag = _tag(response, "result")
    return b"".join([tag, _varint(size), head, *parts])
