"""The issuing CA's certificate renewed for the same key and subject: the root signs a new one (or,
under an external root, the operator installs one the root signed), and everything the issuing
CA signed before, holder certificates, CRLs, the OCSP responder's and TSA's certificates, goes on
verifying under it, beside what it signs after."""

from __future__ import annotations

import datetime
import subprocess
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from signserver.audit.log import AuditLog
from signserver.ca.authority import CertificateRequest
from signserver.ca.setup import CLOCK_SKEW, ISSUING_DAYS
from signserver.clock import ManualClock
from signserver.errors import CertificateRefused, InvalidArgument
from signserver.http.ca_front import CaHttpFront
from tests.ca.test_authority import holder
from tests.ca.test_ca_certificates import _external_root, _key_usage
from tests.ca.test_http import fetch
from tests.ca.test_http_hardening import FrontThread
from tests.ca.test_service_key_removal import check_ocsp, check_time_stamp, tsa_query
from tests.conftest import service_with, service_with_ca

PEM = Encoding.PEM
OPERATOR = "operator:test"


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def verify(folder, root: x509.Certificate, issuing: x509.Certificate, leaf: x509.Certificate,
           at: datetime.datetime, strict: bool = True) -> subprocess.CompletedProcess:
    """``openssl verify`` of ``leaf`` against the root, with ``issuing`` as the intermediate
    (``strict``: with RFC 5280's rules on CA certificates, which the tests' external root skips)."""
    (folder / "root.pem").write_bytes(root.public_bytes(PEM))
    (folder / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(PEM))
    return openssl("verify", *(["-x509_strict"] if strict else []), "-CAfile", str(folder / "root.pem"), "-untrusted",
                   str(folder / "issuing.pem"), "-attime", str(int(at.timestamp())), str(folder / "leaf.pem"))


def crl_verifies(folder, issuing: x509.Certificate, der: bytes) -> bool:
    (folder / "ca.pem").write_bytes(issuing.public_bytes(PEM))
    (folder / "issuing.crl").write_bytes(der)
    result = openssl("crl", "-inform", "DER", "-in", str(folder / "issuing.crl"), "-CAfile", str(folder / "ca.pem"),
                     "-noout")
    return "verify OK" in result.stderr + result.stdout


def extensions(certificate: x509.Certificate) -> list[tuple]:
    return [(e.oid, e.critical, e.value) for e in certificate.extensions]


def issue_to(service, username: str) -> x509.Certificate:
    return service.ca.issue(CertificateRequest("cloud-signature-corporate", username), "ra:test").certificate


def test_the_root_certifies_the_issuing_key_again_and_old_and_new_certificates_crls_and_ocsp_verify(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "recertified.db", clock)
    old, root = service.ca.chain()
    created, _ = holder(service)
    before = issue_to(service, created.account.username)
    responder, tsa = service.ca.status().ocsp_responder, service.pades.tsa.certificate()
    clock.advance(days=30)

    new = service.ca.recertify_issuing(OPERATOR)

    assert service.ca.chain() == [new, root]
    assert new.serial_number != old.serial_number
    assert new.subject == old.subject and new.public_key() == old.public_key() and new.issuer == root.subject
    assert new.not_valid_before_utc == clock.now() - CLOCK_SKEW
    assert new.not_valid_after_utc == new.not_valid_before_utc + datetime.timedelta(days=ISSUING_DAYS)
    assert extensions(new) == extensions(old)  # authority information access (caIssuers) among them
    new.verify_directly_issued_by(root)
    with service.database.read() as conn:
        [record] = [r for r in AuditLog.records(conn) if r.event == "ca.issuing_recertified"]
    assert record.actor == OPERATOR and format(new.serial_number, "x") in record.detail \
        and format(old.serial_number, "x") in record.detail

    after = issue_to(service, created.account.username)
    for certificate in (before, after, responder, tsa):  # issued before and after, under the new certificate
        result = verify(tmp_path, root, new, certificate, clock.now())
        assert result.returncode == 0, result.stdout + result.stderr
    assert verify(tmp_path, root, old, after, clock.now()).returncode == 0  # and the old one, while it lasts

    crl_before = service.ca.crl("issuing")
    service.ca.revoke(format(after.serial_number, "x"), "superseded", OPERATOR)
    for der in (crl_before, service.ca.crl("issuing")):
        assert crl_verifies(tmp_path, new, der)
    request = ocsp.OCSPRequestBuilder().add_certificate(before, new, hashes.SHA256()).build().public_bytes(Encoding.DER)
    assert check_ocsp(service.ca.ocsp(request), clock.now()) == responder
    check_time_stamp(service, service.pades.tsa.respond(tsa_query().dump()), clock.now(), tmp_path)

    with FrontThread(CaHttpFront(service, "127.0.0.1:0")) as server:
        path = urllib.parse.urlsplit(config.ca.url("ca/issuing.crt")).path
        kind, body = fetch(f"http://127.0.0.1:{server.port}{path}")
    assert kind == "application/pkix-cert" and x509.load_der_x509_certificate(body) == new


def test_after_the_issuing_ca_ended_a_new_certificate_up_to_the_roots_end_lets_it_issue_again(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "ended.db", clock)
    old, root = service.ca.chain()
    created, _ = holder(service)
    clock.advance(days=(root.not_valid_after_utc - clock.now()).days - 1000)  # past the issuing CA's end
    with pytest.raises(CertificateRefused):
        issue_to(service, created.account.username)

    new = service.ca.recertify_issuing(OPERATOR)

    assert new.not_valid_after_utc == root.not_valid_after_utc  # not beyond the root's end
    assert new.not_valid_after_utc - new.not_valid_before_utc < datetime.timedelta(days=ISSUING_DAYS)
    leaf = issue_to(service, created.account.username)
    result = verify(tmp_path, root, new, leaf, clock.now())
    assert result.returncode == 0, result.stdout + result.stderr
    # The responder's and TSA's certificates, which ended with the old one, are renewed under it.
    assert sorted(service.ca.renew_service_keys_if_due()) == ["ocsp-responder", "tsa"]
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, new, hashes.SHA256()).build().public_bytes(Encoding.DER)
    check_ocsp(service.ca.ocsp(request), clock.now())


def test_a_root_that_has_ended_certifies_nothing_and_the_refusal_says_so(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "root-ended.db", clock)
    old, root = service.ca.chain()
    clock.advance(days=(root.not_valid_after_utc - clock.now()).days + 1)
    with pytest.raises(CertificateRefused) as refused:
        service.ca.recertify_issuing(OPERATOR)
    assert "root" in str(refused.value) and root.not_valid_after_utc.date().isoformat() in str(refused.value)
    assert service.ca.chain() == [old, root]


def test_an_issuing_certificate_is_not_taken_from_outside_when_the_root_is_this_cas(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "own-root.db", clock)
    chain = service.ca.chain()
    with pytest.raises(InvalidArgument) as refused:
        service.ca.recertify_issuing(OPERATOR, chain[0].public_bytes(PEM))
    assert "root's key is in this HSM" in str(refused.value)
    assert service.ca.chain() == chain


# --- under an external root ------------------------------------------------------------

CA_EXTENSIONS = (x509.BasicConstraints(ca=True, path_length=0), _key_usage(key_cert_sign=True, crl_sign=True))


@pytest.fixture
def external(config, tmp_path):
    """A CA set up under an external root: the service, the root, and the root's signing function."""
    from dataclasses import replace

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with(config, tmp_path / "external.db", clock,
                           ca=replace(config.ca, root_key_algorithm="ec-p256", issuing_key_algorithm="ec-p256"))
    request = service.ca.begin_external_root(OPERATOR)
    root, sign = _external_root(clock)
    issuing = sign(request, *CA_EXTENSIONS)
    assert service.ca.complete_external_root(issuing.public_bytes(PEM), root.public_bytes(PEM), OPERATOR).ready
    return service, clock, root, sign


def test_under_an_external_root_a_new_certificate_is_required_and_installed_once_checked(external, tmp_path):
    service, clock, root, sign = external
    old = service.ca.chain()[0]
    created, _ = holder(service)
    before = issue_to(service, created.account.username)
    clock.advance(days=10)
    with pytest.raises(InvalidArgument) as refused:
        service.ca.recertify_issuing(OPERATOR)
    assert "external root" in str(refused.value) and "--issuing-cert" in str(refused.value)

    request = service.ca.issuing_request()  # the same key and subject, for the root to sign
    assert request.public_key() == old.public_key() and request.subject == old.subject
    new = sign(request, *CA_EXTENSIONS, start=clock.now() - CLOCK_SKEW)
    assert service.ca.recertify_issuing(OPERATOR, new.public_bytes(PEM)) == new
    assert service.ca.chain() == [new, root]
    after = issue_to(service, created.account.username)
    for certificate in (before, after):
        result = verify(tmp_path, root, new, certificate, clock.now(), strict=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert crl_verifies(tmp_path, new, service.ca.crl("issuing"))


_LONG_AGO = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=400)


def _other_key_request(subject: x509.Name) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


@pytest.mark.parametrize("make, words", [
    (lambda request, sign: sign(_other_key_request(request.subject), *CA_EXTENSIONS), "not for the issuing CA's key"),
    (lambda request, sign: sign(_DifferentSubject(request), *CA_EXTENSIONS), "is not the issuing CA's"),
    (lambda request, sign: sign(request, x509.BasicConstraints(ca=False, path_length=None)), "not a CA certificate"),
    (lambda request, sign: sign(request, x509.BasicConstraints(ca=True, path_length=0), _key_usage(key_cert_sign=True)),
     "keyCertSign and cRLSign"),
    (lambda request, sign: sign(request, *CA_EXTENSIONS, start=_LONG_AGO, days=1), "ended"),
    (lambda request, sign: _external_root(ManualClock(datetime.datetime.now(datetime.timezone.utc)))[1](
        request, *CA_EXTENSIONS), "not signed by the root"),
])
def test_under_an_external_root_a_certificate_the_ca_could_not_use_is_refused_by_what_is_wrong(external, make, words):
    service, _, _, sign = external
    chain = service.ca.chain()
    offered = make(service.ca.issuing_request(), sign)
    with pytest.raises(InvalidArgument) as refused:
        service.ca.recertify_issuing(OPERATOR, offered.public_bytes(PEM))
    assert words in str(refused.value)
    assert service.ca.chain() == chain  # nothing installed


class _DifferentSubject:
    """A request's key under another subject (what the root's ``sign`` reads of a request)."""

    def __init__(self, request: x509.CertificateSigningRequest):
        self.subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another Issuing CA")])
        self._request = request

    def public_key(self):
        return self._request.public_key()


def test_the_servers_tls_file_takes_the_new_issuing_certificate_and_keeps_its_own_key(config, tmp_path):
    from signserver.config import TlsConfig
    from signserver.grpc_api.tls import ensure_server_certificate

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "tls-chain.db", clock)
    tls = TlsConfig(cert_file=tmp_path / "server.pem", key_file=tmp_path / "server-key.pem", client_ca_file=None,
                    explicit=False)
    ensure_server_certificate(tls, "127.0.0.1", service.ca)
    server, old = x509.load_pem_x509_certificates(tls.cert_file.read_bytes())
    key = tls.key_file.read_bytes()

    new = service.ca.recertify_issuing(OPERATOR)
    ensure_server_certificate(tls, "127.0.0.1", service.ca)

    assert old != new
    # The chain a client is sent names the issuing certificate in force: the old one would fail
    # clients once it ended, though the server's own certificate is still good under the same key.
    assert x509.load_pem_x509_certificates(tls.cert_file.read_bytes()) == [server, new]
    assert tls.key_file.read_bytes() == key
