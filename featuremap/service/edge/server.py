"""The gRPC servicer and ``create_server``.

The servicer is thin (house rule 4): convert with ``featuremap.wire``, call
the bank or the frame processor, convert back; every exception becomes a
status in ``errors``. What the calls share (bank, frame processor, health,
metrics) is a :class:`Server`, which ``create_server`` returns.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from featuremap import wire
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from ..engine import cuda_problem, runtime, warmup
from ..errors import InvalidArgument, LimitExceeded, Malformed, Unavailable
from ..pipeline import codec
from ..pipeline.frames import FrameProcessor
from ..pipeline.streaming import StreamPipeline
from ..store.bank import Bank, name_of
from ..store.sqlite_store import SQLiteStore
from ..store.templates import StoredTemplate, TemplateStore
from . import reflection
from .auth import TokenAuth, load_tokens
from .cgroup import available_cpus, default_memory_budget
from .config import Settings
from .metrics import Metrics
from .metrics_http import MetricsServer
from .requests import request_parser
from .status import status_of

log = logging.getLogger("featuremap.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FeatureMapService"].full_name
#: RPC threads beyond those streams and Match calls may hold.
LIGHT_THREADS = 8


def template_proto(template: StoredTemplate, *, full: bool) -> pb.Template:
    """A stored template as a proto; ``full`` includes the pixels."""
    created = Timestamp()
    created.FromNanoseconds(int(template.create_time * 1e9))
    height, width, channels = template.image.shape
    message = pb.Template(
        name=name_of(template.id), display_name=template.display_name, labels=template.labels,
        height=height, width=width, channels=channels, create_time=created, etag=template.etag,
        scales=template.scales, angles=template.angles,
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


def open_store(settings: Settings) -> TemplateStore:
    """The bank's store named by ``settings.bank`` (SQLite in the data dir by default)."""
    if settings.bank.startswith(("redis://", "rediss://")):
        from ..store.redis_store import RedisStore

        return RedisStore(settings.bank)  # StoreError (a RuntimeError) names what is wrong
    # sqlite:///relative/bank.db or sqlite:////absolute/bank.db, as SQLAlchemy spells them.
    path = settings.bank[len("sqlite:///"):] if settings.bank else Path(settings.data_dir) / "bank.db"
    return SQLiteStore(path)


class Server:
    """A featuremap server: the gRPC server and what its calls share.

    Made by :func:`create_server`. ``bank``, ``frames``, ``metrics`` and
    ``settings`` are for the process that owns it (and its tests).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.bank = Bank(self.store, max_templates=settings.max_templates,
                         max_template_pixels=settings.max_template_pixels)
        self.metrics = Metrics()
        self.metrics.bank.set(len(self.bank))
        self.bank.on_change.append(lambda: self.metrics.bank.set(len(self.bank)))
        # The frame path takes its CPUs and memory resolved: 0 in a flag means the container's own.
        self.frames = FrameProcessor(
            replace(settings, cpus=settings.cpus or available_cpus(),
                    memory_budget=settings.memory_budget or default_memory_budget()), self.bank, self.metrics)
        self.health = health.HealthServicer()
        self.draining = threading.Event()
        self.warming: threading.Thread | None = None
        self.grpc: grpc.Server | None = None
        self.metrics_server: MetricsServer | None = None
        self.health_grpc: grpc.Server | None = None
        #: The bearer tokens (None: open), the servicer, and the HTTP gateway (None: off), set by create_server.
        self.auth: TokenAuth | None = None
        self.servicer: FeatureMapServicer | None = None
        self.gateway: Any = None
        self.http_port = 0
        self.health_port = 0
        self.port = 0
        self._streams = 0
        self._calls = 0
        self._lock = threading.Lock()

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def open_stream(self) -> None:
        """Count a new StreamMatch call in, or refuse it (draining, or at max_streams)."""
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

    @contextlib.contextmanager
    def admit_call(self) -> Iterator[None]:
        """Hold one of ``max_calls`` places for a Match call, or refuse it at once.

        Heavy calls beyond the places would hold RPC threads while they wait:
        refused, they leave the threads held back for health checks and the
        bank's calls free (see :func:`create_server`).
        """
        with self._lock:
            if self.draining.is_set():
                raise Unavailable("the server is shutting down: retry on another replica")
            if self._calls >= self.settings.max_calls:
                raise LimitExceeded(f"{self._calls} Match calls are in progress, the limit (max_calls): "
                                    "retry with backoff, or use StreamMatch")
            self._calls += 1
        try:
            yield
        finally:
            with self._lock:
                self._calls -= 1

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        assert self.grpc is not None
        return self.grpc.wait_for_termination(timeout)

    def drain(self, grace: float) -> bool:
        """Stop taking new work, let in-flight calls finish within ``grace`` seconds, stop.

        When the grace ends, calls still running are cancelled, and their work
        stops at its next check (between groups of templates, pose levels and
        candidates); a second at most is waited for that. Returns whether
        every thread of the work finished (else the process should exit
        without waiting for them: nothing they hold needs saving).
        """
        self.draining.set()
        self.set_serving(False)
        # The HTTP gateway drains beside gRPC: its calls and streams get the same grace.
        gateway = self.gateway.stop(grace) if self.gateway is not None else None
        if self.grpc is not None:
            self.grpc.stop(grace).wait()
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.result(grace + 5.0)
            self.gateway.join(1.0)
        if self.health_grpc is not None:  # probes see NOT_SERVING until the calls are done
            self.health_grpc.stop(0).wait()
        # A warm-up still compiling would meet a shutting-down interpreter.
        if self.warming is not None:
            self.warming.join(1.0)
        finished = self.frames.shutdown(timeout=1.0)
        self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        return finished and (self.warming is None or not self.warming.is_alive())


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

    def __init__(self, server: Server) -> None:
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


def _handlers(servicer: FeatureMapServicer) -> grpc.GenericRpcHandler:
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


def _health_server(service: Server, address: str) -> grpc.Server:
    """grpc.health.v1 alone, on its own port and its own two threads (plaintext: Kubernetes'
    gRPC probes speak no TLS, and the answer is a status, nothing secret).

    gRPC Python serves every method of a server from one pool: however many
    threads are held back for light calls, a flood of heavy calls (even ones
    refused at once) queues the probes behind it. A server of its own never
    shares a thread with the RPC pool, so a probe answers while that pool is
    saturated, and a pod under load is not restarted for it.
    """
    server = grpc.server(ThreadPoolExecutor(max_workers=2, thread_name_prefix="featuremap-health"),
                         options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=64)
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address} (health_address): "
                      f"{_why_not_listening(address) or 'gRPC could not bind it'}")
    server.start()
    service.health_port = port
    return server


def _gateway(service: Server, threads: int) -> Any:
    """The HTTP/JSON gateway (featuremap[http]) in front of the servicer, on ``settings.http_address``."""
    try:
        from ..gateway import Gateway
    except ImportError as error:  # aiohttp: the http extra
        raise RuntimeError(f"http_address needs the HTTP gateway's packages ({error.name} is missing): "
                           "pip install 'featuremap[http]'") from None
    return Gateway(service.servicer, service.settings, service.auth, threads)


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    """The server's TLS credentials, the key checked against the certificate first.

    gRPC only says "Failed to bind" for a key that does not match: say what is wrong.
    """
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as error:
        reason = "does not match the certificate" if "KEY_VALUES_MISMATCH" in str(error) else f"cannot be used: {error}"
        raise RuntimeError(f"tls_key {settings.tls_key} {reason} (tls_cert {settings.tls_cert})") from None
    if settings.tls_client_ca:
        try:
            ssl.create_default_context(cafile=settings.tls_client_ca)
        except ssl.SSLError as error:
            raise RuntimeError(f"tls_client_ca {settings.tls_client_ca} is not a PEM CA bundle: {error}") from None

    def read(path: str) -> bytes:
        return Path(path).read_bytes()

    return grpc.ssl_server_credentials(
        [(read(settings.tls_key), read(settings.tls_cert))],
        root_certificates=read(settings.tls_client_ca) if settings.tls_client_ca else None,
        require_client_auth=bool(settings.tls_client_ca),
    )


def _why_not_listening(address: str) -> str | None:
    """Why ``address`` cannot be bound ("address in use" when another socket holds it); None if it can."""
    host, _, port = address.rpartition(":")
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, ValueError):
        return "not a valid host:port"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return "address in use (is another server running there?)"
                return str(error)
    return None


def create_server(address: str = "[::]:0", settings: Settings | None = None) -> tuple[Server, int]:
    """Start a featuremap server; return it and its port.

    The server answers at once: health says NOT_SERVING until the engine's
    warm-up (in the background) is done, then SERVING.

    Parameters
    ----------
    address : str
        host:port; port 0 picks a free one (tests).
    settings : Settings, optional
        Everything else; ``address`` wins over ``settings.address``.
    """
    settings = settings or Settings()
    interceptors = []
    auth = None
    if settings.tokens_file:
        try:
            auth = TokenAuth(load_tokens(settings.tokens_file))
        except (OSError, ValueError) as error:
            raise RuntimeError(f"tokens file: {error}") from None
        interceptors.append(auth)
    else:
        log.warning("no tokens file: every client may call every method (set --tokens-file)")
    credentials = _tls_credentials(settings) if settings.tls_cert else None
    # Asked before gRPC tries, which would log its own lines about it.
    busy = None if address.endswith(":0") else _why_not_listening(address)
    if busy is not None:
        raise OSError(f"cannot listen on {address}: {busy}")
    if settings.device == "cuda":
        problem = cuda_problem()
        if problem is not None:
            raise RuntimeError(problem)
    runtime.retain_freed_memory()
    service = Server(settings)
    service.auth = auth
    service.set_serving(False)
    if settings.metrics_address:
        service.metrics_server = service.metrics.serve(settings.metrics_address)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # gRPC Python shares ports by default (SO_REUSEPORT): a second server
        # on a busy address would start and split the clients between them.
        ("grpc.so_reuseport", 0),
    ]
    # Each open stream holds a handler thread and each admitted Match call
    # one; LIGHT_THREADS more are held back for health checks, reflection and
    # the bank's calls, so probes answer promptly under any load.
    threads = settings.max_streams + settings.max_calls + LIGHT_THREADS
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featuremap-rpc"),
                         options=options, interceptors=interceptors, maximum_concurrent_rpcs=4 * threads)
    service.servicer = FeatureMapServicer(service)
    server.add_generic_rpc_handlers((_handlers(service.servicer),))
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    reflection.enable((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        service.drain(0)
        raise OSError(f"cannot listen on {address}: {_why_not_listening(address) or 'gRPC could not bind it'}")
    server.start()
    service.grpc, service.port = server, port
    if settings.health_address:
        try:
            service.health_grpc = _health_server(service, settings.health_address)
        except OSError:
            service.drain(0)  # nothing served yet: the main port, the pool, the bank, the metrics let go
            raise
    if settings.http_address:
        try:
            service.gateway = _gateway(service, threads)
        except (OSError, RuntimeError):
            service.drain(0)
            raise
        service.http_port = service.gateway.port

    def warm() -> None:
        started = time.perf_counter()
        warmup(settings.device)
        if not service.draining.is_set():
            service.set_serving(True)
        log.info("serving", extra={"warmup_s": round(time.perf_counter() - started, 2), "port": port,
                                   "cpus": service.frames.cpus, "numba_threads": runtime.max_threads(),
                                   "memory_budget_mib": (service.frames.budget.total >> 20),
                                   "queued_frames_mib": (service.frames.queued.total >> 20), "device": settings.device})

    service.warming = threading.Thread(target=warm, name="featuremap-warmup", daemon=True)
    service.warming.start()
    return service, port
