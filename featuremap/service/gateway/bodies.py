"""Request bodies into request messages: JSON, a raw image, or a multipart form, each held to the size limit."""

from __future__ import annotations

import asyncio

import grpc
from aiohttp import BodyPartReader, web
from google.protobuf.message import Message

from .messages import parse_json, set_parameters, set_path
from .rules import Route
from .statuses import HttpError

#: Seconds a request may take to send its body (a caller that stalls mid-body holds a call's place
#: and, at shutdown, the drain: it is answered 408 instead).
BODY_TIMEOUT = 30.0


class BodyReader:
    """Reads request bodies into messages, never more than ``limit`` bytes of one.

    Parameters
    ----------
    limit : int
        The most bytes a body may have (``max_message_bytes``): refused by its
        ``Content-Length`` before reading, and while reading when it has none.
    uploads : dict
        Per RPC, its image fields by form-part name (``image``, ``mask``) and their field paths.
    """

    def __init__(self, limit: int, uploads: dict[str, dict[str, str]]) -> None:
        self.limit = limit
        self._uploads = uploads

    async def read_into(self, request: web.Request, route: Route, message: Message) -> set[str]:
        """Fill ``message`` from the body: JSON, a raw image, or a multipart form. The field paths set."""
        if not route.body or not request.body_exists:
            return set()
        kind = request.content_type
        target = "" if route.body == "*" else route.body
        uploads = self._uploads.get(route.rpc, {})
        if kind == "application/json" or kind.endswith("+json"):
            parse_json(await self._read(request), message, target)
            return {target or "*"}
        if kind.startswith("image/") and uploads:
            path = next(iter(uploads.values()))
            set_path(message, path + ".encoded", await self._read(request))
            return {path}
        if kind == "multipart/form-data" and uploads:
            try:
                return await self._read_form(request, route, message, uploads)
            except (ValueError, AssertionError) as error:  # aiohttp's multipart parser: no boundary, a broken part
                raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, f"the multipart form does not parse: {error}"[:300]) \
                    from None
        accepted = "application/json" + (", image/jpeg (png, webp) or multipart/form-data" if uploads else "")
        raise HttpError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{request.method} {request.path} takes {accepted}, not {kind or 'a body without a type'}",
                        status=415)

    def _too_large(self, size: int | None = None) -> HttpError:
        limit = self.limit
        said = f"{size} bytes" if size is not None else "the body"
        return HttpError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{said} is over the limit of {limit} bytes (max_message_bytes)", status=413)

    async def _read(self, request: web.Request) -> bytes:
        """The body, refused before reading when its length is over the limit (and while reading, when
        it comes without one)."""
        limit = self.limit
        if request.content_length is not None and request.content_length > limit:
            raise self._too_large(request.content_length)
        try:
            return await asyncio.wait_for(self._body(request, limit), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            raise HttpError(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"the body did not arrive within {BODY_TIMEOUT:g} s", status=408) from None

    async def _body(self, request: web.Request, limit: int) -> bytes:
        if request.content_length is not None:
            return await request.content.readexactly(request.content_length)
        chunks, total = [], 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            if total > limit:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_form(self, request: web.Request, route: Route, message: Message,
                         uploads: dict[str, str]) -> set[str]:
        """A multipart form: file parts named after the Image fields (``image``, ``mask``), the other
        parts field paths, as query parameters are."""
        limit = self.limit
        if request.content_length is not None and request.content_length > limit:
            raise self._too_large(request.content_length)
        reader = await request.multipart()
        total, fields, taken = 0, [], set()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or not part.name:
                raise HttpError(grpc.StatusCode.INVALID_ARGUMENT,
                                "every part of the form needs a name (and no part may be a form itself)")
            chunks = []
            while chunk := await part.read_chunk(1 << 16):
                total += len(chunk)
                if total > limit:
                    raise self._too_large()
                chunks.append(chunk)
            data = b"".join(chunks)
            name = part.name
            if name in uploads:
                if uploads[name] in taken:
                    raise HttpError(grpc.StatusCode.INVALID_ARGUMENT, f"the form has two {name!r} parts",
                                    field=uploads[name])
                set_path(message, uploads[name] + ".encoded", data)
                taken.add(uploads[name])
            else:
                try:
                    fields.append((name, data.decode()))
                except UnicodeDecodeError:
                    raise HttpError(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"form field {name!r} is not UTF-8 text (files go in "
                                    f"{' or '.join(repr(u) for u in uploads)})", field=name) from None
        set_parameters(message, fields, taken=frozenset(taken), where="form field")
        return taken
