"""Bearer tokens with scopes, checked by a server interceptor.

``--tokens-file`` holds one ``token scope[,scope]`` per line (``#`` starts a
comment). Scopes: ``match`` (Match, StreamMatch, GetTemplate, ListTemplates)
and ``admin`` (CreateTemplate, DeleteTemplate; it implies ``match``). Health
and reflection stay open. A missing or unknown token is UNAUTHENTICATED, a
token without the scope PERMISSION_DENIED. Tokens are compared in constant
time and never logged. The HTTP gateway asks the same :meth:`TokenAuth.check`
with its ``Authorization`` header.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

SERVICE_PREFIX = "/featuremap.v1.FeatureMapService/"
SCOPES = ("match", "admin")
_ADMIN_METHODS = {"CreateTemplate", "DeleteTemplate"}
_STREAMING = {"StreamMatch"}


def load_tokens(path: str | Path) -> dict[str, frozenset[str]]:
    """Tokens and their scopes from a tokens file; ValueError names a bad line (not its token)."""
    tokens: dict[str, frozenset[str]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'token scope[,scope]'")
        token, scopes = parts[0], frozenset(s for s in parts[1].split(",") if s)
        if not scopes or not scopes <= set(SCOPES):
            # Never echo the field: with token and scopes swapped it is the token.
            raise ValueError(f"{path}:{number}: the second field must be scopes ({', '.join(SCOPES)}, "
                             "comma-separated): is the line 'token scope' in that order?")
        if len(token) < 16:
            raise ValueError(f"{path}:{number}: tokens must have at least 16 characters")
        tokens[token] = scopes | ({"match"} if "admin" in scopes else set())
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


def _deny(method: str, code: grpc.StatusCode, message: str):
    def abort(request, context):
        context.abort(code, message)

    if method in _STREAMING:
        return grpc.stream_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class TokenAuth(grpc.ServerInterceptor):
    """Lets a call through only with a bearer token that has the method's scope."""

    def __init__(self, tokens: dict[str, frozenset[str]]) -> None:
        self._tokens = [(token.encode(), scopes) for token, scopes in tokens.items()]

    def _scopes_of(self, presented: bytes) -> frozenset[str] | None:
        found = None
        for token, scopes in self._tokens:  # no early exit: the time says nothing about which token
            if hmac.compare_digest(token, presented):
                found = scopes
        return found

    def check(self, method: str, authorization: str) -> tuple[grpc.StatusCode, str] | None:
        """Whether a call of ``method`` with this ``authorization`` value may go through.

        The one decision for both doors, gRPC metadata and the HTTP gateway's
        ``Authorization`` header.

        Parameters
        ----------
        method : str
            The RPC's name in FeatureMapService (``Match``, ``CreateTemplate``, ...).
        authorization : str
            The ``authorization`` metadata or header as sent (``Bearer <token>``); empty if none.

        Returns
        -------
        tuple of (grpc.StatusCode, str) or None
            None to let the call through, else the status to refuse it with.
        """
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():  # RFC 6750: the scheme is case-insensitive
            return (grpc.StatusCode.UNAUTHENTICATED,
                    "missing token: send 'authorization: Bearer <token>' (gRPC metadata or an HTTP header)")
        scopes = self._scopes_of(presented.strip().encode())
        if scopes is None:
            return grpc.StatusCode.UNAUTHENTICATED, "unknown token"
        needed = "admin" if method in _ADMIN_METHODS else "match"
        if needed not in scopes:
            return grpc.StatusCode.PERMISSION_DENIED, f"{method} needs a token with the {needed} scope"
        return None

    def intercept_service(self, continuation, handler_call_details):
        full = handler_call_details.method or ""
        if not full.startswith(SERVICE_PREFIX):
            return continuation(handler_call_details)  # health and reflection stay open
        method = full[len(SERVICE_PREFIX):]
        header = str(dict(handler_call_details.invocation_metadata or ()).get("authorization", ""))
        refused = self.check(method, header)
        if refused is not None:
            return _deny(method, *refused)
        return continuation(handler_call_details)
