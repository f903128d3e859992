"""The metrics endpoint: Prometheus's text format over HTTP, from one event loop on one thread.

prometheus_client's own server starts a thread per connection and never
times a connection out: 300 half-open connections made 315 threads. Here
every connection is a coroutine of one asyncio loop on one thread: a
connection that sends nothing costs a few kilobytes until its read timeout
ends it, at most :data:`MAX_CONNECTIONS` are open at once (more are closed
on arrival), and a scrape is answered however many idle connections wait
beside it.
"""

from __future__ import annotations

import asyncio
import socket
import threading

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

#: Seconds a connection may take to send its request line and headers.
READ_TIMEOUT = 10.0
#: Open connections at most (and at most a quarter of the process's file descriptors: gRPC and the
#: bank need theirs); a new one beyond is closed at once.
MAX_CONNECTIONS = 2048


def _connection_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft // 4))
#: Bytes of request line and headers read at most.
MAX_HEADER_BYTES = 16 << 10


class MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` (and ``/``) until :meth:`stop`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._loop = asyncio.new_event_loop()
        self._open = 0
        self.limit = _connection_limit()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))  # an address in use fails here, in the caller's thread
        self._socket.listen(512)
        self._socket.setblocking(False)
        self.port = self._socket.getsockname()[1]
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="featuremap-metrics", daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._serve, sock=self._socket, limit=MAX_HEADER_BYTES)

        self._loop.run_until_complete(start())
        started.set()
        self._loop.run_forever()
        # Stopped: end the connections still open (each closes its socket), then the loop.
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.limit:
            writer.close()
            return
        self._open += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, path = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            if method not in (b"GET", b"HEAD"):
                await self._reply(writer, b"405 Method Not Allowed", b"text/plain", b"GET /metrics\n")
            elif path.split(b"?")[0] in (b"/metrics", b"/"):
                body = generate_latest(self._registry)
                await self._reply(writer, b"200 OK", CONTENT_TYPE_LATEST.encode(), body if method == b"GET" else b"",
                                  len(body))
            else:
                await self._reply(writer, b"404 Not Found", b"text/plain", b"GET /metrics\n")
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                asyncio.CancelledError):
            pass  # silent, slow, oversized or stopped: the connection is closed, nothing else happens
        finally:
            self._open -= 1
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: bytes, content_type: bytes, body: bytes,
                     length: int | None = None) -> None:
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
                     + str(len(body) if length is None else length).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await asyncio.wait_for(writer.drain(), READ_TIMEOUT)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._open

    def stop(self) -> None:
        """Close the listening socket and every connection; end the loop's thread."""
        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._loop.stop()

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(close)
            self._thread.join(5)
