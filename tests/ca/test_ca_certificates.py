"""The CA's own certificates: the issuing CA's tells a relying party where its root's certificate
is published (authority information access, caIssuers), so that a holder's certificate and the
issuing CA's are enough to build the chain; the self-signed root carries none; both pass
pkilint's linters, its CA/Browser Forum CA linters among them."""

from __future__ import annotations

import contextlib
import datetime
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID
from pkilint.cabf import serverauth
from pkilint.cabf.serverauth.serverauth_constants import CertificateType as ServerauthType
from pkilint.pkix import certificate as pkix_certificate

from signserver.http.ca_front import CaHttpFront
from signserver.monitoring.meter import Meter, install_meter, meter
from tests.ca.conftest import certificates_of
from tests.ca.test_etsi_profiles import _document, _findings, chain_findings, rfc5280_findings, unjustified
from tests.ca.test_http import fetch
from tests.ca.test_http_hardening import FrontThread

PEM = Encoding.PEM


def serverauth_findings(certificate: x509.Certificate, certificate_type: ServerauthType) -> list[tuple[str, str, str]]:
    """What pkilint's CA/Browser Forum linter (lint_cabf_serverauth_cert) reports as ERROR or FATAL,
    and the WARNINGs about authority information access, for ``certificate_type``."""
    from pkilint import finding_filter
    from pkilint.validation import ValidationFindingSeverity

    validator = pkix_certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(), serverauth.create_validators(certificate_type))
    results = validator.validate(_document(certificate).root)
    results, _ = finding_filter.filter_results(serverauth.create_serverauth_finding_filters(certificate_type), results)
    warnings = [(str(d.finding.severity), d.finding.code, d.message or "")
                for result in results for d in result.finding_descriptions
                if d.finding.severity is ValidationFindingSeverity.WARNING
                and ("authority_info_access" in d.finding.code or "aia" in d.finding.code)]
    return _findings(results) + warnings


def _access(certificate: x509.Certificate) -> list[tuple[x509.ObjectIdentifier, str]]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    assert not extension.critical  # RFC 5280 4.2.2.1: MUST be non-critical
    return [(d.access_method, d.access_location.value) for d in extension.value]


def test_the_issuing_ca_certificate_says_where_its_roots_certificate_is(ca_service):
    issuing, root = ca_service.ca.chain()
    # caIssuers only: the OCSP responder answers for the issuing CA's certificates, not the root's
    # (the issuing CA's own status is on the root's CRL, named by its CRL distribution point).
    assert _access(issuing) == [(AuthorityInformationAccessOID.CA_ISSUERS, ca_service.config.ca.url("ca/root.crt"))]
    assert _access(root) == []  # self-signed: nothing above it to fetch


def test_the_ca_issuers_address_serves_the_root_certificate_in_der(ca_service):
    issuing, root = ca_service.ca.chain()
    [(_, address)] = _access(issuing)
    with FrontThread(CaHttpFront(ca_service, "127.0.0.1:0")) as server:
        # The tests' ca.base_url names no running server: the same path on the front under test.
        kind, body = fetch(f"http://127.0.0.1:{server.port}{urllib.parse.urlsplit(address).path}")
    assert kind == "application/pkix-cert"  # RFC 5280 4.2.2.1: one DER certificate
    assert x509.load_der_x509_certificate(body) == root
    issuing.verify_directly_issued_by(x509.load_der_x509_certificate(body))


@pytest.mark.parametrize("certificate_type", [ServerauthType.NON_TLS_CA,
                                              ServerauthType.INTERNAL_UNCONSTRAINED_TLS_CA])
def test_the_issuing_ca_certificate_passes_the_subordinate_ca_linters(ca_service, certificate_type):
    issuing, root = ca_service.ca.chain()
    assert unjustified(rfc5280_findings(issuing)) == []
    assert chain_findings(root, issuing) == []
    found = serverauth_findings(issuing, certificate_type)
    # Findings that do not concern this CA: the tests' loopback base_url, and an extended key
    # usage the CA/Browser Forum asks of a publicly trusted TLS CA (this one also certifies
    # signing, e-mail, time-stamping and OCSP keys, which such a constraint would refuse).
    accepted = {"cabf.internal_domain_name", "cabf.serverauth.ca.extended_key_usage_extension_absent"}
    assert [f for f in found if f[1] not in accepted] == []


def test_the_root_certificate_passes_the_root_ca_linters(ca_service):
    issuing, root = ca_service.ca.chain()
    assert unjustified(rfc5280_findings(root)) == []
    assert chain_findings(root, root) == []
    assert serverauth_findings(root, ServerauthType.ROOT_CA) == []


# --- an external root's issuing CA certificate ----------------------------------------

def _external_root(clock):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External Root")])
    now = clock.now() - datetime.timedelta(minutes=5)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))

    def sign(request: x509.CertificateSigningRequest, *extensions, start=now, days=1825) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(name)
                   .public_key(request.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days)))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=isinstance(extension, (x509.BasicConstraints,
                                                                                        x509.KeyUsage)))
        return builder.sign(key, hashes.SHA384())
    return root, sign


def _key_usage(**flags) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


@pytest.fixture
def awaiting_external_root(config, tmp_path, clock):
    from dataclasses import replace

    from tests.conftest import service_with

    service = service_with(config, tmp_path / "external.db", clock,
                           ca=replace(config.ca, root_key_algorithm="ec-p256", issuing_key_algorithm="ec-p256"))
    return service, service.ca.begin_external_root("operator:test")


@pytest.mark.parametrize("extensions, start, words", [
    ((), None, "not a CA certificate"),  # no basicConstraints at all
    ((x509.BasicConstraints(ca=False, path_length=None),), None, "not a CA certificate"),
    ((x509.BasicConstraints(ca=True, path_length=0), _key_usage(digital_signature=True)), None,
     "keyCertSign and cRLSign"),
    ((x509.BasicConstraints(ca=True, path_length=0), _key_usage(key_cert_sign=True)), None,
     "keyCertSign and cRLSign"),
    ((x509.BasicConstraints(ca=True, path_length=0),), -1900, "ended"),
    ((x509.BasicConstraints(ca=True, path_length=0),), 30, "begins"),
])
def test_an_issuing_certificate_the_ca_could_not_use_is_refused_by_what_is_wrong(awaiting_external_root, clock,
                                                                                 extensions, start, words):
    from signserver.errors import InvalidArgument

    service, request = awaiting_external_root
    root, sign = _external_root(clock)
    begins = clock.now() + datetime.timedelta(days=start) if start is not None else clock.now()
    issuing = sign(request, *extensions, start=begins)
    with pytest.raises(InvalidArgument) as refused:
        service.ca.complete_external_root(issuing.public_bytes(PEM), root.public_bytes(PEM), "operator:test")
    assert words in str(refused.value)
    assert service.ca.status().awaiting_external_root  # nothing installed: a right one still can be
    right = sign(request, x509.BasicConstraints(ca=True, path_length=0),
                 _key_usage(key_cert_sign=True, crl_sign=True))
    assert service.ca.complete_external_root(right.public_bytes(PEM), root.public_bytes(PEM), "operator:test").ready


# --- the issuing CA's end -------------------------------------------------------------

def test_nothing_is_issued_once_the_issuing_ca_has_ended_and_the_refusal_says_so(config, tmp_path):
    from signserver.ca.authority import CertificateRequest
    from signserver.clock import ManualClock
    from signserver.errors import CertificateRefused
    from tests.ca.test_authority import csr_for, holder
    from tests.conftest import service_with_ca

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "ended.db", clock)
    issuing = service.ca.chain()[0]
    created, _ = holder(service)
    clock.advance(days=(issuing.not_valid_after_utc - clock.now()).days + 1)
    with pytest.raises(CertificateRefused) as refused:
        service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    assert "issuing CA" in str(refused.value) and issuing.not_valid_after_utc.date().isoformat() in str(refused.value)
    with pytest.raises(CertificateRefused):
        service.ca.issue_service_certificate("client-ra", "late ra", csr_for("x")[1].public_key(), "operator:test")
    with pytest.raises(CertificateRefused):
        service.ca.renew_service_key("ocsp-responder", "operator:test")
    assert certificates_of(service, created.account.username) == []


# --- the OCSP responder's and the TSA's certificates ----------------------------------

def test_the_responders_and_tsas_certificates_are_renewed_before_they_end(config, tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp

    from signserver.ca.authority import CertificateRequest
    from signserver.clock import ManualClock
    from tests.ca.test_authority import holder
    from tests.conftest import service_with_ca

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "upkeep.db", clock)
    created, _ = holder(service)
    leaf = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                            "ra:test").certificate
    issuing = service.ca.chain()[0]
    first_responder, first_tsa = service.ca.status().ocsp_responder, service.ca.service_key("tsa")[1]
    assert service.ca.renew_service_keys_if_due() == []  # a year ahead: nothing to do
    clock.advance(days=300)  # less than a quarter of the responder's year is left
    assert service.ca.renew_service_keys_if_due() == ["ocsp-responder", "tsa"]
    assert service.ca.renew_service_keys_if_due() == []  # once
    clock.advance(days=70)  # the first certificates have ended
    assert clock.now() > first_responder.not_valid_after_utc and clock.now() > first_tsa.not_valid_after_utc
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA256()).build()
    response = ocsp.load_der_ocsp_response(service.ca.ocsp(request.public_bytes(Encoding.DER)))
    [responder] = response.certificates
    assert responder.not_valid_before_utc <= clock.now() < responder.not_valid_after_utc
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                  *_verify_arguments(responder, response))
    assert unjustified(rfc5280_findings(responder)) == [] and chain_findings(issuing, responder) == []
    tsa = service.ca.service_key("tsa")[1]
    assert tsa.not_valid_before_utc <= clock.now() < tsa.not_valid_after_utc


def _verify_arguments(responder: x509.Certificate, response) -> tuple:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    key = responder.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return (ec.ECDSA(response.signature_hash_algorithm),)
    if isinstance(key, rsa.RSAPublicKey):
        return (padding.PKCS1v15(), response.signature_hash_algorithm)
    return ()


def test_service_certificates_that_already_end_with_the_issuing_ca_are_not_renewed(config, tmp_path):
    from signserver.clock import ManualClock
    from tests.ca.conftest import own_ca

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "late.db", clock)  # its renewals' old keys leave the token
    issuing = service.ca.chain()[0]
    clock.advance(days=(issuing.not_valid_after_utc - clock.now()).days - 100)
    assert service.ca.renew_service_keys_if_due() == ["ocsp-responder", "tsa"]  # these now end with it
    clock.advance(days=90)
    assert service.ca.renew_service_keys_if_due() == []  # a new one could last no longer
    clock.advance(days=20)  # the issuing CA has ended: still nothing tried, nothing raised
    assert service.ca.renew_service_keys_if_due() == []


class _Expiries(Meter):
    """The meter's seam: what the background work reports of the certificates' ends."""

    def __init__(self):
        self.reported: dict[str, float] = {}

    def certificate_expiry(self, certificate: str, not_after: float) -> None:
        self.reported[certificate] = not_after


@contextlib.contextmanager
def expiries_reported():
    """The certificates' ends reported to the meter while the block runs, by certificate."""
    expiries, kept = _Expiries(), meter()
    install_meter(expiries)
    try:
        yield expiries.reported
    finally:
        install_meter(kept)


def test_the_servers_background_work_renews_the_responders_and_tsas_certificates(config, tmp_path):
    import time

    from signserver.clock import ManualClock
    from signserver.grpc_api.server import BackgroundWork
    from tests.ca.conftest import own_ca

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "background.db", clock)  # its renewals' old keys leave the token
    first_responder, first_tsa = service.ca.status().ocsp_responder, service.ca.service_key("tsa")[1]
    clock.advance(days=300)

    with expiries_reported() as reported:
        work = BackgroundWork(service, poll_seconds=0.05)
        work.start()
        try:
            deadline = time.monotonic() + 60
            while service.ca.service_key("tsa")[1] == first_tsa and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            work.stop()
    tsa, responder = service.ca.service_key("tsa")[1], service.ca.status().ocsp_responder
    assert tsa.not_valid_after_utc > first_tsa.not_valid_after_utc
    assert responder.not_valid_after_utc > first_responder.not_valid_after_utc
    # Reported at once: an alert on the old end would otherwise fire until the workers restart.
    assert reported["tsa"] == tsa.not_valid_after_utc.timestamp()
    assert reported["ocsp"] == responder.not_valid_after_utc.timestamp()


def test_a_service_certificates_name_with_a_control_character_is_refused(config, tmp_path):
    from signserver.clock import ManualClock
    from signserver.errors import InvalidArgument
    from tests.ca.test_authority import csr_for
    from tests.conftest import service_with_ca

    service = service_with_ca(config, tmp_path / "names.db", ManualClock(datetime.datetime.now(datetime.timezone.utc)))
    for name in ("portal\nCN=forged", "portal\x85", "tab\there"):
        with pytest.raises(InvalidArgument, match="control characters"):
            service.ca.issue_service_certificate("client-asp", name, csr_for("x")[1].public_key(), "operator:test")


def test_a_serial_is_found_however_it_is_written(config, tmp_path):
    from signserver.clock import ManualClock
    from tests.ca.test_authority import csr_for
    from tests.conftest import service_with_ca

    service = service_with_ca(config, tmp_path / "serials.db", ManualClock(datetime.datetime.now(datetime.timezone.utc)))
    issued = service.ca.issue_service_certificate("client-asp", "portal", csr_for("x")[1].public_key(), "operator:test")
    written = [issued.serial.upper(), "0x" + issued.serial, "0X" + issued.serial.upper(),
               ":".join(issued.serial[i:i + 2] for i in range(0, len(issued.serial), 2)), "00" + issued.serial]
    for serial in written:
        assert service.ca.get(serial).serial == issued.serial, serial


def test_a_node_without_the_background_lease_reports_certificate_ends_the_lease_holder_changed(config, tmp_path):
    import time

    from signserver.clock import ManualClock
    from signserver.grpc_api.server import BACKGROUND_LEASE, EXPIRY_REPORT_SECONDS, BackgroundWork
    from signserver.store.leases import Lease, LeaseKeeper
    from tests.ca.conftest import own_ca

    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = own_ca(config, tmp_path / "other-node.db", clock)
    # Another node holds the background work's lease: this one never runs the CA's passes.
    assert LeaseKeeper(Lease(service.database, clock, BACKGROUND_LEASE, 3600), clock).keep(True)

    with expiries_reported() as reported:
        work = BackgroundWork(service, poll_seconds=0.05)
        work.start()
        try:
            deadline = time.monotonic() + 30
            while "issuing-ca" not in reported and time.monotonic() < deadline:
                time.sleep(0.05)
            first = reported["issuing-ca"]
            clock.advance(days=30)
            issuing = service.ca.recertify_issuing("operator:test")  # as the lease holder's operator would
            assert issuing.not_valid_after_utc.timestamp() > first
            clock.advance(seconds=EXPIRY_REPORT_SECONDS)
            deadline = time.monotonic() + 30
            while reported["issuing-ca"] == first and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            work.stop()
    # Reported by this node too: an alert on the old end would otherwise fire here till a restart.
    assert reported["issuing-ca"] == issuing.not_valid_after_utc.timestamp()
