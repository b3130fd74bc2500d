"""The CA on a real token: chains that OpenSSL verifies, profiles, CSR checks, renewal rules,
revocation, CRLs, OCSP responses and expiry notices."""

from __future__ import annotations

import datetime
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.ca.builder import ROLE, transaction_limit_of
from signserver.ca.profiles import HOLDER_PROFILES, KeySource
from signserver.errors import (
    AlreadyExists,
    CertificateRefused,
    CredentialUnusable,
    InvalidArgument,
    PermissionDenied,
)
from signserver.hsm.algorithms import HashAlgorithm
from signserver.secret import Secret
from signserver.store.schema import certificates
from tests.ca.conftest import certificates_of
from tests.conftest import PASSWORD, enrol, production_costs, service_with_ca

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module", params=["test-keys", "default-keys"])
def ca_service(request, config, tmp_path_factory, ca_clock):
    """This module's CA twice: on the tests' P-256 keys and on the defaults' RSA-3072 keys (see
    TEST_COSTS in tests/conftest.py), so that what the default CA issues and signs is checked
    as thoroughly."""
    if request.param == "default-keys":
        config = production_costs(config)
    return service_with_ca(config, tmp_path_factory.mktemp("ca") / "signserver.db", ca_clock)


def holder(service, **fields):
    fields.setdefault("kind", AccountKind.CORPORATE)
    fields.setdefault("organisation", "Example Lda")
    fields.setdefault("department", "Legal")
    fields.setdefault("title", "Director")
    return enrol(service, revocation_phrase=Secret("Phrase2026ok"), **fields)


def csr_for(name: str, email: str | None = None, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, hashes.SHA256())
    return request.public_bytes(PEM), key


def openssl_verify(tmp_path, service, leaf: x509.Certificate, at: datetime.datetime) -> subprocess.CompletedProcess:
    issuing, root = service.ca.chain()
    (tmp_path / "root.pem").write_bytes(root.public_bytes(PEM))
    (tmp_path / "issuing.pem").write_bytes(issuing.public_bytes(PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(PEM))
    return subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                           str(tmp_path / "issuing.pem"), "-attime", str(int(at.timestamp())),
                           str(tmp_path / "leaf.pem")], capture_output=True, text=True)


def issued_count(service) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(certificates)).scalar()


def test_initialise_once(ca_service):
    status = ca_service.ca.status()
    assert status.ready and status.root.subject.rfc4514_string() == "CN=signserver Root CA,O=signserver,C=MO"
    root_key = status.root.public_key()
    if ca_service.config.ca.root_key_algorithm == "rsa-3072":
        assert isinstance(root_key, rsa.RSAPublicKey) and root_key.key_size == 3072
    else:
        assert ca_service.config.ca.root_key_algorithm == "ec-p256"
        assert isinstance(root_key, ec.EllipticCurvePublicKey) and root_key.curve.name == "secp256r1"
    with pytest.raises(AlreadyExists):
        ca_service.ca.initialise("operator:test")
    for name in ("ca-root", "ca-issuing", "ca-ocsp"):
        assert any(k.label.startswith(name) and k.attributes.never_extractable for k in ca_service.keys.list())


@pytest.mark.parametrize("profile", [p.name for p in HOLDER_PROFILES])
def test_every_profile_chain_verifies_and_matches(ca_service, ca_clock, tmp_path, profile):
    chosen = next(p for p in HOLDER_PROFILES if p.name == profile)
    created, _ = holder(ca_service, kind=AccountKind(chosen.variant))
    csr = None
    if chosen.key_source is KeySource.CSR:
        csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    extra = {"transaction_limit": 500000, "agent_qualification": "Procurador"} if chosen.qualified else {}
    issued = ca_service.ca.issue(CertificateRequest(profile, created.account.username, csr, **extra), "ra:test")
    certificate = issued.certificate
    result = openssl_verify(tmp_path, ca_service, certificate, ca_clock.now())
    assert result.returncode == 0, result.stdout + result.stderr

    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Weng Sam LUZIA KUAN"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Lda"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "Legal"
    assert subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "Director"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == created.account.username
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "MO"
    extensions = certificate.extensions
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    if profile.startswith(("cloud-signature", "qualified")):
        assert usage.value.digital_signature and usage.value.content_commitment
    if profile.startswith("encryption"):
        assert usage.value.key_agreement and not usage.value.digital_signature  # EC key from the CSR
        assert ExtendedKeyUsageOID.EMAIL_PROTECTION in extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    policy = extensions.get_extension_for_class(x509.CertificatePolicies).value[0]
    assert policy.policy_identifier.dotted_string == chosen.policy_oid
    assert policy.policy_qualifiers == ["http://127.0.0.1:8080/cps"]
    access = {d.access_method: d.access_location.value
              for d in extensions.get_extension_for_class(x509.AuthorityInformationAccess).value}
    assert access[x509.oid.AuthorityInformationAccessOID.OCSP] == "http://127.0.0.1:8080/ocsp"
    points = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == "http://127.0.0.1:8080/crl/issuing.crl"
    assert extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.RFC822Name) == [created.account.emails[0]]
    validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert validity == datetime.timedelta(days=1095)
    assert certificate.serial_number > 2**63
    if chosen.qualified:
        assert transaction_limit_of(certificate) == 500000
        assert subject.get_attributes_for_oid(ROLE)[0].value == "Procurador"
    if chosen.key_source is KeySource.HSM:
        assert issued.credential_id == created.credential.id  # the enrolment key is certified
        assert ca_service.ca.signing_certificate(created.credential.id) == certificate


def test_ocsp_responder_certificate(ca_service):
    responder = ca_service.ca.status().ocsp_responder
    extensions = responder.extensions
    assert extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.OCSP_SIGNING])
    assert extensions.get_extension_for_class(x509.OCSPNoCheck)


@pytest.mark.parametrize("case", ["garbage", "bad signature", "weak key", "other subject", "other email", "none"])
def test_bad_csrs_are_refused_and_issue_nothing(ca_service, case):
    created, _ = holder(ca_service)
    name, email = created.account.holder_name, created.account.emails[0]
    if case == "garbage":
        csr, message = b"this is not a request", "not a PKCS#10 request"
    elif case == "bad signature":
        good, _ = csr_for(name, email)
        der = x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER)
        csr, message = der[:-1] + bytes([der[-1] ^ 1]), "signature does not verify"
    elif case == "weak key":
        csr, message = csr_for(name, email, rsa.generate_private_key(65537, 1024))[0], "too weak"
    elif case == "other subject":
        csr, message = csr_for("Somebody Else", email)[0], "does not name the account's holder"
    elif case == "other email":
        csr, message = csr_for(name, "other@example.mo")[0], "e-mail address is not the account's"
    else:
        csr, message = None, "needs a certificate request"
    before = issued_count(ca_service)
    with pytest.raises(InvalidArgument, match=message):
        ca_service.ca.issue(CertificateRequest("standard-corporate", created.account.username, csr), "ra:test")
    assert issued_count(ca_service) == before


def test_profile_variant_must_match_the_account(ca_service):
    created, _ = holder(ca_service)  # corporate
    with pytest.raises(InvalidArgument, match="is for government accounts"):
        ca_service.ca.issue(CertificateRequest("cloud-signature-government", created.account.username), "ra")


def test_a_subject_of_the_longest_fields_is_kept_whole(ca_service):
    # Every field at its own limit (X.509's upper bounds, the account's for the names), with
    # characters RFC 4514 escapes: the subject passes 1,000 characters, which PostgreSQL's
    # VARCHAR(1000) refused where SQLite kept it.
    created, _ = holder(ca_service, holder_name="L" * 64, organisation=("Org, Lda+" * 8)[:64],
                        department=("Dept; A" * 10)[:64], title=("T=1" * 22)[:64], given_name="Ana, " * 40,
                        surname="Sá+" * 66 + "Sá", emails=(f"{'e' * 64}@{'d' * 60}.example.mo",))
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    assert len(issued.subject) > 1000
    stored = ca_service.ca.get(issued.serial)
    assert stored.subject == issued.certificate.subject.rfc4514_string() == issued.subject


def test_crls_published_at_once_each_get_their_own_number(ca_service):
    def number() -> int:
        crl = x509.load_der_x509_crl(ca_service.ca.crl("issuing"))
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    before = number()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: ca_service.ca.publish_crls(root=False), range(8)))
    assert number() == before + 8  # none read the same last number as another


def test_renewal_rules(ca_service, ca_clock, tmp_path):
    created, _ = holder(ca_service)
    name = created.account.username
    first = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")
    second = ca_service.ca.renew(first.serial, "ra:test")
    assert second.serial != first.serial and second.predecessor_serial == first.serial
    assert second.credential_id != first.credential_id  # a new key pair
    assert second.certificate.public_key() != first.certificate.public_key()

    ca_service.accounts.update_holder(name, operator="ra:test", department="Finance")
    with pytest.raises(CertificateRefused) as refused:
        ca_service.ca.renew(second.serial, "ra:test")
    assert refused.value.help_code == "AC-AB-0015" and "AC-AB-0015" in str(refused.value)
    ca_service.ca.revoke(second.serial, "affiliationChanged", "ra:test")
    third = ca_service.ca.renew(second.serial, "ra:test")
    ou = third.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert ou == "Finance"


def test_a_certificate_renewed_already_is_not_renewed_again(ca_service):
    from signserver.errors import AlreadyRenewed

    created, _ = holder(ca_service)
    name = created.account.username
    first = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")
    second = ca_service.ca.renew(first.serial, "ra:test")
    with pytest.raises(AlreadyRenewed, match=second.serial):
        ca_service.ca.renew(first.serial, "ra:test")
    # A renewal that passed the first check while another ran is stopped when it records its
    # certificate (issue with a predecessor is that second half of renew).
    with pytest.raises(AlreadyRenewed):
        ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test", predecessor=first.serial)
    with ca_service.database.read() as conn:
        successors = conn.execute(select(func.count()).where(certificates.c.predecessor_serial == first.serial))
        assert successors.scalar() == 1  # the refused one left no certificate behind

    ca_service.ca.revoke(second.serial, "superseded", "ra:test")  # a revoked successor: renew again
    third = ca_service.ca.renew(first.serial, "ra:test")
    assert third.predecessor_serial == first.serial and third.serial != second.serial


def test_two_renewals_of_one_certificate_at_once_give_one_successor(ca_service):
    from signserver.errors import AlreadyRenewed

    created, _ = holder(ca_service)
    name = created.account.username
    first = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")

    def renew(_):
        try:
            return ca_service.ca.renew(first.serial, "ra:test").serial
        except AlreadyRenewed:
            return None
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(renew, range(4)))
    winners = [serial for serial in outcomes if serial is not None]
    assert len(winners) == 1
    with ca_service.database.read() as conn:
        successors = select(certificates.c.serial).where(certificates.c.predecessor_serial == first.serial)
        assert conn.execute(successors).scalars().all() == winners


def test_renewal_of_an_expired_certificate(ca_service, config, tmp_path):
    from signserver.clock import ManualClock
    from tests.conftest import service_with

    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    service = service_with(config, tmp_path / "expiry.db", clock)
    service.ca.initialise("operator:test")
    created, _ = holder(service)
    first = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    clock.advance(days=1096)
    assert service.ca.get(first.serial).status == "expired"
    service.accounts.update_holder(created.account.username, "ra", department="Elsewhere")  # no longer valid
    renewed = service.ca.renew(first.serial, "ra")
    assert renewed.predecessor_serial == first.serial and renewed.status == "valid"


def test_csr_renewal_needs_a_new_key(ca_service):
    created, _ = holder(ca_service)
    csr, key = csr_for(created.account.holder_name, created.account.emails[0])
    first = ca_service.ca.issue(CertificateRequest("standard-corporate", created.account.username, csr), "ra")
    same_key_csr, _ = csr_for(created.account.holder_name, created.account.emails[0], key)
    with pytest.raises(CertificateRefused, match="new key pair"):
        ca_service.ca.renew(first.serial, "ra", csr=same_key_csr)
    new_csr, _ = csr_for(created.account.holder_name, created.account.emails[0])
    assert ca_service.ca.renew(first.serial, "ra", csr=new_csr).predecessor_serial == first.serial


def test_revoked_credential_cannot_authorise_or_sign(ca_service, ca_clock):
    from signserver.accounts import otp

    created, seed = holder(ca_service)
    name = created.account.username
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")
    app, _ = ca_service.applications.create(f"app-{name}")
    token = ca_service.signer.authorize(app, name, Secret(PASSWORD), otp.code_at(seed, ca_clock.now()),
                                        issued.credential_id, HashAlgorithm.SHA256, [bytes(32)])
    ca_service.ca.revoke(issued.serial, "keyCompromise", "ra:test")
    from signserver.errors import ActivationRefused
    from signserver.hsm.algorithms import SignatureAlgorithm

    with pytest.raises((CredentialUnusable, ActivationRefused)):
        ca_service.signer.sign_hashes(app, issued.credential_id, Secret(token.token),
                                      SignatureAlgorithm.RSA_PKCS1V15_SHA256, [bytes(32)])
    ca_clock.advance(seconds=30)
    with pytest.raises(CredentialUnusable):
        ca_service.signer.authorize(app, name, Secret(PASSWORD), otp.code_at(seed, ca_clock.now()),
                                    issued.credential_id, HashAlgorithm.SHA256, [bytes(32)])


def test_holder_revocation_with_the_phrase(ca_service):
    created, _ = holder(ca_service)
    name = created.account.username
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")
    for _ in range(6):
        with pytest.raises(PermissionDenied, match="revocation phrase is not right"):
            ca_service.ca.revoke_by_holder(issued.serial, name, Secret("WrongPhrase1"))
    account = ca_service.accounts.get(name)
    assert account.failed_attempts == 0 and account.status.value == "active"  # counts toward nothing
    revoked = ca_service.ca.revoke_by_holder(issued.serial, name, Secret("Phrase2026ok"), "keyCompromise")
    assert revoked.status == "revoked" and revoked.revocation_reason == "keyCompromise"


def test_a_holder_revocation_under_a_name_no_account_has_keeps_nothing_typed(ca_service):
    """The name typed for a holder's revocation is audited as the sign-in's are: an existing
    account by its name, a name nobody has as "(unknown name)" (it may be a password)."""
    from signserver.audit.log import AuditLog

    created, _ = holder(ca_service)
    name = created.account.username
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", name), "ra:test")
    typed = "Typed-Passw0rd-As-Name"
    for who in (typed, name):
        with pytest.raises(PermissionDenied, match="revocation phrase is not right"):
            ca_service.ca.revoke_by_holder(issued.serial, who, Secret("WrongPhrase1"))
    with ca_service.database.transaction() as conn:
        refused = [r for r in AuditLog.records(conn) if r.event == "certificate.revocation_refused"]
    assert [(r.actor, r.subject) for r in refused[-2:]] == [("holder:(unknown name)", "(unknown name)"),
                                                           (f"holder:{name}", name)]
    with ca_service.database.transaction() as conn:
        assert typed not in str(list(AuditLog.records(conn)))


def test_crl_lists_revocations_with_increasing_numbers(ca_service, tmp_path):
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    before = x509.load_der_x509_crl(ca_service.ca.crl("issuing"))
    ca_service.ca.revoke(issued.serial, "superseded", "ra")
    crl = x509.load_der_x509_crl(ca_service.ca.crl("issuing"))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    entry = crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.superseded
    issuing, root = ca_service.ca.chain()
    assert crl.is_signature_valid(issuing.public_key())
    (tmp_path / "issuing.crl").write_bytes(ca_service.ca.crl("issuing"))
    parsed = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "issuing.crl"), "-noout",
                             "-text"], capture_output=True, text=True)
    assert parsed.returncode == 0 and issued.serial.upper() in parsed.stdout.replace(":", "").upper()
    assert x509.load_der_x509_crl(ca_service.ca.crl("root")).is_signature_valid(root.public_key())


def test_ocsp_good_revoked_unknown_and_nonce(ca_service):
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    issuing, _ = ca_service.ca.chain()
    responder = ca_service.ca.status().ocsp_responder

    def ask(certificate):
        request = (ocsp.OCSPRequestBuilder().add_certificate(certificate, issuing, hashes.SHA256())
                   .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False).build())
        response = ocsp.load_der_ocsp_response(ca_service.ca.ocsp(request.public_bytes(serialization.Encoding.DER)))
        assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                      ec.ECDSA(response.signature_hash_algorithm))
        assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
        return response

    assert ask(issued.certificate).certificate_status is ocsp.OCSPCertStatus.GOOD
    ca_service.ca.revoke(issued.serial, "keyCompromise", "ra")
    revoked = ask(issued.certificate)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = (x509.CertificateBuilder().subject_name(issuing.subject).issuer_name(issuing.subject)
                .public_key(stranger_key.public_key()).serial_number(12345)
                .not_valid_before(datetime.datetime(2026, 1, 1)).not_valid_after(datetime.datetime(2027, 1, 1))
                .sign(stranger_key, hashes.SHA256()))
    assert ask(stranger).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    garbage = ocsp.load_der_ocsp_response(ca_service.ca.ocsp(b"not a request"))
    assert garbage.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_expiry_notice_is_sent_once(ca_service, ca_clock, config, tmp_path):
    from signserver.clock import ManualClock
    from signserver.store.schema import outbox
    from tests.conftest import service_with

    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    service = service_with(config, tmp_path / "notice.db", clock)
    service.ca.initialise("operator:test")
    created, _ = holder(service)
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    assert service.ca.send_expiry_notices() == 0
    clock.advance(days=1095 - 31)
    assert service.ca.send_expiry_notices() == 0
    clock.advance(days=2)
    assert [c.account for c in certificates_of(service, expiring_within_days=30)] == [created.account.username]
    assert service.ca.send_expiry_notices() == 1
    assert service.ca.send_expiry_notices() == 0
    with service.database.read() as conn:
        subjects = [r.subject for r in conn.execute(select(outbox))]
    assert subjects.count("證書即將到期 / Certificado a expirar / Certificate expiring") == 1


def test_configured_profile_settings(config, tmp_path):
    from dataclasses import replace

    from signserver.clock import ManualClock
    from signserver.errors import ConfigurationError
    from tests.conftest import service_with

    ca = replace(config.ca, profile_settings={"cloud-signature-corporate": {
        "validity_days": 730, "policy_oid": "1.3.6.1.4.1.99999.1.2", "cps_uri": "https://example.mo/cps"}})
    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    service = service_with(config, tmp_path / "settings.db", clock, ca=ca)
    service.ca.initialise("operator:test")
    created, _ = holder(service)
    certificate = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username),
                                   "ra").certificate
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == datetime.timedelta(days=730)
    policy = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value[0]
    assert policy.policy_identifier.dotted_string == "1.3.6.1.4.1.99999.1.2"
    assert policy.policy_qualifiers == ["https://example.mo/cps"]
    with pytest.raises(ConfigurationError, match="no such profile"):
        service_with(config, tmp_path / "bad.db", clock, ca=replace(config.ca, profile_settings={"nope": {}}))


def test_an_expired_certificate_stops_its_credential(config, tmp_path):
    from signserver.accounts import otp
    from signserver.clock import ManualClock
    from tests.conftest import service_with

    clock = ManualClock(datetime.datetime(2026, 11, 21, tzinfo=datetime.timezone.utc))
    service = service_with(config, tmp_path / "expired.db", clock)
    service.ca.initialise("operator:test")
    created, seed = holder(service)
    issued = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    app, _ = service.applications.create("expiry-app")
    clock.advance(days=1096)
    with pytest.raises(CredentialUnusable, match="has expired"):
        service.signer.authorize(app, created.account.username, Secret(PASSWORD), otp.code_at(seed, clock.now()),
                                 issued.credential_id, HashAlgorithm.SHA256, [bytes(32)])
