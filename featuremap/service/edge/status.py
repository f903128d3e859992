"""The one place that turns what went wrong while serving a call into a gRPC status (house rule 4)."""

from __future__ import annotations

import grpc

from ..engine import Cancelled, OptionError
from ..errors import ServiceError


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving a call.

    A :class:`ServiceError` carries its status's name. The engine's
    :class:`OptionError` is the caller's mistake: INVALID_ARGUMENT with the
    engine's message. Anything else is a bug on our side: INTERNAL, without
    internals in the message (the caller logs it).
    """
    if isinstance(error, ServiceError):
        return grpc.StatusCode[error.code], str(error)
    if isinstance(error, OptionError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, Cancelled):  # the caller went away or its deadline passed
        return grpc.StatusCode.CANCELLED, str(error)
    return grpc.StatusCode.INTERNAL, "internal error (the server log has the details)"
