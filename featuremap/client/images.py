"""Images as a user has them, made ready to send: files read, 16-bit made 8-bit (with a note).

A PNG, JPEG or WebP file of 8 bits is sent as it is (the server decodes it);
any other image OpenCV reads is decoded here and sent as raw pixels. A BGRA
image goes as it is: the server stores it as BGR with its alpha as the mask
(an explicit mask wins), so old and new clients agree on what a logo is.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Union

import cv2
import grpc
import numpy as np

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb

from google.protobuf.timestamp_pb2 import Timestamp

from .errors import FileError, InvalidArgumentError, _invalid

#: An image to send: an array, or the path of an image file.
ImageInput = Union[np.ndarray, str, Path]
#: How frames travel: raw pixels, or compressed by the client.
FrameEncoding = Literal["raw", "jpeg", "png"]


class FeatureMapWarning(UserWarning):
    """Something the client changed on the way to the server (a 16-bit image sent as 8-bit).

    The ``featuremap`` command prints each as one ``note:`` line on stderr.
    """


def eight_bit(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as 8-bit when it is 16-bit (each value / 257, rounded: 65535 is 255), with a note.

    Matching compares a template with frames, and frames are 8-bit: a 16-bit
    template sent as it is would be on a scale 257 times theirs, which every
    method but the normalised ones reads as another picture.

    Parameters
    ----------
    array : numpy.ndarray
        Any image; only uint16 is changed.
    what : str
        What it is ("logo.png", "the template image"), for the note.

    Returns
    -------
    numpy.ndarray
        uint8 for a uint16 ``array``, else ``array`` itself.
    """
    if array.dtype != np.uint16:
        return array
    warnings.warn(f"{what} is 16-bit: sent as 8-bit (each value / 257)", FeatureMapWarning, stacklevel=5)  # the caller of create_template
    return np.round(array / 257.0).astype(np.uint8)


def _png_depth(data: bytes) -> int:
    """A PNG's bits per channel (its IHDR's bit depth byte)."""
    return data[24] if len(data) > 24 else 8


def image_message(image: ImageInput, what: str = "the template image") -> pb.Image:
    """An Image message of an array or an image file.

    Parameters
    ----------
    image : numpy.ndarray, str or Path
        HxW or HxWxC (uint8, uint16 or float32), or an image file's path.
    what : str
        What the image is, for messages about an array (a file is named by its path).

    Returns
    -------
    featuremap.v1.featuremap_pb2.Image
        An 8-bit PNG, JPEG or WebP file's bytes as they are; anything else as raw pixels.

    Raises
    ------
    FileError
        No such file.
    InvalidArgumentError
        A folder, or a file OpenCV cannot read.
    """
    if not isinstance(image, (str, Path)):
        array = np.asarray(image)
        if array.ndim not in (2, 3):
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"{what} is HxW or HxWxC, got shape {array.shape}")
        return wire.image_message(eight_bit(array, what))
    try:
        data = Path(image).read_bytes()
    except FileNotFoundError:
        raise FileError(grpc.StatusCode.INVALID_ARGUMENT, f"{image}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, f"{image}: a folder, not an image file") from None
    kind = wire.encoded_format(data)
    if kind is not None and not (kind == "png" and _png_depth(data) == 16):
        return pb.Image(encoded=data)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, f"{image}: not an image file OpenCV reads")
    decoded = eight_bit(decoded, str(image))
    return wire.image_message(decoded if decoded.dtype == np.uint8 else decoded.astype(np.float32))


def frame_message(sequence: int, timestamp: float | None, image: np.ndarray, encoding: FrameEncoding,
                  quality: int) -> pb.Frame:
    """A frame to send: its sequence, capture time (seconds) and pixels, raw or compressed here."""
    frame = pb.Frame(sequence=sequence)
    if timestamp is not None:
        stamp = Timestamp()
        stamp.FromNanoseconds(int(timestamp * 1e9))
        frame.capture_time.CopyFrom(stamp)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise _invalid(f"a frame is HxW or HxWxC, got shape {image.shape}")
    if encoding == "raw":
        frame.image.CopyFrom(wire.image_message(image))
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality] if encoding == "jpeg" else []
        ok, data = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", image, params)
        if not ok:
            raise _invalid(f"could not encode the frame as {encoding}")
        frame.image.encoded = data.tobytes()
    return frame
