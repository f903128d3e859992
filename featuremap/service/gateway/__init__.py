"""featuremap.service.gateway: the HTTP/JSON gateway and the live view (``--http-address``, featuremap[http]).

The proto's ``google.api.http`` rules served over HTTP/1.1 by aiohttp in the
server's process, every call answered by the gRPC servicer's own method;
StreamMatch as a WebSocket; the live view's page (``static/``) at ``/`` and
the OpenAPI document at ``/openapi.json``. See docs/http.md.
"""

from .app import Gateway

__all__ = ["Gateway"]
