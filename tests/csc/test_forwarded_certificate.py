"""The CSC API behind a load balancer, over real HTTPS: a client certificate forwarded in
X-Client-Cert identifies the caller only when the connection's TLS peer is a configured balancer
([tls] balancer_cert_sha256), as on the gRPC front; from anyone else the header is refused."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signserver.accounts.applications import certificate_fingerprint
from signserver.grpc_api.tls import ensure_server_certificate
from signserver.service import SignService
from tests.conftest import enrol, service_with
from tests.csc.conftest import CscServerThread

LIST = "/csc/v2/credentials/list"
PORTAL, INTRUDER, NOBODY = 200, 403, 401  # how credentials/list answers each caller


@dataclass
class Party:
    """A TLS client with a certificate from the service's CA."""

    certificate: x509.Certificate
    serial: str
    pem_file: Path
    key_file: Path

    def nginx_form(self) -> str:
        """$ssl_client_escaped_cert: the PEM, URL-encoded."""
        return quote(self.certificate.public_bytes(serialization.Encoding.PEM).decode(), safe="")

    def haproxy_form(self) -> str:
        """%[ssl_c_der,base64]."""
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()


def _party(service: SignService, name: str, folder: Path) -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate("client-asp", name, key.public_key(), "operator:test")
    folder.mkdir(parents=True, exist_ok=True)
    pem_file, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
    pem_file.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Party(issued.certificate, issued.serial, pem_file, key_file)


@pytest.fixture(scope="module")
def behind_balancer(config, tmp_path_factory, csc_clock):
    """A CSC front whose service trusts two balancers (the second one's certificate revoked), with
    parties from its CA: ``portal`` and ``intruder`` are registered applications, and so, to show
    it never counts, is ``balancer``'s own certificate; ``unregistered`` is not."""
    folder = tmp_path_factory.mktemp("csc-balancer")
    tls = replace(config.tls, cert_file=folder / "server.pem", key_file=folder / "server-key.pem", explicit=False)
    ensure_server_certificate(tls, "127.0.0.1")
    setup = service_with(config, folder / "signserver.db", csc_clock)
    setup.ca.initialise(operator="operator:test")
    parties = {name: _party(setup, name, folder / "parties")
               for name in ("balancer", "revoked-balancer", "portal", "intruder", "unregistered")}
    setup.ca.revoke(parties["revoked-balancer"].serial, "keyCompromise", "operator:test")
    holder, _ = enrol(setup)
    # Who is calling shows in what it may list: the portal and the balancer serve the holder, the
    # intruder serves nobody.
    for name, served in (("balancer", (holder.account.username,)), ("portal", (holder.account.username,)),
                         ("intruder", ())):
        setup.applications.create(f"{name}-app", accounts_served=served, with_api_key=False,
                                  client_certificate_sha256=certificate_fingerprint(parties[name].certificate))
    bundle = folder / "client-ca.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in setup.ca.chain()))
    balancers = tuple(certificate_fingerprint(parties[name].certificate) for name in ("balancer", "revoked-balancer"))
    tls = replace(tls, client_ca_file=bundle, mutual=False, balancer_cert_sha256=balancers)
    setup.close()
    service = service_with(config, folder / "signserver.db", csc_clock, tls=tls)
    with CscServerThread(service, tls) as server:
        server.holder = holder.account.username
        yield server, parties
    service.close()


def _client(server: CscServerThread, party: Party | None) -> httpx.Client:
    """An HTTPS client presenting ``party``'s certificate (None: none)."""
    context = ssl.create_default_context(cafile=str(server.tls.cert_file))
    if party is not None:
        context.load_cert_chain(party.pem_file, party.key_file)
    return httpx.Client(base_url=server.url, verify=context, timeout=60)


def _forwarding(*values: str) -> list[tuple[str, str]]:
    return [("X-Client-Cert", value) for value in values]


def _lists(server: CscServerThread, client: httpx.Client, headers=()) -> int:
    """credentials/list of the served holder: PORTAL, INTRUDER or NOBODY, by who is calling."""
    return client.post(LIST, headers=list(headers), json={"userID": server.holder}).status_code


def test_the_balancer_forwarding_a_registered_certificate_is_that_application(behind_balancer):
    server, parties = behind_balancer
    portal, intruder = parties["portal"], parties["intruder"]
    with _client(server, parties["balancer"]) as balancer:
        for form in (portal.nginx_form(), portal.haproxy_form()):
            assert _lists(server, balancer, _forwarding(form)) == PORTAL
        assert _lists(server, balancer, _forwarding(intruder.nginx_form())) == INTRUDER
        # A certificate login through the balancer: the token is bound to the forwarded certificate.
        login = balancer.post("/csc/v2/auth/login", headers=_forwarding(portal.nginx_form()))
        assert login.status_code == 200, login.text
        bearer = [("Authorization", f"Bearer {login.json()['access_token']}")]
        assert _lists(server, balancer, [*bearer, *_forwarding(portal.nginx_form())]) == PORTAL
        # The same token with another forwarded certificate, or none, is refused (RFC 8705).
        assert _lists(server, balancer, bearer) == NOBODY
        assert _lists(server, balancer, [*bearer, *_forwarding(intruder.nginx_form())]) == NOBODY


def test_the_balancer_is_no_caller_itself(behind_balancer):
    server, parties = behind_balancer
    with _client(server, parties["balancer"]) as balancer:
        # Its certificate is registered (serving the holder) and still names nobody: without a
        # forwarded one, the request has no client certificate at all.
        assert _lists(server, balancer) == NOBODY
        assert balancer.post("/csc/v2/auth/login").status_code == 401
        assert _lists(server, balancer, _forwarding(parties["unregistered"].nginx_form())) == NOBODY


def test_a_forged_header_from_anyone_else_is_refused(behind_balancer):
    server, parties = behind_balancer
    portal = _forwarding(parties["portal"].nginx_form())
    with _client(server, parties["intruder"]) as intruder:
        assert _lists(server, intruder) == INTRUDER  # a registered application, itself
        assert _lists(server, intruder, portal) == NOBODY
        forged = intruder.post("/csc/v2/auth/login", headers=portal)
        assert forged.status_code == 401 and "access_token" not in forged.text, forged.text
    with _client(server, parties["portal"]) as itself, _client(server, None) as plain:
        for client in (itself, plain):
            assert _lists(server, client, portal) == NOBODY
            assert client.post("/csc/v2/auth/login", headers=portal).status_code == 401


def test_a_forwarded_header_that_is_no_certificate_or_comes_twice_is_refused(behind_balancer):
    server, parties = behind_balancer
    portal = parties["portal"].nginx_form()
    with _client(server, parties["balancer"]) as balancer:
        for values in (["not a certificate"], [quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")],
                       [portal, portal]):
            assert _lists(server, balancer, _forwarding(*values)) == NOBODY, values


def test_a_revoked_balancer_vouches_for_nobody(behind_balancer):
    server, parties = behind_balancer
    portal = _forwarding(parties["portal"].nginx_form())
    with _client(server, parties["revoked-balancer"]) as revoked:
        assert _lists(server, revoked, portal) == NOBODY
        assert revoked.post("/csc/v2/auth/login", headers=portal).status_code == 401
