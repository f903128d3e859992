"""TLS, mutual TLS and bearer tokens with scopes, with certificates made by the test itself."""

import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from featuremap.client import FeatureMapClient, FeatureMapError
from featuremap.service.edge.config import Settings
from featuremap.service.edge.server import create_server
from featuremap.v1 import featuremap_pb2 as pb
from featuremap.v1 import featuremap_pb2_grpc as pb_grpc

from service_helpers import scene, wait_serving


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject, issuer, public_key, signing_key, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("featuremap test CA", "featuremap test CA", ca_key.public_key(), ca_key, ca=True)
    files = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM)}
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, "featuremap test CA", key.public_key(), ca_key, server=server)
        files[f"{name}.pem"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}.key"] = _pem_key(key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _certificate("stranger", "stranger", stranger_key.public_key(), stranger_key)
    files["stranger.pem"] = stranger.public_bytes(serialization.Encoding.PEM)
    files["stranger.key"] = _pem_key(stranger_key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: str(folder / name) for name in files}


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
