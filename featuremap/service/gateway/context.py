"""The servicer context of a call that came over HTTP.

The gateway calls the gRPC servicer's own methods (one code path: the same
validation, memory budget, limits, metrics and logs); they take a
``grpc.ServicerContext``. This one answers from the HTTP side: the call is
active while its connection is open and its deadline (``X-Server-Timeout``)
has not passed; ``abort`` raises :class:`Aborted`, which the gateway turns
into its HTTP status and JSON error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc


class Aborted(Exception):
    """A call the servicer ended with a status (``context.abort``)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HttpContext(grpc.ServicerContext):
    """A ``grpc.ServicerContext`` for a call made over HTTP or a WebSocket.

    Parameters
    ----------
    peer : str
        The caller, as gRPC names peers (``ipv4:127.0.0.1:50000``).
    connected : callable
        Whether the caller's connection is still open (asked from any thread).
    timeout : float, optional
        Seconds the caller allows (the deadline); None: no deadline.
    metadata : sequence of (str, str)
        The request's headers that gRPC would see as metadata.
    """

    def __init__(self, peer: str, connected: Callable[[], bool], timeout: float | None = None,
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._peer = peer
        self._connected = connected
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._metadata = tuple(metadata)
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._ended = False
        self.code: grpc.StatusCode | None = None
        self.details = ""

    @property
    def expired(self) -> bool:
        """Whether the call's deadline has passed."""
        return self._deadline is not None and time.monotonic() > self._deadline

    def is_active(self) -> bool:
        return not self._ended and not self.expired and self._connected()

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> None:
        """End the call (its connection closed, or the gateway stops): what waits on it stops."""
        self.end()

    def end(self) -> None:
        """The call is over: run the callbacks once, as gRPC does when an RPC terminates."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self._lock:
            if not self._ended:
                self._callbacks.append(callback)
                return True
        return False

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)

    def abort_with_status(self, status: Any) -> NoReturn:
        raise Aborted(status.code, status.details)

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer_identities(self) -> None:
        return None  # client certificates are checked by TLS itself (mutual TLS), not by the servicer

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    # What only the gRPC transport does: nothing to do over HTTP.
    def set_compression(self, compression: Any) -> None:
        pass

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        pass

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        pass

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code  # the gateway answers with it when the handler returns (as gRPC would)

    def set_details(self, details: str) -> None:
        self.details = details

    def disable_next_message_compression(self) -> None:
        pass


def peer_of(request: Any) -> str:
    """The caller of an aiohttp request as gRPC names peers (``ipv4:127.0.0.1:50000``), for the servicer's logs."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not peername:
        return "http:unknown"
    host, port = peername[0], peername[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def connection_open(request: Any) -> Callable[[], bool]:
    """Whether an aiohttp request's connection is still open (asked from the servicer's thread)."""
    transport = request.transport

    def connected() -> bool:
        return transport is not None and not transport.is_closing()

    return connected

