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
from signserver.v1 import account_pb2, account_pb2_grpc
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread

NOW = datetime.datetime.now(datetime.timezone.utc)
# Valid for TLS (the real time) and for the server (the test's clock, some days earlier).
NOT_BEFORE = NOW - datetime.timedelta(days=30)


def issue(subject: str, issuer_key, issuer_name, key, ca: bool,
          not_after: datetime.datetime = NOW + datetime.timedelta(days=1)) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE).not_valid_after(not_after)
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
        server.ca, server.ca_key, server.clock, server.service = ca, ca_key, clock, service
        yield server, tls, pem(client), pem(client_key), holder


def open_channel(server, tls, certificate=None, key=None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(tls.cert_file.read_bytes(), private_key=key,
                                               certificate_chain=certificate)
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def account_status(server, tls, certificate=None, key=None, api_key=None, channel=None):
    if channel is None:
        with open_channel(server, tls, certificate, key) as channel:
            return account_status(server, tls, api_key=api_key, channel=channel)
    # A call any authenticated application may make about any account name.
    stub = account_pb2_grpc.AccountServiceStub(channel)
    return stub.GetAccountStatus(account_pb2.GetAccountStatusRequest(account=server.holder),
                                 metadata=[("x-api-key", api_key)] if api_key else [], timeout=30)


def test_registered_client_certificate_authenticates(mtls):
    server, tls, certificate, key, holder = mtls
    server.holder = holder.account.username
    listed = account_status(server, tls, certificate, key)
    assert (listed.account, listed.status) == (holder.account.username, "active")


def test_without_a_certificate_the_handshake_fails(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    with pytest.raises(grpc.RpcError) as caught:
        account_status(server, tls, api_key="ssk_anything")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_unregistered_certificate_of_the_ca_is_unauthenticated(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    key = ec.generate_private_key(ec.SECP256R1())
    unregistered = issue("other.example.mo", server.ca_key, server.ca.subject, key, ca=False)
    with pytest.raises(grpc.RpcError) as caught:
        account_status(server, tls, pem(unregistered), pem(key))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_certificate_from_another_ca_is_refused(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = issue("portal.example.mo", rogue_key, None, rogue_key, ca=False)
    with pytest.raises(grpc.RpcError) as caught:
        account_status(server, tls, pem(rogue), pem(rogue_key))
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def test_certificate_of_another_ca_is_refused_once_expired_by_the_servers_clock(mtls):
    # Not issued here, so not in this CA's records: its dates are what the server can check.
    server, tls, certificate, key, holder = mtls
    server.holder = holder.account.username
    with open_channel(server, tls, certificate, key) as channel:
        assert account_status(server, tls, channel=channel).status
        not_after = x509.load_pem_x509_certificate(certificate).not_valid_after_utc
        server.clock.advance(seconds=(not_after - server.clock.now()).total_seconds())
        with pytest.raises(grpc.RpcError) as caught:
            account_status(server, tls, channel=channel)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED and "expired" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        account_status(server, tls, certificate, key)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_certificate_of_another_ca_is_refused_before_its_start_by_the_servers_clock(mtls):
    server, tls, _, _, holder = mtls
    server.holder = holder.account.username
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal.example.mo")])
    starts_later = (x509.CertificateBuilder().subject_name(name).issuer_name(server.ca.subject)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(server.clock.now() + datetime.timedelta(days=1))
                    .not_valid_after(NOW + datetime.timedelta(days=1))
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                    .sign(server.ca_key, hashes.SHA256()))
    server.service.applications.create("later-app", client_certificate_sha256=hashlib.sha256(
        starts_later.public_bytes(serialization.Encoding.DER)).hexdigest(), with_api_key=False)
    with pytest.raises(grpc.RpcError) as caught:
        account_status(server, tls, pem(starts_later), pem(key))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED and "not valid yet" in caught.value.details()
