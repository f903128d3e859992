"""FeatureMapClient: the service in a few lines of Python."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Unpack

import grpc
import numpy as np

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc
from featuremap.wire import Peak as Peak  # the one type of a found template, shared with the server

# The exception tree lives in errors.py and the image reading in images.py; their names stay
# importable from here, as before (the "as" marks them re-exported for mypy --strict).
from .errors import AccessError as AccessError
from .errors import AlreadyExistsError as AlreadyExistsError
from .errors import FeatureMapError as FeatureMapError
from .errors import FileError as FileError
from .errors import InvalidArgumentError as InvalidArgumentError
from .errors import LimitError as LimitError
from .errors import NotFoundError as NotFoundError
from .errors import SettingTypeError as SettingTypeError
from .errors import TimedOutError as TimedOutError
from .errors import UnavailableError as UnavailableError
from .errors import _invalid, _translated
from .errors import error_of as error_of
from .images import FeatureMapWarning as FeatureMapWarning
from .images import FrameEncoding as FrameEncoding
from .images import ImageInput as ImageInput
from .images import frame_message, image_message

# The channel (its target, options and TLS) is opened in channel.py.
from .channel import channel_target as channel_target
from .channel import open_channel

# The match settings live in settings.py, walked from featuremap.options' table; importable from here too.
from .settings import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS
from .settings import Border as Border
from .settings import MapEncoding as MapEncoding
from .settings import MatchSettings as MatchSettings
from .settings import Method as Method
from .settings import Padding as Padding
from .settings import _name
from .settings import match_config as match_config

DEFAULT_ADDRESS = "localhost:50051"



@dataclass(frozen=True)
class FeatureMap:
    """One template's map of scores, placed in the frame.

    Map pixel (i, j) scores the window whose top-left corner is at
    (origin_x + j * stride, origin_y + i * stride) in the frame. The window
    is the template drawn at ``angle`` (degrees, counter-clockwise as
    displayed) and ``template_scale``: for a pose template, its best pose's
    (the unturned template's when none was found, or where under 'valid'
    padding the pose's canvas is larger than the frame); ``window_width`` x
    ``window_height`` frame pixels, the turned variant's canvas (0: unknown,
    a server from before these fields, whose maps are all unturned).
    """

    template: str
    scores: np.ndarray  # float32, (height, width)
    origin_x: int = 0
    origin_y: int = 0
    stride: int = 1
    angle: float = 0.0
    template_scale: float = 1.0
    window_width: int = 0
    window_height: int = 0

    @property
    def origin(self) -> tuple[int, int]:
        """(origin_x, origin_y)."""
        return self.origin_x, self.origin_y

    @property
    def window(self) -> tuple[int, int]:
        """(window_width, window_height); (0, 0) when the server did not say."""
        return self.window_width, self.window_height

    @property
    def turned(self) -> bool:
        """Whether the map is of the template turned or scaled (a pose's, or a variant's)."""
        return self.angle % 360 != 0 or self.template_scale != 1.0


@dataclass(frozen=True)
class FrameResult:
    """What the server found in one frame."""

    sequence: int
    timestamp: float | None
    peaks: list[Peak]
    maps: dict[str, FeatureMap] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TemplateInfo:
    """A template of the bank (``image`` and ``mask`` only where fetched)."""

    name: str
    id: str
    display_name: str
    labels: dict[str, str]
    height: int
    width: int
    channels: int
    etag: str
    create_time: float
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    scales: tuple[float, ...] = (1.0,)
    angles: tuple[float, ...] = (0.0,)
    angle_range: tuple[float, float] | None = None  # pose search: any angle in it
    scale_range: tuple[float, float] | None = None  # and any scale
    #: The least ccoeff_normed score at which it counts as found by default (from its texture: 0.7 for
    #: a textured template, near 1 for one too plain to be told from shading; 0: not calibrated).
    texture_threshold: float = 0.0


def _array(image: pb.Image) -> np.ndarray:
    """An Image the server sent (always raw) as HxW (one channel) or HxWxC."""
    array = wire.raw_array(image.raw, "image")
    return array[:, :, 0] if array.shape[2] == 1 else array


def _template_info(message: pb.Template) -> TemplateInfo:
    return TemplateInfo(
        name=message.name, id=message.name.split("/", 1)[-1], display_name=message.display_name,
        labels=dict(message.labels), height=message.height, width=message.width, channels=message.channels,
        etag=message.etag, create_time=message.create_time.ToNanoseconds() / 1e9,
        image=_array(message.image) if message.HasField("image") else None,
        mask=_array(message.mask) if message.HasField("mask") else None,
        scales=_as_given(message.scales) or (1.0,), angles=_as_given(message.angles) or (0.0,),
        angle_range=(_as_given([message.angle_range.low, message.angle_range.high])  # type: ignore[arg-type]
                     if message.HasField("angle_range") else None),
        scale_range=(_as_given([message.scale_range.low, message.scale_range.high])  # type: ignore[arg-type]
                     if message.HasField("scale_range") else None),
        texture_threshold=_as_given([message.texture_threshold])[0],
    )


def _as_given(values: Iterable[float]) -> tuple[float, ...]:
    """float32s from the wire as the decimals that were sent (1.2, not 1.2000000476837158)."""
    return tuple(float(f"{v:.7g}") for v in values)


def _feature_map(message: pb.FeatureMap) -> FeatureMap:
    """A map the server sent (one from before its angle, scale and window: unturned, unscaled, window unknown)."""
    return FeatureMap(message.template, wire.map_array(message), message.origin_x, message.origin_y,
                      message.stride or 1, angle=message.angle, template_scale=message.template_scale or 1.0,
                      window_width=message.window_width, window_height=message.window_height)


def _result(message: pb.FrameResult) -> FrameResult:
    return FrameResult(
        sequence=message.sequence,
        timestamp=message.capture_time.ToNanoseconds() / 1e9 if message.HasField("capture_time") else None,
        peaks=[wire.peak_of(p) for p in message.peaks],
        maps={m.template: _feature_map(m) for m in message.maps},
        timing={"decode_ms": message.timing.decode_ms, "compute_ms": message.timing.compute_ms,
                "encode_ms": message.timing.encode_ms},
        skipped=list(message.skipped_sequences),
    )


class FeatureMapClient:
    """A connection to a featuremap server.

    Parameters
    ----------
    address : str
        host:port of the server; several, comma-separated (or a
        ``dns:///name:port`` that resolves to several replicas), and calls
        are spread over them round-robin.
    timeout : float, optional
        Seconds each unary call may take (None: no deadline; an unreachable
        server still fails at once, with UNAVAILABLE).
    options : list of (str, value), optional
        Extra gRPC channel options.
    token : str, optional
        Sent as ``authorization: Bearer <token>`` on every call.
    tls : bool
        Connect with TLS (implied by any of the files below).
    ca_file : str, optional
        PEM CA bundle that signed the server's certificate (default: the
        system's roots).
    cert_file, key_file : str, optional
        The client's certificate and key, for servers that require mutual TLS.

    Examples
    --------
    With a server at ``address`` and ``frames`` a list of images (or any
    iterable of them: a video source from :mod:`featuremap.client.video`):

    >>> with FeatureMapClient(address) as client:
    ...     logo = client.create_template(frames[0][40:72, 60:92], template_id="logo")
    ...     for result in client.stream(frames, templates=["logo"]):
    ...         print(result.sequence, [(peak.x, peak.y) for peak in result.peaks])
    0 [(60.0, 40.0)]
    1 [(60.0, 40.0)]
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = None,
        options: Iterable[tuple[str, object]] | None = None,
        token: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(address, options=options, tls=tls, ca_file=ca_file, cert_file=cert_file,
                                     key_file=key_file)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # The generated stub has no type hints (grpc's generator writes none).
        self._stub: Any = pb_grpc.FeatureMapServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> FeatureMapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    # -- the bank ---------------------------------------------------------

    # Over 60 lines for its docstring (every parameter documented; the code: 19 lines).
    @_translated
    def create_template(
        self,
        image: ImageInput,
        template_id: str | None = None,
        display_name: str | None = None,
        labels: dict[str, str] | None = None,
        mask: ImageInput | None = None,
        scales: Iterable[float] | None = None,
        angles: Iterable[float] | None = None,
        angle_range: tuple[float, float] | None = None,
        scale_range: tuple[float, float] | None = None,
        *,
        replace: bool = False,
    ) -> TemplateInfo:
        """Add a template to the bank.

        Parameters
        ----------
        image : numpy.ndarray, str or Path
            HxW or HxWxC (uint8, uint16 or float32), or an image file. A BGRA
            image (an RGBA PNG logo) is stored as BGR with its alpha as the
            mask; a 16-bit one is sent as 8-bit, with a :class:`FeatureMapWarning`.
        template_id : str, optional
            Its id (default: one the server makes up).
        display_name : str, optional
        labels : dict of str to str, optional
        mask : numpy.ndarray, str or Path, optional
            Non-zero where the template counts; wins over an alpha channel.
        scales, angles : iterable of float, optional
            Also look for it resized and rotated (degrees) by these; peaks
            then carry the matching scale and angle.
        angle_range, scale_range : (float, float), optional
            Find it at any pose in them (e.g. (-180, 180) and (0.75, 1.33)),
            by pose search: peaks then carry the sub-degree angle, the scale
            and the sub-pixel centre (cx, cy). Not with ``scales``/``angles``.
        replace : bool
            When a template of ``template_id`` exists, delete it and add this
            one (a script run again then does not fail with ALREADY_EXISTS).

        Returns
        -------
        TemplateInfo
            The template as stored.
        """
        template = pb.Template(image=image_message(image, "the template image"), display_name=display_name or "",
                               labels=labels or {}, scales=list(scales or []), angles=list(angles or []))
        if angle_range is not None:
            template.angle_range.CopyFrom(pb.Range(low=angle_range[0], high=angle_range[1]))
        if scale_range is not None:
            template.scale_range.CopyFrom(pb.Range(low=scale_range[0], high=scale_range[1]))
        if mask is not None:
            template.mask.CopyFrom(image_message(mask, "the template mask"))
        request = pb.CreateTemplateRequest(template=template, template_id=template_id or "")
        try:
            created = self._stub.CreateTemplate(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            if not (replace and template_id and error.code() == grpc.StatusCode.ALREADY_EXISTS):
                raise
            # Not atomic (a reader may miss it in between); the bank has no replace of its own.
            self._stub.DeleteTemplate(pb.DeleteTemplateRequest(name=_name(template_id)), timeout=self.timeout,
                                      metadata=self._metadata)
            created = self._stub.CreateTemplate(request, timeout=self.timeout, metadata=self._metadata)
        return _template_info(created.template)

    @_translated
    def get_template(self, template: str) -> TemplateInfo:
        """One template, with its image (by id or ``templates/{id}``)."""
        return _template_info(self._stub.GetTemplate(pb.GetTemplateRequest(name=_name(template)),
                                                     timeout=self.timeout, metadata=self._metadata).template)

    def list_templates(self, *, page_size: int = 100) -> Iterator[TemplateInfo]:
        """Every template of the bank, page after page (without pixels)."""
        token = ""
        while True:
            page = self._list_page(page_size, token)
            yield from (_template_info(t) for t in page.templates)
            token = page.next_page_token
            if not token:
                return

    @_translated
    def _list_page(self, page_size: int, token: str) -> pb.ListTemplatesResponse:
        page: pb.ListTemplatesResponse = self._stub.ListTemplates(
            pb.ListTemplatesRequest(page_size=page_size, page_token=token), timeout=self.timeout,
            metadata=self._metadata)
        return page

    @_translated
    def delete_template(self, template: str) -> None:
        """Remove a template (by id or ``templates/{id}``)."""
        self._stub.DeleteTemplate(pb.DeleteTemplateRequest(name=_name(template)), timeout=self.timeout, metadata=self._metadata)

    # -- matching ---------------------------------------------------------

    @_translated
    def match(self, frame: np.ndarray, *, sequence: int = 0, encoding: FrameEncoding = "raw", quality: int = 90,
              **config: Unpack[MatchSettings]) -> FrameResult:
        """Match one frame; ``config`` as for :func:`match_config` (:class:`MatchSettings`)."""
        request = pb.MatchRequest(config=match_config(**config),
                                  frame=frame_message(sequence, None, frame, encoding, quality))
        return _result(self._stub.Match(request, timeout=self.timeout, metadata=self._metadata).result)

    # Over 60 lines for its docstring and the request generator it holds (the code: 36 lines).
    def stream(self, frames: Iterable[np.ndarray | tuple[int, float | None, np.ndarray]], *, window: int = 4,
               encoding: FrameEncoding = "raw", quality: int = 90, timeout: float | None = None,
               **config: Unpack[MatchSettings]) -> Iterator[FrameResult]:
        """Match a stream of frames, results in order.

        Parameters
        ----------
        frames : iterable
            Arrays, or (sequence, timestamp, array) tuples (timestamp in
            seconds, or None).
        window : int
            Frames sent ahead of their results: the stream is pipelined,
            never more than this many frames in flight.
        encoding : str
            ``raw`` pixels (default), ``jpeg`` or ``png`` to save bandwidth.
        quality : int
            JPEG quality.
        timeout : float, optional
            Deadline of the whole stream.
        **config
            As for :func:`match_config` (:class:`MatchSettings`).

        Notes
        -----
        Stopping the iteration early cancels the call.
        """
        if encoding not in ("raw", "jpeg", "png"):
            raise _invalid(f"unknown encoding {encoding!r}: choose raw, jpeg or png")
        first = match_config(**config)
        slots = threading.Semaphore(window)
        done = threading.Event()

        def requests() -> Iterator[pb.StreamMatchRequest]:
            yield pb.StreamMatchRequest(config=first)
            source = iter(frames)
            index = 0
            while True:
                # A slot first, then the frame: a camera's frame is taken
                # when it can be sent, not left to go stale.
                while not slots.acquire(timeout=0.1):
                    if done.is_set():
                        return
                item = next(source, None)
                if item is None or done.is_set():
                    return
                sequence, timestamp, image = item if isinstance(item, tuple) else (index, None, item)
                index += 1
                yield pb.StreamMatchRequest(frame=frame_message(sequence, timestamp, image, encoding, quality))

        call = self._stub.StreamMatch(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for response in call:
                result = _result(response.result)
                for _ in range(1 + len(result.skipped)):
                    slots.release()
                yield result
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED or not done.is_set():
                raise error_of(error.code(), error.details() or "") from None
        finally:
            done.set()
            call.cancel()
