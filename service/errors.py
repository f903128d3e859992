"""The service's errors and the one place that maps them to gRPC status codes (house rule 4)."""

from __future__ import annotations

import grpc

from .engine import Cancelled, OptionError


class ServiceError(Exception):
    """An error with a gRPC status code and a message that says what to fix."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class LimitExceeded(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Malformed:
    """Stands in for a request message whose bytes did not parse, so that the handler answers
    INVALID_ARGUMENT (gRPC's own deserialisation failure would be INTERNAL)."""

    def __init__(self, message_name: str, reason: str) -> None:
        self.error = InvalidArgument(f"the request is not a valid {message_name}: {reason}")


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a call.

    The engine's :class:`OptionError` is the caller's mistake: INVALID_ARGUMENT
    with the engine's message. Anything else is a bug on our side: INTERNAL,
    without internals in the message (the caller logs it).
    """
    if isinstance(error, ServiceError):
        return error.code, str(error)
    if isinstance(error, OptionError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, Cancelled):  # the caller went away or its deadline passed
        return grpc.StatusCode.CANCELLED, str(error)
    return grpc.StatusCode.INTERNAL, "internal error (the server log has the details)"
