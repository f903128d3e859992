"""``create_server``: a featuremap server started, and the :class:`Server` that holds what its calls share.

The calls themselves are answered by the servicer (:mod:`.servicer`); here
are the bank's store, the frame processor, health, metrics, the ports
(gRPC, its own health port, the HTTP gateway), TLS and tokens, the warm-up,
and the drain on shutdown.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..engine import cuda_problem, runtime, warmup
from ..errors import LimitExceeded, Unavailable
from ..pipeline.frames import FrameProcessor
from ..store.bank import Bank
from ..store.sqlite_store import SQLiteStore
from ..store.templates import TemplateStore
from . import reflection
from .auth import TokenAuth, load_tokens
from .cgroup import available_cpus, default_memory_budget
from .config import Settings
from .metrics import Metrics
from .metrics_http import MetricsServer
from .servicer import SERVICE_NAME, FeatureMapServicer, handlers

log = logging.getLogger("featuremap.server")

#: RPC threads beyond those streams and Match calls may hold.
LIGHT_THREADS = 8


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
    auth = _auth(settings)
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
    # Each open stream holds a handler thread and each admitted Match call
    # one; LIGHT_THREADS more are held back for health checks, reflection and
    # the bank's calls, so probes answer promptly under any load.
    threads = settings.max_streams + settings.max_calls + LIGHT_THREADS
    server = _grpc_server(service, threads, [auth] if auth is not None else [])
    try:
        port = server.add_secure_port(address, credentials) if credentials is not None \
            else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        service.drain(0)
        raise OSError(f"cannot listen on {address}: {_why_not_listening(address) or 'gRPC could not bind it'}")
    server.start()
    service.grpc, service.port = server, port
    try:
        if settings.health_address:
            service.health_grpc = _health_server(service, settings.health_address)
        if settings.http_address:
            service.gateway = _gateway(service, threads)
            service.http_port = service.gateway.port
    except (OSError, RuntimeError):
        service.drain(0)  # nothing served yet: the main port, the pool, the bank, the metrics let go
        raise
    service.warming = threading.Thread(target=_warm, args=(service,), name="featuremap-warmup", daemon=True)
    service.warming.start()
    return service, port


def _auth(settings: Settings) -> TokenAuth | None:
    """The bearer tokens of ``settings.tokens_file`` as an interceptor; None (and a warning) without one."""
    if not settings.tokens_file:
        log.warning("no tokens file: every client may call every method (set --tokens-file)")
        return None
    try:
        return TokenAuth(load_tokens(settings.tokens_file))
    except (OSError, ValueError) as error:
        raise RuntimeError(f"tokens file: {error}") from None


def _grpc_server(service: Server, threads: int, interceptors: list) -> grpc.Server:
    """The gRPC server (not yet listening) with the service, health and reflection."""
    settings = service.settings
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # gRPC Python shares ports by default (SO_REUSEPORT): a second server
        # on a busy address would start and split the clients between them.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featuremap-rpc"),
                         options=options, interceptors=interceptors, maximum_concurrent_rpcs=4 * threads)
    service.servicer = FeatureMapServicer(service)
    server.add_generic_rpc_handlers((handlers(service.servicer),))
    health_pb2_grpc.add_HealthServicer_to_server(service.health, server)
    reflection.enable((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    return server


def _warm(service: Server) -> None:
    """Compile (or load) the kernels, then say SERVING (the warm-up thread)."""
    started = time.perf_counter()
    warmup(service.settings.device)
    if not service.draining.is_set():
        service.set_serving(True)
    log.info("serving", extra={"warmup_s": round(time.perf_counter() - started, 2), "port": service.port,
                               "cpus": service.frames.cpus, "numba_threads": runtime.max_threads(),
                               "memory_budget_mib": (service.frames.budget.total >> 20),
                               "queued_frames_mib": (service.frames.queued.total >> 20),
                               "device": service.settings.device})
