"""TLS, mutual TLS and bearer tokens with scopes, with certificates made by the test itself."""

import grpc
import pytest

from featuremap.client import FeatureMapClient, FeatureMapError
from featuremap.service.edge.config import Settings
from featuremap.service.edge.server import create_server
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from certificates import pki  # noqa: F401  (the fixture: a CA, server and client certificates)
from service_helpers import scene, wait_serving


def serve(tmp_path, **settings):
    server, port = create_server("127.0.0.1:0", Settings(data_dir=str(tmp_path / "data"), **settings))
    return server, f"127.0.0.1:{port}"


def test_tls(tmp_path, pki):
    server, address = serve(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    try:
        with FeatureMapClient(address, ca_file=pki["ca.pem"], timeout=10) as client:
            wait_serving(client._channel)
            assert list(client.list_templates()) == []
        with FeatureMapClient(address, timeout=5) as plaintext:  # a plaintext client gets nowhere
            with pytest.raises(FeatureMapError) as caught:
                list(plaintext.list_templates())
            assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.drain(0)


def test_mutual_tls_requires_a_client_certificate_the_ca_signed(tmp_path, pki):
    server, address = serve(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["server.key"],
                            tls_client_ca=pki["ca.pem"])
    try:
        with FeatureMapClient(address, ca_file=pki["ca.pem"], cert_file=pki["client.pem"],
                              key_file=pki["client.key"], timeout=10) as client:
            wait_serving(client._channel)
            assert list(client.list_templates()) == []
        for extra in ({}, {"cert_file": pki["stranger.pem"], "key_file": pki["stranger.key"]}):
            with FeatureMapClient(address, ca_file=pki["ca.pem"], timeout=5, **extra) as refused:
                with pytest.raises(FeatureMapError) as caught:
                    list(refused.list_templates())
                assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.drain(0)


def test_tokens_and_scopes(tmp_path, caplog):
    tokens = tmp_path / "tokens"
    tokens.write_text("# token scopes\nmatcher-0123456789abcdef match\nadmin-0123456789abcdefgh admin\n")
    server, address = serve(tmp_path, tokens_file=str(tokens))
    frame = scene()
    try:
        with FeatureMapClient(address, token="admin-0123456789abcdefgh", timeout=10) as admin:
            wait_serving(admin._channel)  # health stays open: no token needed
            admin.create_template(frame[:16, :16], template_id="t")
            assert admin.match(frame).peaks  # admin implies match
        with FeatureMapClient(address, token="matcher-0123456789abcdef", timeout=10) as matcher:
            assert [p.template for p in matcher.match(frame).peaks] == ["templates/t"]
            assert [t.id for t in matcher.list_templates()] == ["t"]
            assert len(list(matcher.stream([frame, frame]))) == 2
            for call in (lambda: matcher.create_template(frame[:8, :8]), lambda: matcher.delete_template("t")):
                with pytest.raises(FeatureMapError) as caught:
                    call()
                assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
                assert "admin scope" in caught.value.details
        for token in (None, "wrong-0123456789abcdefgh"):
            with FeatureMapClient(address, token=token, timeout=10) as stranger:
                with pytest.raises(FeatureMapError) as caught:
                    stranger.match(frame)
                assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(FeatureMapError) as caught:
                    list(stranger.stream([frame]))
                assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.drain(0)
    assert "0123456789abcdef" not in caplog.text  # tokens are never logged


def test_an_open_server_says_so_once(tmp_path, caplog):
    server, _ = serve(tmp_path)
    server.drain(0)
    assert caplog.text.count("no tokens file") == 1


@pytest.mark.parametrize("content,message", [
    ("short match\n", "at least 16 characters"),
    ("abcdefghijklmnopqrstu root\n", "the second field must be scopes"),
    # Token and scope swapped: the error must not show the token.
    ("match abcdefghijklmnopqrstu\n", "the second field must be scopes"),
    ("\n# nothing\n", "no tokens"),
])
def test_a_bad_tokens_file_fails_at_start(tmp_path, content, message):
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    with pytest.raises(RuntimeError, match=message) as caught:
        serve(tmp_path, tokens_file=str(tokens))
    assert "abcdefghijklmnopqrstu" not in str(caught.value)


def test_a_key_that_does_not_match_its_certificate_says_so(tmp_path, pki):
    with pytest.raises(RuntimeError, match="does not match the certificate"):
        serve(tmp_path, tls_cert=pki["server.pem"], tls_key=pki["client.key"])


def test_the_bearer_scheme_is_case_insensitive(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("abcdefghijklmnopqrstu match\n")
    server, address = serve(tmp_path, tokens_file=str(tokens))
    try:
        channel = grpc.insecure_channel(address)
        wait_serving(channel)
        stub = pb_grpc.FeatureMapServiceStub(channel)
        for scheme in ("Bearer", "bearer", "BEARER"):
            page = stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10,
                                      metadata=(("authorization", f"{scheme} abcdefghijklmnopqrstu"),))
            assert list(page.templates) == []
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListTemplates(pb.ListTemplatesRequest(), timeout=10, metadata=(("authorization", "Basic abc"),))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        channel.close()
    finally:
        server.drain(0)
