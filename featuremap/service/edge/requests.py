"""Requests read from their wire bytes, for gRPC's handlers and the gateway's WebSocket alike."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError, Message

from ..errors import Malformed


def request_parser(message: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """``message.FromString``, but bytes that do not parse become a :class:`Malformed` for the handler."""

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as error:
            return Malformed(message.DESCRIPTOR.name, str(error) or "truncated or corrupt")

    return parse
