"""gRPC status codes as HTTP statuses, WebSocket close codes and JSON error bodies.

An error over HTTP is the status the servicer (or the gateway's own parsing)
decided, mapped as Google's APIs map them (``google/rpc/code.proto``), with
the body ``{"code", "message", "details"}``: ``code`` the gRPC code's number,
``message`` the servicer's message, ``details`` a ``google.rpc.ErrorInfo``
naming the code (and a ``google.rpc.BadRequest`` naming the field, where the
gateway found a bad one).
"""

from __future__ import annotations

import json
from typing import Any

import grpc

#: gRPC code -> HTTP status, from google/rpc/code.proto.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

#: gRPC code -> WebSocket close code (RFC 6455): 1008 the caller's fault or not allowed, 1013 try
#: again later, 1011 the server's fault, 1001 going away.
CLOSE_CODE = {
    grpc.StatusCode.OK: 1000,
    grpc.StatusCode.CANCELLED: 1000,
    grpc.StatusCode.DEADLINE_EXCEEDED: 1000,
    grpc.StatusCode.UNAVAILABLE: 1013,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 1013,
    grpc.StatusCode.INTERNAL: 1011,
    grpc.StatusCode.UNKNOWN: 1011,
    grpc.StatusCode.DATA_LOSS: 1011,
}
#: The close code of every other status (the caller's mistakes, refusals).
POLICY = 1008
#: A close reason is at most 123 bytes (RFC 6455, 5.5).
REASON_BYTES = 123


class HttpError(Exception):
    """An error the gateway answers itself: an HTTP status, the gRPC code it stands for, a message.

    ``field`` names the request field at fault (a ``google.rpc.BadRequest`` detail).
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, status: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = HTTP_STATUS[code] if status is None else status
        self.field = field


def error_body(code: grpc.StatusCode, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON error of a status: ``{"code", "message", "details"}``."""
    details: list[dict[str, Any]] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": code.name, "domain": "featuremap.v1"}]
    if field is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": field, "description": message}]})
    return {"code": code.value[0], "message": message, "details": details}


def error_json(code: grpc.StatusCode, message: str, field: str | None = None) -> bytes:
    return json.dumps(error_body(code, message, field)).encode()


def close_reason(message: str) -> bytes:
    """``message`` cut to what a WebSocket close frame may carry (whole UTF-8 characters)."""
    data = message.encode()
    if len(data) <= REASON_BYTES:
        return data
    return data[:REASON_BYTES - 3].decode(errors="ignore").encode() + b"..."
