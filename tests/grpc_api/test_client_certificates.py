"""Applications that authenticate with a client certificate (mutual TLS) instead of an API key."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import replace

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.config import TlsConfig
from signserver.grpc_api.tls import ensure_server_certificate
from signserver.v1 import signing_pb2, signing_pb2_grpc
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread

NOW = datetime.datetime.now(datetime.timezone.utc)


def issue(subject: str, issuer_key, issuer_name, key, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5)).not_valid_after(NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture
def mtls(config, tmp_path, clock):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("Test client CA", ca_key, None, ca_key, ca=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue("portal.example.mo", ca_key, ca.subject, client_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    tls = TlsConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server-key.pem",
                    client_ca_file=tmp_path / "ca.pem", explicit=False)
    ensure_server_certificate(tls, "127.0.0.1")
    service = service_with(config, tmp_path / "signserver.db", clock)
    holder, _ = enrol(service)
    fingerprint = hashlib.sha256(client.public_bytes(serialization.Encoding.DER)).hexdigest()
    service.applications.create("cert-app", client_certificate_sha256=fingerprint, with_api_key=False)
    with ServerThread(replace(config, tls=tls), service) as server:
        server.ca, server.ca_key = ca, ca_key
        yield server, tls, pem(client), pem(client_key), holder


def list_credentials(server, tls, certificate=None, key=None, api_key=None):
    credentials = grpc.ssl_channel_credentials(tls.cert_file.read_bytes(), private_key=key,
                                               certificate_chain=certificate)
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        return stub.ListCredentials(signing_pb2.ListCredentialsRequest(account=server.holder),
                                    metadata=[("x-api-key", api_key)] if api_key else [], timeout=30)


def test_registered_client_certificate_authenticates(mtls):
    server, tls, certificate, key, holder = mtls
    server.holder = holder.account.username
    listed = list_credentials(server, tls, certificate, key)
    assert [c.id for c in listed.credentials] == [holder.credential.id]


def test_without_a_certificate_the_handshake_fails(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    with pytest.raises(grpc.RpcError) as caught:
        list_credentials(server, tls, api_key="ssk_anything")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_unregistered_certificate_of_the_ca_is_unauthenticated(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    key = ec.generate_private_key(ec.SECP256R1())
    unregistered = issue("other.example.mo", server.ca_key, server.ca.subject, key, ca=False)
    with pytest.raises(grpc.RpcError) as caught:
        list_credentials(server, tls, pem(unregistered), pem(key))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_certificate_from_another_ca_is_refused(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = issue("portal.example.mo", rogue_key, None, rogue_key, ca=False)
    with pytest.raises(grpc.RpcError) as caught:
        list_credentials(server, tls, pem(rogue), pem(rogue_key))
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
