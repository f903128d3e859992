"""The client's one exception tree, rooted at FeatureMapError, each kind also the builtin it refines."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import grpc

_P = ParamSpec("_P")
_R = TypeVar("_R")


class FeatureMapError(Exception):
    """A call that failed: the gRPC status ``code`` and the server's ``details``.

    Raised ``from None`` out of ``grpc.RpcError`` so that tracebacks show the
    call, not gRPC's internals.

    Attributes
    ----------
    code : grpc.StatusCode
        The canonical code: INVALID_ARGUMENT (fix the request), NOT_FOUND,
        ALREADY_EXISTS, RESOURCE_EXHAUSTED (a limit: smaller request, or retry
        later for max_calls), UNAVAILABLE (retry, another replica), ...
    code_name : str
        Its name ("NOT_FOUND"), for logs and JSON.
    details : str
        The server's message: what to fix.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.code_name: str = code.name
        self.details = details


# One tree: every error the client raises is a FeatureMapError, and each kind also the builtin it
# refines, so that `except ValueError` (or LookupError, TimeoutError, ...) keeps working.
class InvalidArgumentError(FeatureMapError, ValueError):
    """A request the server (or the client, before sending) refuses: fix it (INVALID_ARGUMENT)."""


class SettingTypeError(InvalidArgumentError, TypeError):
    """A setting of the wrong kind or name (INVALID_ARGUMENT, raised by the client)."""


class NotFoundError(FeatureMapError, LookupError):
    """No such template (NOT_FOUND)."""


class AlreadyExistsError(FeatureMapError):
    """A template of that id exists (ALREADY_EXISTS)."""


class LimitError(FeatureMapError):
    """A limit of the server (RESOURCE_EXHAUSTED): a smaller request, or later."""


class AccessError(FeatureMapError, PermissionError):
    """No token, or one without the scope the call needs (UNAUTHENTICATED, PERMISSION_DENIED)."""


class UnavailableError(FeatureMapError, ConnectionError):
    """No server answers (UNAVAILABLE): start one, or retry (another replica)."""


class TimedOutError(FeatureMapError, TimeoutError):
    """The call's deadline passed (DEADLINE_EXCEEDED)."""


class FileError(FeatureMapError, FileNotFoundError):
    """A file the client was given does not exist (raised by the client)."""


_KINDS: dict[grpc.StatusCode, type[FeatureMapError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitError,
    grpc.StatusCode.UNAUTHENTICATED: AccessError,
    grpc.StatusCode.PERMISSION_DENIED: AccessError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimedOutError,
}


def error_of(code: grpc.StatusCode, details: str) -> FeatureMapError:
    """The FeatureMapError of the kind that fits ``code`` (the base class for the others)."""
    return _KINDS.get(code, FeatureMapError)(code, details)


def _invalid(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _translated(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn ``grpc.RpcError`` into :class:`FeatureMapError`, keeping the method's signature."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as error:
            raise error_of(error.code(), error.details() or "") from None

    return call


def no_server(address: str) -> str:
    """What to say when nothing listens at ``address``: that, and what to do."""
    return f"no server at {address} — start one with `featuremap-server serve` (or point --address at one)"


def nothing_listens(error: FeatureMapError) -> bool:
    """Whether an UNAVAILABLE error means that nothing listens (not a TLS or certificate mismatch, which
    its details name and which is said as it is)."""
    details = error.details.lower()
    return error.code == grpc.StatusCode.UNAVAILABLE and not any(word in details for word in
                                                                 ("ssl", "handshake", "certificate", "tls"))
