"""StreamMatch over a WebSocket: the live view's frames one way, results the other.

``GET /v1/frames:stream`` (the method's HTTP rule) upgrades to a WebSocket
whose messages are StreamMatchRequests: binary messages the protobuf
encoding (what the live view sends: a frame's JPEG is copied once), text
messages protobuf's JSON mapping (``{"config": {...}}``). Every answered
frame comes back as a text message, the StreamMatchResponse's JSON.

The servicer's own StreamMatch runs the stream (on a gateway thread, as gRPC
runs it on one of its own), so the realtime rule is StreamMatch's: with
``realtime`` set, stale frames are replaced by newer ones and reported as
skipped, and nothing queues without bound. Between the socket and the
servicer is one bounded queue: a client that keeps sending while it is full
(it ignores the results it is sent, and the stream is not realtime) is
closed with 1008 and the reason; a message over ``max_message_bytes`` is
closed with 1009 before it is read.

A browser cannot set headers on a WebSocket: it offers the subprotocol
``bearer.<token in base64url>`` beside ``featuremap.v1`` instead of an
``Authorization`` header. A refused token, a stream the servicer ends with a
status, or a server going away sends ``{"error": {code, message, details}}``
and then closes with the code :data:`statuses.CLOSE_CODE` gives and the
message as the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import json
import logging
import queue
from typing import Any, Protocol

import grpc
from aiohttp import WSMsgType, web

from featuremap.v1 import featuremap_pb2 as pb

from ..errors import Malformed
from .context import Aborted, HttpContext, connection_open, peer_of
from .messages import parse_json, to_json
from .rules import Route
from .statuses import CLOSE_CODE, POLICY, HttpError, close_reason, error_body

log = logging.getLogger("featuremap.gateway")

PROTOCOL = "featuremap.v1"
TOKEN_PREFIX = "bearer."
#: Seconds between pings: a browser that vanished without closing is noticed.
HEARTBEAT = 20.0
_END = object()


class Gateway(Protocol):
    """What a live stream needs of the gateway that serves it (:class:`featuremap.service.gateway.Gateway`)."""

    servicer: Any
    settings: Any
    loop: asyncio.AbstractEventLoop
    executor: concurrent.futures.Executor

    def authorize(self, rpc: str, authorization: str) -> None: ...


class _Socket(web.WebSocketResponse):
    """aiohttp's WebSocket, whose close for a message over the size limit says why."""

    limit = 0

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if code == 1009 and not message:
            message = close_reason(f"a message over {self.limit} bytes (max_message_bytes)")
        return await super().close(code=code, message=message, drain=drain)


def _authorization(request: web.Request) -> str:
    """The ``Authorization`` header, or the token a browser offered as a subprotocol."""
    header = request.headers.get("Authorization")
    if header:
        return header
    for offered in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        offered = offered.strip()
        if offered.startswith(TOKEN_PREFIX):
            encoded = offered[len(TOKEN_PREFIX):]
            try:
                return "Bearer " + base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError):
                return "Bearer ?"  # not a token this server issued: refused as unknown
    return ""


class LiveStream:
    """One WebSocket and the servicer's StreamMatch behind it."""

    def __init__(self, gateway: Gateway, socket: _Socket, context: HttpContext) -> None:
        self.gateway = gateway
        self.socket = socket
        self.context = context
        # Bounded: the servicer's reader takes requests off it as gRPC's would off the wire.
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=2 * gateway.settings.max_in_flight + 4)
        self.ended = False

    def requests(self):
        """The request stream the servicer reads (in its reader thread); ends with the socket."""
        while True:
            try:
                item = self.inbox.get(timeout=0.1)
            except queue.Empty:
                if self.ended or not self.context.is_active():
                    return
                continue
            if item is _END or self.ended:  # a closed socket's backlog is not the servicer's to match
                return
            yield item

    def offer(self, item: Any) -> bool:
        """Queue a request for the servicer; False when the queue is full (a flood)."""
        try:
            self.inbox.put_nowait(item)
            return True
        except queue.Full:
            return False

    def answer(self) -> tuple[grpc.StatusCode, str] | None:
        """Run the servicer's StreamMatch (a gateway thread); send each result. The status it ended with."""
        responses = self.gateway.servicer.StreamMatch(self.requests(), self.context)
        try:
            for wire in responses:
                text = to_json(pb.StreamMatchResponse.FromString(wire)).decode()
                sent = asyncio.run_coroutine_threadsafe(self.socket.send_str(text), self.gateway.loop)
                while True:  # a client that stops reading holds this thread here, and the stream's queues fill
                    try:
                        sent.result(timeout=0.5)
                        break
                    except concurrent.futures.TimeoutError:
                        if self.ended or not self.context.is_active():
                            sent.cancel()
                            return None
        except Aborted as aborted:
            return aborted.code, aborted.message
        except (ConnectionError, RuntimeError, concurrent.futures.CancelledError):  # closed under a send
            return None
        finally:
            responses.close()  # the servicer's call ends here (its stream stopped and counted out)
        return None

    async def close(self, code: grpc.StatusCode | None, message: str, close_code: int | None = None) -> None:
        """Say why (an ``error`` message) and close the socket; end the servicer's call."""
        self.ended = True
        self.context.end()
        if self.socket.closed:
            return
        if code is not None and code != grpc.StatusCode.OK:
            try:
                await self.socket.send_str(json.dumps({"error": error_body(code, message)}))
            except (ConnectionError, RuntimeError):
                pass
        if code is None:  # every frame answered: a normal close
            await self.socket.close(code=1000)
            return
        await self.socket.close(code=close_code or CLOSE_CODE.get(code, POLICY), message=close_reason(message))


class LiveStreams:
    """The gateway's open WebSocket streams."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._open: set[LiveStream] = set()

    @property
    def open(self) -> int:
        return len(self._open)

    async def close_all(self) -> None:
        """The server is going away: every stream told so and closed (1001)."""
        await asyncio.gather(*(stream.close(grpc.StatusCode.UNAVAILABLE,
                                            "the server is shutting down: reconnect", close_code=1001)
                               for stream in list(self._open)), return_exceptions=True)

    async def serve(self, request: web.Request, route: Route) -> web.StreamResponse:
        """Upgrade to a WebSocket and run the stream until either side ends it."""
        gateway = self.gateway
        socket = _Socket(protocols=(PROTOCOL,), max_msg_size=gateway.settings.max_message_bytes,
                         heartbeat=HEARTBEAT, compress=False, timeout=2.0)
        socket.limit = gateway.settings.max_message_bytes
        if not socket.can_prepare(request).ok:
            raise HttpError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{route.template} is a WebSocket: connect with Upgrade: websocket", status=426)
        await socket.prepare(request)
        context = HttpContext(peer_of(request), connection_open(request))
        stream = LiveStream(gateway, socket, context)
        try:
            gateway.authorize(route.rpc, _authorization(request))
        except HttpError as refused:
            await stream.close(refused.code, refused.message)
            return socket
        self._open.add(stream)
        try:
            answering = gateway.loop.run_in_executor(gateway.executor, stream.answer)
            receiving = asyncio.ensure_future(self._receive(stream))
            done, _ = await asyncio.wait({answering, receiving}, return_when=asyncio.FIRST_COMPLETED)
            if answering in done:  # the servicer ended the stream (a status, or every frame answered)
                try:
                    ended = answering.result()
                except Exception:  # noqa: BLE001 - a bug of ours: logged, the stream closed 1011, the server goes on
                    log.exception("internal error in a WebSocket stream")
                    ended = grpc.StatusCode.INTERNAL, "internal error (the server log has the details)"
                await stream.close(*(ended or (None, "")))
                receiving.cancel()
            else:  # the socket closed (or flooded): the servicer's call ends, its thread follows
                try:
                    flood = receiving.result()
                except (ConnectionError, RuntimeError):  # the socket broke: as closed
                    flood = None
                if flood is not None:
                    await stream.close(grpc.StatusCode.RESOURCE_EXHAUSTED, flood, close_code=POLICY)
                stream.ended = True
                stream.offer(_END)
                context.end()
                await answering
        finally:
            stream.ended = True
            context.end()
            self._open.discard(stream)
        return socket

    async def _receive(self, stream: LiveStream) -> str | None:
        """Requests off the socket into the servicer's queue until it closes. A flood's reason, else None."""
        from ..edge.requests import request_parser

        parse = request_parser(pb.StreamMatchRequest)  # gRPC's own: bytes that do not parse become INVALID_ARGUMENT
        async for message in stream.socket:
            item: Any
            if message.type == WSMsgType.BINARY:
                item = parse(message.data)
            elif message.type == WSMsgType.TEXT:
                item = pb.StreamMatchRequest()
                try:
                    parse_json(message.data.encode(), item)
                except HttpError as error:
                    item = Malformed("StreamMatchRequest", error.message)
            else:
                break
            if not stream.offer(item):
                return (f"more than {stream.inbox.maxsize} messages unread: send the next frame when a result "
                        "comes back, or set realtime in the config (stale frames are then skipped)")
        return None
