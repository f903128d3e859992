"""Helpers for the HTTP gateway's tests: plain HTTP/1.1 and WebSocket clients against a real port."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
from typing import Any

import cv2
import numpy as np


class Http:
    """A keep-alive HTTP/1.1 connection to the gateway (TCP_NODELAY set, as a client should)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None,
                 timeout: float = 60.0) -> None:
        if tls is None:
            self.connection: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=timeout)
        else:
            self.connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def json(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             raw: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
        """A call with a JSON body (``body``) or a raw one (``raw`` of ``content_type``); the JSON answer."""
        headers = dict(headers or {})
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif content_type is not None:
            headers["Content-Type"] = content_type
        status, _, answer = self.request(method, path, data, headers)
        return status, json.loads(answer) if answer else None

    def close(self) -> None:
        self.connection.close()


def multipart(fields: dict[str, str | bytes | list[str]]) -> tuple[bytes, str]:
    """A multipart/form-data body (bytes values as file parts) and its content type."""
    boundary = "featuremap-test-boundary-7d1f"
    parts = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bytes):
                head = (f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                        "Content-Type: application/octet-stream\r\n\r\n").encode()
                parts.append(head + item)
            else:
                parts.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{item}'.encode())
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def encoded(image: np.ndarray, kind: str = ".png") -> bytes:
    ok, data = cv2.imencode(kind, image)
    assert ok
    return data.tobytes()


def frame_bytes(image: np.ndarray, sequence: int) -> bytes:
    """A StreamMatchRequest carrying ``image`` as a JPEG: a WebSocket's binary message."""
    from featuremap.v1 import featuremap_pb2 as pb

    return pb.StreamMatchRequest(frame=pb.Frame(sequence=sequence, image=pb.Image(encoded=encoded(image, ".jpg")))
                                 ).SerializeToString()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_field(answer: dict) -> str | None:
    """The field a JSON error's google.rpc.BadRequest names, if any."""
    for detail in answer.get("details", []):
        if detail.get("@type", "").endswith("google.rpc.BadRequest"):
            return detail["fieldViolations"][0]["field"]
    return None


def websocket(url: str, messages: list[Any], *, receive: int | None = None, protocols: tuple[str, ...] = (),
              headers: dict[str, str] | None = None, timeout: float = 60.0, ssl_context: Any = None) -> dict:
    """Open a WebSocket, send ``messages`` (bytes: binary, str: text), read until it closes (or
    ``receive`` text messages came, then close). Returns {"texts": [...], "code": close code, "reason"}."""
    import aiohttp

    async def run() -> dict:
        texts: list[Any] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, protocols=protocols, headers=headers, max_msg_size=0,
                                          ssl=ssl_context if ssl_context is not None else True) as ws:
                for message in messages:
                    try:
                        if isinstance(message, bytes):
                            await ws.send_bytes(message)
                        else:
                            await ws.send_str(message)
                    except ConnectionError:  # the server closed it mid-send: its close frame says why
                        break
                while receive is None or len(texts) < receive:
                    message = await asyncio.wait_for(ws.receive(), timeout)
                    if message.type == aiohttp.WSMsgType.TEXT:
                        texts.append(json.loads(message.data))
                    elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                          aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                        break
                if receive is not None and len(texts) >= receive:
                    await ws.close()
                closed = message.type == aiohttp.WSMsgType.CLOSE  # the server's close frame, as a browser reads it
                return {"texts": texts, "code": message.data if closed else ws.close_code,
                        "reason": (message.extra or "") if closed else "", "protocol": ws.protocol}

    return asyncio.run(run())
