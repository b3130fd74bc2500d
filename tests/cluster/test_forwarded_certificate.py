"""A client certificate forwarded by the load balancer (x-client-cert), over real mutual TLS: it
identifies the caller only when the call's TLS peer is the configured balancer."""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import replace
from urllib.parse import quote

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signserver.ca.client_forwarding import forwarded_pem
from signserver.config import TlsConfig, load_config
from signserver.errors import ConfigurationError, Unauthenticated
from signserver.grpc_api.tls import ensure_server_certificate
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread
from signserver.v1 import account_pb2, account_pb2_grpc
from tests.grpc_api.test_client_certificates import issue, open_channel, pem


def sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def nginx_form(certificate: x509.Certificate) -> str:
    """How nginx forwards it: $ssl_client_escaped_cert, the PEM URL-encoded."""
    return quote(pem(certificate).decode(), safe="")


class Party:
    """A TLS client: a certificate of the test CA and its key."""

    def __init__(self, name: str, ca, ca_key):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = issue(name, ca_key, ca.subject, self.key, ca=False)


@pytest.fixture
def behind_balancer(config, tmp_path, clock):
    """A server that trusts ``balancer``'s forwarded certificates; ``portal`` and ``intruder`` are
    registered applications, and so, to show it never counts, is the balancer's own certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("Test client CA", ca_key, None, ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    parties = {name: Party(name, ca, ca_key) for name in ("balancer", "portal", "intruder", "unregistered")}
    tls = TlsConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server-key.pem",
                    client_ca_file=tmp_path / "ca.pem", explicit=False,
                    balancer_cert_sha256=(sha256(parties["balancer"].certificate),))
    ensure_server_certificate(tls, "127.0.0.1")
    service = service_with(config, tmp_path / "signserver.db", clock, tls=tls)
    holder, _ = enrol(service)
    for name in ("balancer", "portal", "intruder"):
        service.applications.create(f"{name}-app", client_certificate_sha256=sha256(parties[name].certificate),
                                    with_api_key=False)
    with ServerThread(replace(config, tls=tls), service) as server:
        server.holder = holder.account.username
        yield server, tls, parties


def status_as(server, tls, party: Party, forwarded: list[str] = ()):
    """GetAccountStatus over a connection where ``party`` is the TLS peer, with these values of
    x-client-cert; returns the status code."""
    with open_channel(server, tls, pem(party.certificate), pem(party.key)) as channel:
        try:
            # A call any authenticated application may make.
            account_pb2_grpc.AccountServiceStub(channel).GetAccountStatus(
                account_pb2.GetAccountStatusRequest(account=server.holder),
                metadata=[("x-client-cert", value) for value in forwarded], timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()


def test_the_balancer_forwarding_a_registered_certificate_is_that_application(behind_balancer):
    server, tls, parties = behind_balancer
    portal = parties["portal"].certificate
    assert status_as(server, tls, parties["balancer"], [nginx_form(portal)]) is grpc.StatusCode.OK
    # HAProxy's form, base64 of the DER.
    der = base64.b64encode(portal.public_bytes(serialization.Encoding.DER)).decode()
    assert status_as(server, tls, parties["balancer"], [der]) is grpc.StatusCode.OK


def test_the_balancer_is_no_caller_itself(behind_balancer):
    server, tls, parties = behind_balancer
    # Its certificate is registered (above) and still names nobody: without a forwarded one, the
    # call has no client certificate at all.
    assert status_as(server, tls, parties["balancer"]) is grpc.StatusCode.UNAUTHENTICATED
    unregistered = parties["unregistered"].certificate
    assert status_as(server, tls, parties["balancer"], [nginx_form(unregistered)]) is grpc.StatusCode.UNAUTHENTICATED


def test_anyone_else_sending_the_header_is_refused(behind_balancer):
    server, tls, parties = behind_balancer
    assert status_as(server, tls, parties["intruder"]) is grpc.StatusCode.OK  # a registered application
    portal = nginx_form(parties["portal"].certificate)
    assert status_as(server, tls, parties["intruder"], [portal]) is grpc.StatusCode.UNAUTHENTICATED
    assert status_as(server, tls, parties["portal"], [portal]) is grpc.StatusCode.UNAUTHENTICATED


def test_a_forwarded_header_that_is_no_certificate_or_comes_twice_is_refused(behind_balancer):
    server, tls, parties = behind_balancer
    portal = nginx_form(parties["portal"].certificate)
    for values in (["not a certificate"], [quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")],
                   [portal, portal]):
        assert status_as(server, tls, parties["balancer"], values) is grpc.StatusCode.UNAUTHENTICATED


def test_forwarded_forms_decode_to_one_pem():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("Test client CA", ca_key, None, ca_key, ca=True)
    der = base64.b64encode(ca.public_bytes(serialization.Encoding.DER)).decode()
    assert forwarded_pem(nginx_form(ca)) == forwarded_pem(der) == pem(ca)
    with pytest.raises(Unauthenticated):
        forwarded_pem("A" * 20_000)


def test_balancer_fingerprints_are_read_from_the_file_or_the_environment(tmp_path):
    one, two = "AB:" * 31 + "AB", "cd" * 32
    (tmp_path / "signserver.toml").write_text(f'[tls]\nbalancer_cert_sha256 = ["{one}", "{two}"]\n')
    assert load_config(tmp_path / "signserver.toml", environ={}).tls.balancer_cert_sha256 == ("ab" * 32, two)
    environ = {"SIGNSERVER_TLS_BALANCER_CERT_SHA256": f"{two}, {'ef' * 32}"}
    assert load_config(environ=environ).tls.balancer_cert_sha256 == (two, "ef" * 32)
    assert load_config(environ={}).tls.balancer_cert_sha256 == ()
    with pytest.raises(ConfigurationError, match="tls.balancer_cert_sha256"):
        load_config(environ={"SIGNSERVER_TLS_BALANCER_CERT_SHA256": "abc"})


def test_an_expired_balancer_vouches_for_nobody(config, tmp_path, clock):
    """The balancer's own certificate is checked like a caller's (dates, this CA's records): once it
    no longer holds, what it forwards is believed no more, whatever the configured fingerprint."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("Test client CA", ca_key, None, ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    portal = Party("portal", ca, ca_key)
    balancer = Party("balancer", ca, ca_key)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
    balancer.certificate = issue("balancer", ca_key, ca.subject, balancer.key, ca=False, not_after=soon)
    tls = TlsConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server-key.pem",
                    client_ca_file=tmp_path / "ca.pem", explicit=False,
                    balancer_cert_sha256=(sha256(balancer.certificate),))
    ensure_server_certificate(tls, "127.0.0.1")
    service = service_with(config, tmp_path / "signserver.db", clock, tls=tls)
    holder, _ = enrol(service)
    service.applications.create("portal-app", client_certificate_sha256=sha256(portal.certificate),
                                with_api_key=False)
    # The service's clock moves past the balancer's end (TLS, on the real clock, still lets it in);
    # the portal's certificate still holds then.
    clock.advance(seconds=(soon - clock.now()).total_seconds() + 3600)
    with ServerThread(replace(config, tls=tls), service) as server:
        server.holder = holder.account.username
        assert status_as(server, tls, balancer, [nginx_form(portal.certificate)]) is grpc.StatusCode.UNAUTHENTICATED
        assert status_as(server, tls, portal) is grpc.StatusCode.OK  # the portal itself, directly
