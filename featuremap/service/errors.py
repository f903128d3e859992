"""The service's errors: each names its status (a gRPC status code's name) and says what to fix.

No RPC library here: the bank, its stores and the frame path raise these, and
only the server's edge (status.py) turns them into a gRPC status (house rule 4).
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error with a status (the name of a gRPC status code) and a message that says what to fix."""

    code = "INTERNAL"


class InvalidArgument(ServiceError, ValueError):
    code = "INVALID_ARGUMENT"


class NotFound(ServiceError, LookupError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class LimitExceeded(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = "DEADLINE_EXCEEDED"


class Malformed:
    """Stands in for a request message whose bytes did not parse, so that the handler answers
    INVALID_ARGUMENT (gRPC's own deserialisation failure would be INTERNAL)."""

    def __init__(self, message_name: str, reason: str) -> None:
        self.error = InvalidArgument(f"the request is not a valid {message_name}: {reason}")
