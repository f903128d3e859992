"""The client's gRPC channel: its target (one address, several, or a ``dns:///`` name), options and TLS."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path

import grpc

from .errors import FileError, UnavailableError, _invalid

#: The largest message either way (a frame, its maps).
MAX_MESSAGE = 64 << 20


def channel_target(address: str) -> str:
    """A gRPC target for one address, a comma-separated list, or a ``dns:///`` name.

    Several host:port addresses are resolved here and joined into one
    ``ipv4:``/``ipv6:`` target, so that gRPC's round_robin policy spreads
    calls over all of them.
    """
    if "," not in address:
        return address
    resolved = []
    for part in (a.strip() for a in address.split(",") if a.strip()):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise _invalid(f"{part!r} is not host:port")
        try:
            infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, f"cannot resolve {host}: {error}") from None
        family, *_, sockaddr = infos[0]
        resolved.append((family, sockaddr[0], int(port)))
    if all(family == socket.AF_INET for family, _, _ in resolved):
        return "ipv4:" + ",".join(f"{ip}:{port}" for _, ip, port in resolved)
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for _, ip, port in resolved)


def open_channel(address: str, *, options: Iterable[tuple[str, object]] | None = None, tls: bool = False,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> grpc.Channel:
    """A channel to ``address`` with the client's options (``options`` over them); TLS with any of the files.

    Raises
    ------
    InvalidArgumentError
        One of ``cert_file`` and ``key_file`` without the other, or an address list that is not host:port.
    FileError
        A file that cannot be read.
    UnavailableError
        A name of the address list that does not resolve.
    """
    defaults = {
        "grpc.max_send_message_length": MAX_MESSAGE,
        "grpc.max_receive_message_length": MAX_MESSAGE,
        # Find out about a dead server or a broken route within seconds.
        "grpc.keepalive_time_ms": 20000,
        "grpc.keepalive_timeout_ms": 10000,
        "grpc.keepalive_permit_without_calls": 0,
        # Spread calls over every address the target resolves to.
        "grpc.lb_policy_name": "round_robin",
    }
    defaults.update(dict(options or []))
    target, channel_options = channel_target(address), list(defaults.items())
    if not (tls or ca_file or cert_file or key_file):
        return grpc.insecure_channel(target, options=channel_options)
    if bool(cert_file) != bool(key_file):
        raise _invalid("cert_file and key_file go together: give both or neither")

    def read(path: str | None) -> bytes | None:
        try:
            return Path(path).read_bytes() if path else None
        except OSError as error:
            raise FileError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: {error.strerror}") from None

    credentials = grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))
    return grpc.secure_channel(target, credentials, options=channel_options)
