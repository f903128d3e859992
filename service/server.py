"""The gRPC servicer and ``create_server``.

The servicer is thin (house rule 4): decode with ``codec``, call the bank and
``matching``, encode; every exception becomes a status in ``errors``.

StreamMatch runs as a pipeline per stream: a reader thread takes requests off
the wire and decodes frames, a dispatcher hands them in order to the server's
compute pool (as many frames at once as there are cores, so the serial parts
of one frame overlap the next), and the handler takes the results back in
order, encodes and sends them. So frame n+1 is decoded and frame n-1 encoded
while frame n is computed. The queues between the stages are bounded
(``max_in_flight``): a client that stops reading fills them, then the reader
stops reading and gRPC flow control stalls that client, while server memory
stays put. In realtime mode the reader keeps only the newest pending frame,
the frames it replaces are reported as skipped, and one result at a time is
in flight.
"""

from __future__ import annotations

import base64
import collections
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from . import codec, matching
from .auth import TokenAuth, load_tokens
from .bank import Bank, name_of
from .config import Settings
from .engine import runtime, warmup
from .halffloat import to_float16
from .errors import FailedPrecondition, InvalidArgument, LimitExceeded, Unavailable, status_of
from .metrics import Metrics
from .store import Store, StoredTemplate

log = logging.getLogger("featuremap.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureMapService"].full_name
_POLL = 0.1  # seconds between checks that a stream is still wanted


def template_proto(template: StoredTemplate, *, full: bool) -> pb.Template:
    """A stored template as a proto; ``full`` includes the pixels."""
    created = Timestamp()
    created.FromNanoseconds(int(template.create_time * 1e9))
    height, width, channels = template.image.shape
    message = pb.Template(
        name=name_of(template.id), display_name=template.display_name, labels=template.labels,
        height=height, width=width, channels=channels, create_time=created, etag=template.etag,
    )
    if full:
        message.image.CopyFrom(codec.raw_image(template.image))
        if template.mask is not None:
            message.mask.CopyFrom(codec.raw_image(template.mask))
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


def open_store(settings: Settings):
    """The bank's store named by ``settings.bank`` (SQLite in the data dir by default)."""
    if settings.bank.startswith(("redis://", "rediss://")):
        from .redis_store import RedisStore

        try:
            return RedisStore(settings.bank)
        except Exception as error:  # noqa: BLE001 - any failure to reach it is a start-up error
            raise RuntimeError(f"cannot reach the bank at {settings.bank}: {error}") from None
    # sqlite:///relative/bank.db or sqlite:////absolute/bank.db, as SQLAlchemy spells them.
    path = settings.bank[len("sqlite:///"):] if settings.bank else Path(settings.data_dir) / "bank.db"
    return Store(path)


class _Service:
    """What the servicer, health and shutdown share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.bank = Bank(self.store, max_templates=settings.max_templates)
        self.metrics = Metrics()
        self.metrics.bank.set(len(self.bank))
        self.bank.on_change.append(lambda: self.metrics.bank.set(len(self.bank)))
        self.health = health.HealthServicer()
        self.draining = threading.Event()
        # Frames of every stream are matched here: as many at once as there
        # are cores, first come first served.
        self.compute = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="featuremap-compute")
        self._streams = 0
        self._lock = threading.Lock()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def open_stream(self) -> None:
        with self._lock:
            if self.draining.is_set():
                raise Unavailable("the server is shutting down: reconnect to another replica")
            if self._streams >= self.settings.max_streams:
                raise LimitExceeded(f"{self._streams} streams are open, the limit (max_streams)")
            self._streams += 1
        self.metrics.streams.inc()

    def close_stream(self) -> None:
        with self._lock:
            self._streams -= 1
        self.metrics.streams.dec()


def _unary(method):
    """Run a unary handler; turn exceptions into statuses (and count them)."""

    @functools.wraps(method)
    def handler(self, request, context):
        try:
            return method(self, request, context)
        except Exception as error:  # noqa: BLE001 - every failure must become a status
            self._fail(error, context)

    return handler


class FeatureMapServicer(pb_grpc.FeatureMapServiceServicer):
    """featuremap.v1.FeatureMapService over a bank."""

    def __init__(self, service: _Service) -> None:
        self._service = service
        self._bank = service.bank
        self._settings = service.settings
        self._metrics = service.metrics

    def _fail(self, error: BaseException, context) -> None:
        code, message = status_of(error)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("internal error", exc_info=error)
        self._metrics.errors.labels(code.name).inc()
        context.abort(code, message)

    # -- the bank ---------------------------------------------------------

    @_unary
    def CreateTemplate(self, request, context):
        template = request.template
        limit = self._settings.max_template_pixels
        image = codec.decode_image(template.image, "template image", limit)
        mask = codec.decode_image(template.mask, "template mask", limit) if template.HasField("mask") else None
        stored = self._bank.create(image, mask, template_id=request.template_id,
                                   display_name=template.display_name, labels=dict(template.labels))
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

    def _resolve(self, config: pb.MatchConfig) -> matching.Resolved:
        return matching.resolve(config, self._bank, max_templates_per_request=self._settings.max_templates_per_request)

    def _decode(self, frame: pb.Frame) -> tuple:
        started = time.perf_counter()
        image = codec.decode_image(frame.image, f"frame {frame.sequence}", self._settings.max_frame_pixels)
        return image, (time.perf_counter() - started) * 1e3

    def _process(self, resolved, frame: pb.Frame, image=None, decode_ms: float = 0.0) -> pb.FrameResult:
        """Decode (unless done), match and encode one frame: its FrameResult."""
        if image is None:
            image, decode_ms = self._decode(frame)
        computed = matching.compute(resolved, self._bank, image)
        started = time.perf_counter()
        maps = matching.encode_maps(resolved, computed)
        encode_ms = (time.perf_counter() - started) * 1e3
        self._metrics.latency.observe((decode_ms + computed.compute_ms + encode_ms) / 1e3)
        return pb.FrameResult(
            sequence=frame.sequence, capture_time=frame.capture_time, peaks=computed.peaks, maps=maps,
            timing=pb.Timing(decode_ms=decode_ms, compute_ms=computed.compute_ms, encode_ms=encode_ms),
        )

    @_unary
    def Match(self, request, context):
        result = self._process(self._resolve(request.config), request.frame)
        self._metrics.frames.labels("Match").inc()
        return pb.MatchResponse(result=result)

    def StreamMatch(self, request_iterator, context):
        try:
            self._service.open_stream()
        except Exception as error:  # noqa: BLE001
            self._fail(error, context)
        stream = _Stream(self, request_iterator, context)
        try:
            yield from stream.run()
        except Exception as error:  # noqa: BLE001
            self._fail(error, context)
        finally:
            stream.stop()
            self._service.close_stream()


class _Queue:
    """A small bounded FIFO whose waits give up when the stream is over."""

    def __init__(self, capacity: int, stopped: threading.Event) -> None:
        self._items: collections.deque = collections.deque()
        self.capacity = capacity
        self._stopped = stopped
        self._cond = threading.Condition()

    def put(self, item, *, replace_frame: bool = False) -> tuple | None:
        """Append ``item``; with ``replace_frame``, take the place of a pending frame and return it."""
        with self._cond:
            if replace_frame and self._items and self._items[-1][0] == "frame":
                replaced = self._items.pop()
                self._items.append(item)
                self._cond.notify_all()
                return replaced
            while len(self._items) >= self.capacity:
                if self._stopped.is_set():
                    return None
                self._cond.wait(_POLL)
            self._items.append(item)
            self._cond.notify_all()
            return None

    def get(self):
        """The next item, or ("stop",) once the stream is over."""
        with self._cond:
            while not self._items:
                if self._stopped.is_set():
                    return ("stop",)
                self._cond.wait(_POLL)
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class _Stream:
    """One StreamMatch call: reader and worker threads, results yielded in order."""

    def __init__(self, servicer: FeatureMapServicer, requests, context) -> None:
        self._servicer = servicer
        self._requests = requests
        self._context = context
        self._stopped = threading.Event()
        capacity = self._capacity = servicer._settings.max_in_flight
        self._inbox = _Queue(capacity, self._stopped)
        self._outbox = _Queue(capacity, self._stopped)
        self._skipped: list[int] = []
        self._skipped_lock = threading.Lock()
        context.add_callback(self._stopped.set)

    def stop(self) -> None:
        self._stopped.set()

    def run(self):
        """Start the threads; yield a StreamMatchResponse per answered frame."""
        threads = [threading.Thread(target=self._read, name="featuremap-read", daemon=True),
                   threading.Thread(target=self._work, name="featuremap-work", daemon=True)]
        for thread in threads:
            thread.start()
        while True:
            item = self._outbox.get()
            if item[0] == "result":
                _, pending, skipped = item
                result = pending.result()  # in order, whatever order they finish in
                result.skipped_sequences.extend(skipped)
                self._servicer._metrics.frames.labels("StreamMatch").inc()
                yield pb.StreamMatchResponse(result=result)
            elif item[0] == "error":
                raise item[1]
            else:  # "end" or "stop"
                return

    def _read(self) -> None:
        """Requests off the wire, frames decoded, into the inbox, in order."""
        realtime = None  # None until the first config
        try:
            for request in self._requests:
                kind = request.WhichOneof("kind")
                if kind == "config":
                    realtime = request.config.realtime
                    self._inbox.put(("config", request.config))
                elif kind == "frame":
                    if realtime is None:
                        raise FailedPrecondition("a frame came before any config: send a MatchConfig first")
                    if realtime:
                        # Decoded on the pool: a frame that is replaced costs nothing.
                        replaced = self._inbox.put(("frame", request.frame, None, 0.0), replace_frame=True)
                        if replaced is not None:
                            with self._skipped_lock:
                                self._skipped.append(replaced[1].sequence)
                            self._servicer._metrics.skipped.inc()
                    else:
                        image, decode_ms = self._servicer._decode(request.frame)
                        self._inbox.put(("frame", request.frame, image, decode_ms))
                else:
                    raise InvalidArgument("a StreamMatchRequest must set config or frame")
                if self._stopped.is_set():
                    return
            self._inbox.put(("end",))
        except grpc.RpcError:
            self._stopped.set()  # the client went away
        except Exception as error:  # noqa: BLE001 - reported in order, after the frames before it
            self._inbox.put(("error", error))

    def _work(self) -> None:
        """Inbox items, in order: configs resolved here, frames handed to the compute pool.

        The outbox receives the pending results in frame order; several frames
        of a stream may be computed at once (the serial parts of one frame
        leave cores idle that the next frame can use), and the handler takes
        them back in order.
        """
        resolved = None
        while True:
            item = self._inbox.get()
            try:
                if item[0] == "config":
                    resolved = self._servicer._resolve(item[1])
                    # Realtime wants the newest frame, not a queue of them:
                    # one result in flight, the rest of the time frames wait
                    # in the inbox, where newer ones replace them.
                    self._outbox.capacity = 1 if resolved.realtime else self._capacity
                    continue
                if item[0] != "frame":
                    self._outbox.put(item)
                    return
                _, frame, image, decode_ms = item
                with self._skipped_lock:
                    skipped, self._skipped = self._skipped, []
                # Matched and encoded on the pool: encoding maps is work too.
                pending = self._servicer._service.compute.submit(self._servicer._process, resolved, frame, image,
                                                                 decode_ms)
                self._outbox.put(("result", pending, skipped))
            except Exception as error:  # noqa: BLE001
                self._outbox.put(("error", error))
                return

def create_server(address: str = "[::]:0", settings: Settings | None = None) -> tuple[grpc.Server, int]:
    """Start a featuremap server; return it and its port.

    The server answers at once: health says NOT_SERVING until the engine's
    warm-up (in the background) is done, then SERVING. ``server.featuremap``
    holds the bank, health, metrics and settings for the process that owns it.

    Parameters
    ----------
    address : str
        host:port; port 0 picks a free one (tests).
    settings : Settings, optional
        Everything else; ``address`` wins over ``settings.address``.
    """
    settings = settings or Settings()
    interceptors = []
    if settings.tokens_file:
        try:
            interceptors.append(TokenAuth(load_tokens(settings.tokens_file)))
        except (OSError, ValueError) as error:
            raise RuntimeError(f"tokens file: {error}") from None
    else:
        log.warning("no tokens file: every client may call every method (set --tokens-file)")
    runtime.retain_freed_memory()
    service = _Service(settings)
    service.set_serving(False)
    if settings.metrics_address:
        service.metrics.serve(settings.metrics_address)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    # Each open stream holds a handler thread; unary calls need room beside them.
    server = grpc.server(ThreadPoolExecutor(max_workers=settings.max_streams + 16,
                                            thread_name_prefix="featuremap-rpc"), options=options,
                         interceptors=interceptors)
    pb_grpc.add_FeatureMapServiceServicer_to_server(FeatureMapServicer(service), server)
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if settings.tls_cert:
        read = lambda path: Path(path).read_bytes()  # noqa: E731
        credentials = grpc.ssl_server_credentials(
            [(read(settings.tls_key), read(settings.tls_cert))],
            root_certificates=read(settings.tls_client_ca) if settings.tls_client_ca else None,
            require_client_auth=bool(settings.tls_client_ca),
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}: is the address valid and free?")
    server.start()
    server.featuremap = service

    def warm() -> None:
        started = time.perf_counter()
        warmup()
        to_float16(np.zeros(4, np.float32))
        if not service.draining.is_set():
            service.set_serving(True)
        log.info("serving", extra={"warmup_s": round(time.perf_counter() - started, 2), "port": port})

    threading.Thread(target=warm, name="featuremap-warmup", daemon=True).start()
    return server, port


def drain(server: grpc.Server, grace: float) -> None:
    """Stop taking new work, let in-flight calls finish within ``grace`` seconds, stop."""
    service: _Service = server.featuremap
    service.draining.set()
    service.set_serving(False)
    server.stop(grace).wait()
    service.compute.shutdown(wait=True)
    service.store.close()
