"""The gRPC servicer: featuremap.v1.FeatureMapService over a server's bank and frame processor.

The servicer is thin (house rule 4): convert with ``featuremap.wire``, call
the bank or the frame processor, convert back; every exception becomes a
status (``status.status_of``), counted in the metrics unless the caller
itself ended the call.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from ..errors import InvalidArgument, Malformed
from ..pipeline import codec
from ..pipeline.streaming import StreamPipeline
from ..pipeline.frames import FrameProcessor
from ..store.bank import Bank, name_of
from ..store.templates import StoredTemplate
from .config import Settings
from .metrics import Metrics
from .requests import request_parser
from .status import status_of

log = logging.getLogger("featuremap.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureMapService"].full_name


class Host(Protocol):
    """What the servicer needs of the server it runs in (:class:`featuremap.service.edge.server.Server`)."""

    bank: Bank
    frames: FrameProcessor
    settings: Settings
    metrics: Metrics

    def admit_call(self) -> AbstractContextManager[None]: ...

    def open_stream(self) -> None: ...

    def close_stream(self) -> None: ...


def template_proto(template: StoredTemplate, *, full: bool) -> pb.Template:
    """A stored template as a proto; ``full`` includes the pixels."""
    created = Timestamp()
    created.FromNanoseconds(int(template.create_time * 1e9))
    height, width, channels = template.image.shape
    message = pb.Template(
        name=name_of(template.id), display_name=template.display_name, labels=template.labels,
        height=height, width=width, channels=channels, create_time=created, etag=template.etag,
        scales=template.scales, angles=template.angles, texture_threshold=template.texture_threshold,
    )
    if template.angle_range is not None:
        message.angle_range.CopyFrom(pb.Range(low=template.angle_range[0], high=template.angle_range[1]))
    if template.scale_range is not None:
        message.scale_range.CopyFrom(pb.Range(low=template.scale_range[0], high=template.scale_range[1]))
    if full:
        message.image.CopyFrom(wire.image_message(template.image))
        if template.mask is not None:
            message.mask.CopyFrom(wire.image_message(template.mask))
    return message


def _page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode()


def _page_after(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        if not text.startswith("after:"):
            raise ValueError(text)
        return int(text[len("after:"):])
    except ValueError:
        raise InvalidArgument("page_token is not one this server issued: pass next_page_token as it came") from None


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _unary(method: _Handler) -> _Handler:
    """Run a unary handler; turn exceptions into statuses (and count them)."""

    @functools.wraps(method)
    def handler(self: FeatureMapServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if isinstance(request, Malformed):
                raise request.error
            return method(self, request, context)
        except Exception as error:  # noqa: BLE001 - every failure must become a status
            self._fail(error, context, method.__name__)

    return handler  # type: ignore[return-value]


class FeatureMapServicer(pb_grpc.FeatureMapServiceServicer):
    """featuremap.v1.FeatureMapService over a :class:`Server`'s bank and frame processor."""

    def __init__(self, server: Host) -> None:
        self._server = server
        self._bank = server.bank
        self._frames = server.frames
        self._settings = server.settings
        self._metrics = server.metrics

    def _fail(self, error: BaseException, context: grpc.ServicerContext, rpc: str) -> NoReturn:
        code, message = status_of(error)
        if code == grpc.StatusCode.INTERNAL:
            log.error("internal error", exc_info=error, extra={"rpc": rpc})
        # Work stopped because its caller left (cancelled, or let its deadline pass) is the caller's
        # choice, not an error of the service: it is not counted (the stream's end is still logged).
        if not (code == grpc.StatusCode.CANCELLED and not context.is_active()):
            self._metrics.errors.labels(rpc, code.name).inc()
        context.abort(code, message)
        raise AssertionError("abort returns only by raising")

    # -- the bank ---------------------------------------------------------

    @_unary
    def CreateTemplate(self, request, context):
        template = request.template
        limit = self._settings.max_template_pixels
        scans = self._settings.max_jpeg_scans
        image = codec.decode_image(template.image, "template image", limit, "max_template_pixels",
                                   max_jpeg_scans=scans)
        mask = (codec.decode_image(template.mask, "template mask", limit, "max_template_pixels", max_jpeg_scans=scans)
                if template.HasField("mask") else None)
        image, mask = codec.split_alpha(image, mask)
        stored = self._bank.create(image, mask, template_id=request.template_id,
                                   display_name=template.display_name, labels=dict(template.labels),
                                   scales=list(template.scales), angles=list(template.angles),
                                   angle_range=((template.angle_range.low, template.angle_range.high)
                                                if template.HasField("angle_range") else None),
                                   scale_range=((template.scale_range.low, template.scale_range.high)
                                                if template.HasField("scale_range") else None),
                                   request_id=request.request_id)
        self._metrics.bank.set(len(self._bank))
        log.info("template created", extra={"template": name_of(stored.id)})
        return pb.CreateTemplateResponse(template=template_proto(stored, full=True))

    @_unary
    def GetTemplate(self, request, context):
        return pb.GetTemplateResponse(template=template_proto(self._bank.get(request.name), full=True))

    @_unary
    def ListTemplates(self, request, context):
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0")
        size = min(request.page_size or 50, 1000)
        page, last = self._bank.page(_page_after(request.page_token), size)
        full = request.view == pb.TEMPLATE_VIEW_FULL
        return pb.ListTemplatesResponse(
            templates=[template_proto(t, full=full) for t in page],
            next_page_token=_page_token(last) if last is not None else "",
        )

    @_unary
    def DeleteTemplate(self, request, context):
        self._bank.delete(request.name)
        self._metrics.bank.set(len(self._bank))
        log.info("template deleted", extra={"template": request.name})
        return pb.DeleteTemplateResponse()

    # -- matching ---------------------------------------------------------

    @_unary
    def Match(self, request, context):
        with self._server.admit_call():
            plan = self._frames.plan(request.config)
            # On the compute pool, as wide as the machine: however many calls
            # wait, no more frames are matched at once than there are cores.
            answer = self._frames.submit(plan, request.frame, cancelled=lambda: not context.is_active(),
                                         rpc="Match").result()
        return self._frames.respond(pb.MatchResponse, answer, "Match")  # already on the wire

    def StreamMatch(self, request_iterator, context) -> Iterator[bytes]:
        try:
            self._server.open_stream()
        except Exception as error:  # noqa: BLE001
            self._fail(error, context, "StreamMatch")
        peer, started, answered, ended = context.peer(), time.monotonic(), 0, "OK"
        log.info("stream started", extra={"peer": peer})
        # The stream stops when the call ends; a client gone shows as grpc's RpcError while reading.
        stream = StreamPipeline(self._frames, request_iterator, context.add_callback, gone=(grpc.RpcError,))
        try:
            for response in stream.run():
                answered += 1
                yield response
        except Exception as error:  # noqa: BLE001
            ended = status_of(error)[0].name
            self._fail(error, context, "StreamMatch")
        finally:
            stream.stop()
            self._server.close_stream()
            if ended == "OK" and not context.is_active():
                ended = "CANCELLED"
            log.info("stream ended", extra={"peer": peer, "frames": answered, "code": ended,
                                            "seconds": round(time.monotonic() - started, 3)})


def _wire_or_message(response: bytes | pb.DeleteTemplateResponse) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def handlers(servicer: FeatureMapServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers, like the generated ``add_..._to_server``, except that a
    handler may answer with wire bytes it built itself (Match and StreamMatch do, for the maps)."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["FeatureMapService"].methods:
        request = getattr(pb, method.input_type.name)
        make = {(False, False): grpc.unary_unary_rpc_method_handler,
                (True, True): grpc.stream_stream_rpc_method_handler}[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=request_parser(request),
                                     response_serializer=_wire_or_message)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
