"""The HTTP/JSON gateway: the proto's HTTP rules served by aiohttp, in the server's process.

One asyncio loop on one thread of its own takes the connections (as the
metrics endpoint does); every call goes to the gRPC servicer's own method on
a pool of threads sized as gRPC's, so the servicer decides everything it
decides for gRPC: validation, the memory budget, ``max_calls`` and
``max_streams``, metrics and logs. The gateway does only what HTTP adds:

- routes from the ``google.api.http`` options (:mod:`.rules`), requests from
  the path, the body and the query (:mod:`.messages`), the servicer's status
  as an HTTP status and a JSON error (:mod:`.statuses`);
- the bearer token checked by the server's own :class:`TokenAuth`, TLS with
  the server's certificate (and client CA);
- the body's size checked against ``max_message_bytes`` before it is read
  (the ``Content-Length``, then every chunk), the origin of browser requests
  (CORS off unless ``--http-allow-origin``);
- the live view's files (``static/``), ``/openapi.json`` (:mod:`.openapi`)
  and StreamMatch as a WebSocket (:mod:`.live`).

aiohttp sets TCP_NODELAY on its connections and sends a response's headers
with its body, in one write: no Nagle delay between them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import grpc
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from featuremap.v1 import featuremap_pb2 as pb

from ..edge.auth import TokenAuth
from ..edge.config import Settings, allowed_origins
from .bodies import BodyReader
from .context import Aborted, HttpContext, connection_open, peer_of
from .live import LiveStreams
from .messages import image_fields, set_parameters, set_path, to_json
from .openapi import openapi_document
from .origins import Origins
from .rules import Route, routes
from .statuses import HTTP_STATUS, HttpError, error_json

log = logging.getLogger("featuremap.gateway")

#: Files of the live view, by name, and their types.
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
#: The page may load only what the gateway serves (no CDN), and talk only to it.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
       "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
#: Seconds a kept-alive connection may stay idle between requests.
IDLE_TIMEOUT = 30.0
#: Bytes of a request's line and headers at most.
MAX_HEADER_BYTES = 16 << 10


def static_files() -> dict[str, tuple[bytes, str]]:
    """The live view's files (package data), read once: nothing else on disk is ever served."""
    folder = resources.files("featuremap.service.gateway") / "static"
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's certificate (checked by the gRPC side at start), and its client CA for mutual TLS."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _bind(address: str) -> socket.socket:
    """A listening socket on host:port (an address in use fails here, in the caller's thread)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "::"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # [::] takes IPv4 too, as gRPC's does
        sock.bind((host, int(port)))
        sock.listen(512)
    except OSError as error:
        sock.close()
        reason = ("address in use (is another server running there?)" if error.errno == errno.EADDRINUSE
                  else error.strerror)
        raise OSError(f"cannot listen on {address} (http_address): {reason}") from None
    sock.setblocking(False)
    return sock


class Gateway:
    """The HTTP/JSON gateway of a server, listening from construction until :meth:`stop`.

    Parameters
    ----------
    servicer : FeatureMapServicer
        The gRPC servicer whose methods answer every call.
    settings : Settings
        ``http_address``, ``http_allow_origin``, TLS, limits.
    auth : TokenAuth or None
        The server's tokens (None: open, as the gRPC side).
    threads : int
        Threads for calls (as many as gRPC's pool: one per stream and per Match call, and some for
        the bank's calls).
    """

    def __init__(self, servicer: Any, settings: Settings, auth: TokenAuth | None, threads: int) -> None:
        self.servicer = servicer
        self.settings = settings
        self.auth = auth
        self.routes: list[Route] = routes()
        uploads = {route.rpc: image_fields(route.method.input_type if route.body == "*"
                                                else route.method.input_type.fields_by_name[route.body].message_type,
                                                "" if route.body in ("", "*") else route.body + ".")
                        for route in self.routes if route.body}
        self.static = static_files()
        self.openapi = openapi_document()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featuremap-http")
        self.streams = LiveStreams(self)
        self._active = 0
        self._calls = 0
        self._call_limit = 4 * threads  # as the gRPC server's maximum_concurrent_rpcs
        self._tls = _tls_context(settings)
        self.origins = Origins(allowed_origins(settings), tls=self._tls is not None)
        self.bodies = BodyReader(settings.max_message_bytes, uploads)
        self._socket = _bind(settings.http_address)
        self.port = self._socket.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._stopped: concurrent.futures.Future[None] | None = None
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(started, failure), name="featuremap-http",
                                        daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._socket.close()
            self.executor.shutdown(wait=False)
            raise failure[0]

    # -- the loop -----------------------------------------------------------

    def _run(self, started: threading.Event, failure: list[BaseException]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as error:  # noqa: BLE001 - reported to the constructor's thread
            failure.append(error)
            started.set()
            self.loop.close()
            return
        started.set()
        self.loop.run_forever()
        self.loop.close()

    async def _start(self) -> None:
        # aiohttp logs a malformed request (bad chunking, oversized headers) as a traceback; it has
        # already answered it 400, and a stranger's garbage is not an event of this server's.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        app = web.Application(client_max_size=self.settings.max_message_bytes, handler_args={
            "max_line_size": MAX_HEADER_BYTES, "max_field_size": MAX_HEADER_BYTES})
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=IDLE_TIMEOUT)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket, ssl_context=self._tls).start()

    def stop(self, grace: float) -> concurrent.futures.Future[None]:
        """Stop listening, let calls and streams finish within ``grace`` seconds, then end them.

        Returns at once; the future is done when the gateway has stopped.
        """
        if self._stopped is None:
            self._stopped = asyncio.run_coroutine_threadsafe(self._stop(grace), self.loop)
        return self._stopped

    async def _stop(self, grace: float) -> None:
        assert self._runner is not None
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        deadline = self.loop.time() + grace
        while (self._active or self.streams.open) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)
        await self.streams.close_all()
        await self._runner.cleanup()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loop.call_soon(self.loop.stop)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end (after :meth:`stop`)."""
        self._thread.join(timeout)

    # -- requests ------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self._active += 1
        try:
            cors = self.origins.check(request)
            response = await self._answer(request, cors)
        except HttpError as error:
            response = self._error(error.status, error.code, error.message, error.field)
            cors = self.origins.headers(request)
        except asyncio.IncompleteReadError:
            response = self._error(400, grpc.StatusCode.INVALID_ARGUMENT, "the body ended before its Content-Length")
            cors = {}
        except (ConnectionError, ClientPayloadError, HttpProcessingError):  # the caller went away mid-body
            response = self._error(400, grpc.StatusCode.INVALID_ARGUMENT, "the body did not arrive whole")
            cors = {}
        except Exception:  # noqa: BLE001 - a bug of ours: logged, answered INTERNAL, the server goes on
            log.exception("internal error in the HTTP gateway", extra={"path": request.path[:200]})
            response = self._error(500, grpc.StatusCode.INTERNAL, "internal error (the server log has the details)")
            cors = {}
        finally:
            self._active -= 1
        if not response.prepared:
            response.headers.update(cors)
        return response

    async def _answer(self, request: web.Request, cors: dict[str, str]) -> web.StreamResponse:
        path = request.path
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self.origins.preflight(cors)
        if path in ("/", "/index.html") or path.startswith("/static/"):
            return self._static(request, "index.html" if not path.startswith("/static/") else path[len("/static/"):])
        if path == "/openapi.json":
            self._only(request, ("GET", "HEAD"))
            return web.Response(body=self.openapi, content_type="application/json")
        allowed = []
        for route in self.routes:
            variables = route.match(path)
            if variables is None:
                continue
            if route.streaming:
                if request.method == "GET":
                    return await self.streams.serve(request, route)
            elif route.verb == request.method:
                return await self._call(request, route, variables)
            allowed.append("GET" if route.streaming else route.verb)
        if allowed:
            raise HttpError(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} {path}: use {' or '.join(allowed)}",
                            status=405)
        raise HttpError(grpc.StatusCode.NOT_FOUND, f"no route {path}: see /openapi.json for the routes")

    @staticmethod
    def _only(request: web.Request, methods: tuple[str, ...]) -> None:
        if request.method not in methods:
            raise HttpError(grpc.StatusCode.UNIMPLEMENTED, f"{request.method} {request.path}: use {methods[0]}",
                            status=405)

    def _static(self, request: web.Request, name: str) -> web.Response:
        self._only(request, ("GET", "HEAD"))
        found = self.static.get(name)
        if found is None:
            raise HttpError(grpc.StatusCode.NOT_FOUND, f"no file {name!r} in the live view")
        body, kind = found
        return web.Response(body=body, content_type=kind, headers={
            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer"})

    # -- calls ---------------------------------------------------------------------

    def authorize(self, rpc: str, authorization: str) -> None:
        """Refuse a call the server's tokens do not allow (the gRPC side's own check)."""
        if self.auth is None:
            return
        refused = self.auth.check(rpc, authorization)
        if refused is not None:
            raise HttpError(*refused)

    async def _call(self, request: web.Request, route: Route, variables: dict[str, str]) -> web.Response:
        self.authorize(route.rpc, request.headers.get("Authorization", ""))
        # As gRPC's maximum_concurrent_rpcs: calls past the pool's depth are refused before their body
        # is read, so the bodies held at once are bounded (each by max_message_bytes).
        if self._calls >= self._call_limit:
            raise HttpError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self._calls} HTTP calls are in progress, the most this server takes at once; "
                            "retry shortly", status=429)
        self._calls += 1
        try:
            return await self._served(request, route, variables)
        finally:
            self._calls -= 1

    async def _served(self, request: web.Request, route: Route, variables: dict[str, str]) -> web.Response:
        message = getattr(pb, route.method.input_type.name)()
        for path, value in variables.items():
            set_path(message, path, value)
        taken = set(variables)
        body_fields = await self.bodies.read_into(request, route, message)
        taken |= body_fields
        if route.body == "*" and body_fields == {"*"} and request.query:
            raise HttpError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"query parameters with a JSON body: every field of {route.method.input_type.name} "
                            f"goes in the body (got {', '.join(sorted(request.query))})",
                            field=next(iter(request.query)))
        set_parameters(message, list(request.query.items()), taken=frozenset(taken - {"*"}))
        context = HttpContext(peer_of(request), connection_open(request), _timeout(request),
                              [("authorization", request.headers.get("Authorization", ""))])
        handler = getattr(self.servicer, route.rpc)
        try:
            answer = await self.loop.run_in_executor(self.executor, handler, message, context)
        except Aborted as aborted:
            code = aborted.code
            if code == grpc.StatusCode.CANCELLED and context.expired:
                code, aborted.message = grpc.StatusCode.DEADLINE_EXCEEDED, \
                    "the call's deadline (X-Server-Timeout) passed: " + aborted.message
            return self._error(HTTP_STATUS[code], code, aborted.message)
        finally:
            context.end()
        if context.code not in (None, grpc.StatusCode.OK):
            return self._error(HTTP_STATUS[context.code], context.code, context.details)
        if isinstance(answer, bytes):  # Match answers with its wire bytes (maps written once)
            answer = getattr(pb, route.method.output_type.name).FromString(answer)
        return web.Response(body=to_json(answer), content_type="application/json")

    def _error(self, status: int, code: grpc.StatusCode, message: str, field: str | None = None) -> web.Response:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return web.Response(status=status, body=error_json(code, message, field), content_type="application/json",
                            headers=headers)


def _timeout(request: web.Request) -> float | None:
    """The call's deadline in seconds from ``X-Server-Timeout`` (as Google's APIs take it); None without one."""
    text = request.headers.get("X-Server-Timeout")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, f"X-Server-Timeout must be seconds > 0, got {text[:40]!r}")
    return seconds
