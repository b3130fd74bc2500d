"""What goes into a holder's certificate from the account and the RA's request: every value either
fits its X.509 type and bound (and the certificate passes pkilint) or is refused as an invalid
argument naming it; nothing the CA issues outlives its issuer; a renewal keeps what the
predecessor certified."""

from __future__ import annotations

import datetime

import pytest
from asn1crypto import core
from sqlalchemy import update
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from signserver.ca.authority import CertificateRequest
from signserver.ca.builder import ROLE, transaction_limit_of
from signserver.clock import ManualClock
from signserver.errors import InvalidArgument
from signserver.store.schema import accounts
from tests.ca.conftest import certificates_of
from tests.ca.test_authority import csr_for, holder, openssl_verify
from tests.ca.test_etsi_profiles import etsi_findings, rfc5280_findings, unjustified
from tests.conftest import service_with_ca

SMTP_UTF8_MAILBOX = "1.3.6.1.5.5.7.8.9"  # RFC 9598 id-on-SmtpUTF8Mailbox
PEM = serialization.Encoding.PEM
NAMES = {"given_name": "Weng Sam LUZIA", "surname": "KUAN"}


def linted(certificate: x509.Certificate) -> list:
    from pkilint import etsi

    from tests.ca.test_etsi_profiles import _document

    return (unjustified(rfc5280_findings(certificate))
            + unjustified(etsi_findings(certificate, etsi.determine_certificate_type(_document(certificate)))))


def qualified(ca_service, **account):
    created, _ = holder(ca_service, **NAMES, **account)
    csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    issued = ca_service.ca.issue(CertificateRequest("qualified-corporate", created.account.username, csr, 250000,
                                                    "Procurador"), "ra:test")
    return created.account, issued


# --- renewal ------------------------------------------------------------------------------

def test_a_qualified_certificate_renews_with_its_agent_qualification_and_transaction_limit(ca_service):
    account, first = qualified(ca_service)
    csr, _ = csr_for(account.holder_name, account.emails[0])
    second = ca_service.ca.renew(first.serial, "ra:test", csr=csr)  # as the RA's in-person renewal asks it
    assert second.certificate.subject == first.certificate.subject
    assert second.certificate.subject.get_attributes_for_oid(ROLE)[0].value == "Procurador"
    assert transaction_limit_of(second.certificate) == 250000
    assert linted(second.certificate) == []


def test_a_renewal_may_change_the_qualification_once_the_predecessor_is_revoked(ca_service):
    account, first = qualified(ca_service)
    ca_service.ca.revoke(first.serial, "affiliationChanged", "ra:test")
    csr, _ = csr_for(account.holder_name, account.emails[0])
    second = ca_service.ca.renew(first.serial, "ra:test", csr=csr, transaction_limit=1000,
                                 agent_qualification="Gerente")
    assert second.certificate.subject.get_attributes_for_oid(ROLE)[0].value == "Gerente"
    assert transaction_limit_of(second.certificate) == 1000


# --- subject values -----------------------------------------------------------------------

@pytest.mark.parametrize("field, words", [("organisation", "organisation"), ("department", "department"),
                                          ("title", "title"), ("holder_name", "holder's name")])
def test_subject_values_over_their_x509_bounds_are_refused_by_name(ca_service, field, words):
    """New accounts cannot have such values (tests/accounts/test_input_limits.py); one made before
    that rule may, and gets no certificate."""
    created, _ = holder(ca_service, **{field: "X" * 64})
    with ca_service.database.transaction() as conn:
        conn.execute(update(accounts).where(accounts.c.username == created.account.username)
                     .values(**{field: "X" * 65}))
    with pytest.raises(InvalidArgument) as refused:
        ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    assert words in str(refused.value) and "64" in str(refused.value)
    assert certificates_of(ca_service, created.account.username) == []


def test_subject_values_at_their_x509_bounds_pass_the_linters(ca_service):
    created, _ = holder(ca_service, organisation="O" * 64, department="D" * 64, title="T" * 64,
                        holder_name="N" * 64, **NAMES)
    csr, _ = csr_for("N" * 64, created.account.emails[0])
    issued = ca_service.ca.issue(CertificateRequest("qualified-corporate", created.account.username, csr,
                                                    agent_qualification="Q" * 64), "ra:test")
    assert linted(issued.certificate) == []


@pytest.mark.parametrize("qualification, words", [("Procu\x00rador", "control characters"),
                                                  ("Procu\x1b[2Jrador", "control characters"),
                                                  ("Q" * 65, "at most 64")])
def test_an_agent_qualification_that_cannot_be_certified_is_refused(ca_service, qualification, words):
    created, _ = holder(ca_service, **NAMES)
    csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    with pytest.raises(InvalidArgument) as refused:
        ca_service.ca.issue(CertificateRequest("qualified-corporate", created.account.username, csr,
                                               agent_qualification=qualification), "ra:test")
    assert words in str(refused.value) and "agent qualification" in str(refused.value)
    assert certificates_of(ca_service, created.account.username) == []


class _Utf8Mailbox(core.UTF8String):
    pass


def _alternative_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_an_internationalised_domain_is_certified_in_its_ascii_form(ca_service):
    created, _ = holder(ca_service, emails=("kuan@bücher.mo",), **NAMES)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                                 "ra:test")
    certificate = issued.certificate
    assert _alternative_names(certificate).get_values_for_type(x509.RFC822Name) == ["kuan@xn--bcher-kva.mo"]
    assert certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "kuan@xn--bcher-kva.mo"
    assert linted(certificate) == []


def test_an_internationalised_mailbox_is_certified_as_an_smtp_utf8_mailbox(ca_service):
    created, _ = holder(ca_service, emails=("關詠心@例子.澳門",), **NAMES)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                                 "ra:test")
    certificate = issued.certificate
    [other] = _alternative_names(certificate).get_values_for_type(x509.OtherName)
    assert other.type_id.dotted_string == SMTP_UTF8_MAILBOX
    assert _Utf8Mailbox.load(other.value).native == "關詠心@xn--fsqu00a.xn--mix891f"  # RFC 9598: A-labels
    # IA5String cannot hold it: no emailAddress in the subject (RFC 5280 wants the e-mail in the SAN).
    assert certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS) == []
    assert linted(certificate) == []


# --- keys ---------------------------------------------------------------------------------

def test_an_encryption_certificate_is_refused_for_a_key_that_cannot_encipher(ca_service):
    created, _ = holder(ca_service, **NAMES)
    key = ed25519.Ed25519PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, created.account.holder_name)]))
           .sign(key, None).public_bytes(PEM))
    with pytest.raises(InvalidArgument) as refused:
        ca_service.ca.issue(CertificateRequest("encryption-corporate", created.account.username, csr), "ra:test")
    assert "Ed25519" in str(refused.value) and refused.value.field == "csr"
    assert certificates_of(ca_service, created.account.username) == []


# --- validity -----------------------------------------------------------------------------

def test_nothing_is_valid_beyond_its_issuing_ca(config, tmp_path):
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path / "late.db", clock)
    issuing = service.ca.chain()[0]
    clock.advance(days=9 * 365)  # a year before the issuing CA's end: less than a holder's 3 years
    created, _ = holder(service, **NAMES)
    leaf = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                            "ra:test").certificate
    responder = service.ca.renew_service_key("ocsp-responder", "operator:test")
    client = service.ca.issue_service_certificate("client-ra", "late ra", csr_for("x")[1].public_key(),
                                                  "operator:test").certificate
    for certificate in (leaf, responder, client):
        assert certificate.not_valid_after_utc == issuing.not_valid_after_utc
    moment = issuing.not_valid_after_utc - datetime.timedelta(days=1)
    assert openssl_verify(tmp_path, service, leaf, moment).returncode == 0


# --- an external root -------------------------------------------------------------------

def test_certificates_under_an_external_root_name_the_issuing_cas_own_key_identifier(config, tmp_path, clock):
    from dataclasses import replace

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.ca.test_etsi_profiles import chain_findings
    from tests.conftest import service_with

    service = service_with(config, tmp_path / "external.db", clock,
                           ca=replace(config.ca, root_key_algorithm="ec-p256", issuing_key_algorithm="ec-p256"))
    request = service.ca.begin_external_root("operator:test")
    root_key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "External Root")])
    now = clock.now() - datetime.timedelta(minutes=5)
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA384()))
    # RFC 7093's method 1: the leftmost 160 bits of the key's SHA-256, not RFC 5280's SHA-1.
    digest = hashes.Hash(hashes.SHA256())
    digest.update(request.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    issuing = (x509.CertificateBuilder().subject_name(request.subject).issuer_name(name)
               .public_key(request.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1825))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.SubjectKeyIdentifier(digest.finalize()[:20]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                              critical=False)
               .sign(root_key, hashes.SHA384()))
    service.ca.complete_external_root(issuing.public_bytes(PEM), root.public_bytes(PEM), "operator:test")
    created, _ = holder(service, **NAMES)
    leaf = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                            "ra:test").certificate
    authority = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert chain_findings(issuing, leaf) == []
    assert chain_findings(issuing, service.ca.status().ocsp_responder) == []
    service.ca.publish_crls()
    crl = x509.load_der_x509_crl(service.ca.crl("issuing"))
    crl_authority = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert crl_authority.key_identifier == authority.key_identifier
    # Five years of issuing CA: a holder's three years end with it after the second.
    assert leaf.not_valid_after_utc <= issuing.not_valid_after_utc
