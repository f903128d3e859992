"""Which pages may call the gateway: the gateway's own, and the origins ``http_allow_origin`` lists (CORS)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import grpc
from aiohttp import web

from .statuses import HttpError


class Origins:
    """The origins allowed to call, and the CORS headers their requests get.

    Parameters
    ----------
    allowed : iterable of str
        Origins (``https://app.example``) or ``*``; empty: the gateway's own pages only.
    tls : bool
        Whether the gateway serves HTTPS (its own origin's scheme).
    """

    def __init__(self, allowed: Iterable[str], tls: bool) -> None:
        self.allowed = tuple(allowed)
        self._scheme = "https" if tls else "http"

    def check(self, request: web.Request) -> dict[str, str]:
        """Refuse a browser request from an origin not allowed; the CORS headers of one allowed."""
        origin = request.headers.get("Origin")
        if origin is None or self.same_origin(request, origin):
            return {}
        if "*" in self.allowed or origin.rstrip("/") in self.allowed:
            return self.headers(request)
        raise HttpError(grpc.StatusCode.PERMISSION_DENIED,
                        f"origin {origin[:80]!r} is not allowed: the gateway answers pages from itself"
                        + (f" and {', '.join(self.allowed)}" if self.allowed else "")
                        + " (http_allow_origin)")

    def same_origin(self, request: web.Request, origin: str) -> bool:
        """Whether a page of ``origin`` is the gateway's own: the origin names the host the request was
        sent to, and that host is an address or localhost. A page under another name must be listed
        in http_allow_origin: DNS rebinding points an attacker's name at this server, and the browser
        then sends a Host and an Origin of that name that agree."""
        if origin != f"{self._scheme}://{request.host}":
            return False
        name = (request.url.host or "").strip("[]").lower()
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def headers(self, request: web.Request) -> dict[str, str]:
        """The CORS headers of an answer to ``request`` (none for the gateway's own pages or an origin not allowed)."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allowed or self.same_origin(request, origin):
            return {}
        if "*" not in self.allowed and origin.rstrip("/") not in self.allowed:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": "Content-Type"}

    @staticmethod
    def preflight(cors: dict[str, str]) -> web.Response:
        """The answer to a CORS preflight of an allowed origin."""
        return web.Response(status=204, headers={
            **cors, "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Server-Timeout",
            "Access-Control-Max-Age": "600"})
