"""Operators' client certificates over real TLS: an app served by uvicorn with the RA's protocol and
TLS options, httpx presenting certificates the core's CA issued (tests/ca fixtures). The RA reads
the RA profile's mark (clientAuth and the policy of its own client certificate) and ra.operators,
and asks the served core whether a certificate is still in force."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from signserver.client import CertificateClient
from signserver.ra.errors import CoreUnavailable, SettingsError
from signserver.ra.settings import RaSettings
from signserver.ra.web.client_certificate import (ClientCertificateProtocol, certificate_in_force,
                                                  client_certificate_der, http_protocol, operator_from_certificate,
                                                  tls_options)
from tests.ca.test_certificate_service import client_pair
from tests.ra.running import Served

PEM = serialization.Encoding.PEM


def self_signed(folder: Path, name: str, usage) -> tuple[Path, Path]:
    """A certificate of its own (no CA of ours), and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .sign(key, hashes.SHA256()))
    cert, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert.write_bytes(certificate.public_bytes(PEM))
    key_file.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert, key_file


def pair_files(ca_service, folder: Path, profile: str, name: str) -> tuple[Path, Path]:
    _, certificate, key = client_pair(ca_service, profile, name)
    (folder / f"{name}.pem").write_bytes(certificate)
    (folder / f"{name}-key.pem").write_bytes(key)
    return folder / f"{name}.pem", folder / f"{name}-key.pem"


@pytest.fixture(scope="module")
def files(ca_service, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("operator-tls")
    self_signed(folder, "localhost", ExtendedKeyUsageOID.SERVER_AUTH)
    (folder / "ca.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in ca_service.ca.chain()))
    pair_files(ca_service, folder, "client-ra", "ra")  # the RA's own, as `issue-client --role ra ra` makes it
    pair_files(ca_service, folder, "client-ra", "counter-7")
    pair_files(ca_service, folder, "client-asp", "shop-asp")
    self_signed(folder, "stranger", ExtendedKeyUsageOID.CLIENT_AUTH)
    return folder


def settings_for(files: Path, **changes) -> RaSettings:
    values = dict(state_dir=files, tls_cert=files / "localhost.pem", tls_key=files / "localhost-key.pem",
                  operator_client_ca=files / "ca.pem", client_cert=files / "ra.pem", client_key=files / "ra-key.pem")
    return RaSettings(**{**values, **changes})


def who_site(settings: RaSettings) -> Served:
    """An app that answers, at /who, whom the connection's certificate names, served as the RA
    serves (its TLS options and HTTP protocol)."""
    async def who(request: Request) -> JSONResponse:
        der = client_certificate_der(request)
        return JSONResponse({"certificate": der is not None, "operator": operator_from_certificate(der, settings)})

    return Served(Starlette(routes=[Route("/who", who)]), tls=(tls_options(settings), http_protocol(settings)))


@pytest.fixture(scope="module")
def site(files):
    with who_site(settings_for(files)) as running:
        yield running


def client(files: Path, name: str | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(files / "localhost.pem"))
    if name:
        context.load_cert_chain(files / f"{name}.pem", files / f"{name}-key.pem")
    return httpx.Client(verify=context, timeout=10)


def test_an_ra_certificate_names_its_operator_on_every_request_of_the_connection(site, files):
    with client(files, "counter-7") as browser:
        for _ in range(2):
            answer = browser.get(f"{site.url}/who")
            assert answer.status_code == 200
            assert answer.json() == {"certificate": True, "operator": "counter-7"}


def test_a_browser_without_a_certificate_is_served_and_names_nobody(site, files):
    with client(files) as browser:
        assert browser.get(f"{site.url}/who").json() == {"certificate": False, "operator": None}


def test_an_application_certificate_of_the_same_ca_names_nobody(site, files):
    with client(files, "shop-asp") as browser:
        assert browser.get(f"{site.url}/who").json() == {"certificate": True, "operator": None}


def test_a_certificate_of_another_ca_is_refused_by_tls(site, files):
    with client(files, "stranger") as browser, pytest.raises(httpx.TransportError):
        browser.get(f"{site.url}/who")


def test_a_name_outside_ra_operators_names_nobody(files):
    with who_site(settings_for(files, operators=("counter-8",))) as running, client(files, "counter-7") as browser:
        assert browser.get(f"{running.url}/who").json() == {"certificate": True, "operator": None}


def test_without_the_ras_own_client_certificate_no_certificate_is_an_ras(files, caplog):
    pem = (files / "counter-7.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert operator_from_certificate(der, settings_for(files)) == "counter-7"
    assert operator_from_certificate(der, settings_for(files, client_cert=files / "missing.pem")) is None
    assert "cannot be read" in caplog.text
    assert operator_from_certificate(der, settings_for(files, operator_client_ca=None)) is None
    assert operator_from_certificate(b"not a certificate", settings_for(files)) is None
    assert operator_from_certificate(None, settings_for(files)) is None


def test_without_an_operator_ca_the_ra_asks_for_no_certificate(files, tmp_path):
    plain = RaSettings(state_dir=tmp_path)
    assert http_protocol(plain) == "h11" and tls_options(plain) == {}
    assert http_protocol(settings_for(files)) is ClientCertificateProtocol
    options = tls_options(settings_for(files))
    assert options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL and options["ssl_ca_certs"] == str(files / "ca.pem")
    assert "ssl_cert_reqs" not in tls_options(settings_for(files, operator_client_ca=None))


def test_an_operator_ca_without_tls_or_unreadable_is_a_settings_error(files, tmp_path):
    with pytest.raises(SettingsError, match="over TLS only"):
        tls_options(RaSettings(state_dir=tmp_path, operator_client_ca=files / "ca.pem"))
    with pytest.raises(SettingsError, match="cannot read"):
        tls_options(settings_for(files, operator_client_ca=tmp_path / "missing.pem"))


def der_of(files: Path, name: str) -> bytes:
    return x509.load_pem_x509_certificate((files / f"{name}.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER)


def test_the_core_says_whether_an_operators_certificate_is_in_force(served, ca_service, files):
    revoked, _, _ = client_pair(ca_service, "client-ra", "counter-9")
    ca_service.ca.revoke(revoked.serial, "privilegeWithdrawn", "operator:test")
    roots = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    core = CertificateClient(f"localhost:{served.port}", root_certificates=roots,
                             client_certificate=(files / "ra.pem").read_bytes(),
                             client_key=(files / "ra-key.pem").read_bytes())
    try:
        assert certificate_in_force(der_of(files, "counter-7"), core)
        assert not certificate_in_force(revoked.certificate.public_bytes(serialization.Encoding.DER), core)
        assert not certificate_in_force(der_of(files, "shop-asp"), core)  # not the RA profile
        assert not certificate_in_force(der_of(files, "stranger"), core)  # not the core's
    finally:
        core.close()


def test_a_core_that_does_not_answer_leaves_the_certificate_undecided(files):
    roots = (files / "ca.pem").read_bytes()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    core = CertificateClient(f"localhost:{port}", root_certificates=roots,
                             client_certificate=(files / "ra.pem").read_bytes(),
                             client_key=(files / "ra-key.pem").read_bytes(), timeout_seconds=2)
    try:
        with pytest.raises(CoreUnavailable):
            certificate_in_force(der_of(files, "counter-7"), core)
    finally:
        core.close()
