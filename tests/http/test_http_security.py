"""The HTTP gateway's doors: the server's tokens and TLS, and browsers' origins (CORS off by default)."""

import base64
import http.client
import ssl

import grpc
import pytest

from featuremap.service.edge.config import SettingsError, settings_from

from gateway_helpers import Http, encoded, frame_bytes, websocket
from service_helpers import running_server, scene
from certificates import pki  # noqa: F401  (the fixture: a CA, server and client certificates)

ADMIN, MATCHER = "admin-0123456789abcdefgh", "matcher-0123456789abcdef"


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"{MATCHER} match\n{ADMIN} admin\n")
    return str(path)


def test_tokens_and_scopes_as_for_grpc(tmp_path, tokens, caplog):
    with running_server(tmp_path / "data", http_address="127.0.0.1:0", tokens_file=tokens) as (_, _, server):
        http = Http(server.http_port)
        png = encoded(scene(1, 40, 40, 3)[:16, :16])
        # None, unknown: 401 with the gRPC side's own words; the static page and the OpenAPI stay open.
        for header in ({}, {"Authorization": "Bearer wrong-0123456789abcdef"}, {"Authorization": "Basic abc"}):
            status, answer = http.json("GET", "/v1/templates", headers=header)
            assert status == 401 and answer["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0], answer
        status, headers, _ = http.request("GET", "/v1/templates")
        assert headers["www-authenticate"] == "Bearer"
        assert http.request("GET", "/")[0] == 200 and http.request("GET", "/openapi.json")[0] == 200
        # match reads and matches, admin writes; the scheme's case does not matter.
        status, answer = http.json("POST", "/v1/templates?templateId=t", raw=png, content_type="image/png",
                                   headers={"Authorization": f"Bearer {MATCHER}"})
        assert status == 403 and "admin scope" in answer["message"]
        status, _ = http.json("POST", "/v1/templates?templateId=t", raw=png, content_type="image/png",
                              headers={"Authorization": f"bearer {ADMIN}"})
        assert status == 200
        status, answer = http.json("GET", "/v1/templates", headers={"Authorization": f"BEARER {MATCHER}"})
        assert status == 200 and [t["name"] for t in answer["templates"]] == ["templates/t"]
        # The WebSocket: the header, or the token as a subprotocol (what a browser can send).
        url = f"ws://127.0.0.1:{server.http_port}/v1/frames:stream"
        config = '{"config": {"templates": ["t"]}}'
        got = websocket(url, [config])
        assert got["texts"][0]["error"]["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0] and got["code"] == 1008
        frame = scene(2, 60, 80, 3)
        offered = "bearer." + base64.urlsafe_b64encode(MATCHER.encode()).decode().rstrip("=")
        got = websocket(url, [config, frame_bytes(frame, 3)], receive=1, protocols=("featuremap.v1", offered))
        assert got["protocol"] == "featuremap.v1" and got["texts"][0]["result"]["sequence"] == "3"
        got = websocket(url, [config, frame_bytes(frame, 4)], receive=1,
                        headers={"Authorization": f"Bearer {MATCHER}"})
        assert got["texts"][0]["result"]["sequence"] == "4"
        http.close()
    assert "0123456789abcdef" not in caplog.text  # tokens are never logged


def test_tls_and_mutual_tls_as_for_grpc(tmp_path, pki):  # noqa: F811
    from featuremap.service.edge.config import Settings
    from featuremap.service.edge.server import create_server

    for client_ca in ("", pki["ca.pem"]):
        server, _ = create_server("127.0.0.1:0", Settings(
            data_dir=str(tmp_path / f"tls{bool(client_ca)}"), http_address="127.0.0.1:0", tls_cert=pki["server.pem"],
            tls_key=pki["server.key"], tls_client_ca=client_ca))
        try:
            context = ssl.create_default_context(cafile=pki["ca.pem"])
            if client_ca:
                with pytest.raises((ssl.SSLError, ConnectionError)):  # no client certificate: refused
                    Http(server.http_port, tls=context).request("GET", "/v1/templates")
                context.load_cert_chain(pki["client.pem"], pki["client.key"])
            https = Http(server.http_port, tls=context)
            assert https.json("GET", "/v1/templates") == (200, {"templates": [], "nextPageToken": ""})
            https.close()
            plain = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
            with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
                plain.request("GET", "/v1/templates")
                plain.getresponse()  # a plaintext request to a TLS port gets no HTTP answer
            plain.close()
        finally:
            server.drain(0)


def test_origins_are_refused_unless_allowed(tmp_path):
    with running_server(tmp_path / "a", http_address="127.0.0.1:0") as (_, _, server):
        http = Http(server.http_port)
        own = f"http://127.0.0.1:{server.http_port}"
        # The page's own origin is its own; any other origin is refused, the call never made.
        assert http.json("GET", "/v1/templates", headers={"Origin": own})[0] == 200
        status, answer = http.json("POST", "/v1/templates?templateId=x", raw=encoded(scene(3, 40, 40, 3)[:16, :16]),
                                   content_type="image/png", headers={"Origin": "https://evil.example"})
        assert status == 403 and "http_allow_origin" in answer["message"]
        assert http.json("GET", "/v1/templates")[1]["templates"] == []  # nothing was created
        # DNS rebinding: an attacker's name pointed at this server; the browser's Host and Origin agree.
        rebound = f"attacker.example:{server.http_port}"
        status, answer = http.json("POST", "/v1/templates?templateId=y", raw=encoded(scene(3, 40, 40, 3)[:16, :16]),
                                   content_type="image/png",
                                   headers={"Host": rebound, "Origin": f"http://{rebound}"})
        assert status == 403 and "http_allow_origin" in answer["message"]
        assert http.json("GET", "/v1/templates")[1]["templates"] == []
        assert http.json("GET", "/v1/templates", headers={"Host": f"localhost:{server.http_port}",
                                                          "Origin": f"http://localhost:{server.http_port}"})[0] == 200
        status, headers, _ = http.request("OPTIONS", "/v1/templates", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert status == 403 and "access-control-allow-origin" not in headers
        import aiohttp

        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:  # cross-site WebSocket hijacking: no
            websocket(f"ws://127.0.0.1:{server.http_port}/v1/frames:stream", [],
                      headers={"Origin": "https://evil.example"})
        assert caught.value.status == 403
        http.close()
    with running_server(tmp_path / "b", http_address="127.0.0.1:0",
                        http_allow_origin="https://app.example, https://other.example:8443") as (_, _, server):
        http = Http(server.http_port)
        status, headers, _ = http.request("OPTIONS", "/v1/templates", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 204 and headers["access-control-allow-origin"] == "https://app.example"
        assert "Authorization" in headers["access-control-allow-headers"]
        status, headers, _ = http.request("GET", "/v1/templates", headers={"Origin": "https://other.example:8443"})
        assert status == 200 and headers["access-control-allow-origin"] == "https://other.example:8443"
        assert http.request("GET", "/v1/templates", headers={"Origin": "https://evil.example"})[0] == 403
        http.close()


def test_http_settings_are_checked_at_start():
    with pytest.raises(SettingsError, match="http_address must be host:port"):
        settings_from(None, {"FEATUREMAP_HTTP_ADDRESS": "8080"})
    with pytest.raises(SettingsError, match="scheme and host"):
        settings_from(None, {"FEATUREMAP_HTTP_ADDRESS": ":8080", "FEATUREMAP_HTTP_ALLOW_ORIGIN": "app.example/x"})
    with pytest.raises(SettingsError, match="needs http_address"):
        settings_from(None, {"FEATUREMAP_HTTP_ALLOW_ORIGIN": "*"})


def test_a_busy_http_address_stops_the_start_saying_so(tmp_path):
    import socket

    from featuremap.service.edge.config import Settings
    from featuremap.service.edge.server import create_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port} \\(http_address\\): address in use"):
            create_server("127.0.0.1:0", Settings(data_dir=str(tmp_path), http_address=f"127.0.0.1:{port}"))



def test_a_body_that_stalls_is_answered_408_and_calls_past_the_limit_429(tmp_path, monkeypatch):
    # Every wait has an end: a caller that sends half its body and stops is answered, not waited on
    # for ever (it held the call's place and, at shutdown, the drain). Time is shortened, not waited out.
    import socket

    from featuremap.service.gateway import bodies as gateway_bodies

    monkeypatch.setattr(gateway_bodies, "BODY_TIMEOUT", 0.5)
    with running_server(tmp_path, http_address="127.0.0.1:0") as (_, _, server):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as stalled:
            stalled.sendall(b"POST /v1/templates?templateId=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n" + b"\x89PNG" + b"\0" * 20)
            answer = stalled.recv(4096).decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within" in answer
        http = Http(server.http_port)
        assert http.json("GET", "/v1/templates")[1].get("templates", []) == []  # nothing half-made
        # Past the calls the pool takes at once, a call is refused before its body is read.
        monkeypatch.setattr(server.gateway, "_call_limit", 0)
        status, answer = http.json("GET", "/v1/templates")
        assert status == 429 and "in progress" in answer["message"]
        monkeypatch.setattr(server.gateway, "_call_limit", 8)
        assert http.json("GET", "/v1/templates")[0] == 200
        http.close()
