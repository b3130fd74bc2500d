"""The operator's work beyond renewals against a real served core (mutual TLS with an RA client
certificate) and the RA's real store: enrolment of a cloud-signature and a qualified holder (a CSR
made here stands in for the holder's card), unlock with the recovery code, revocation by the
operator and by the holder, listing and search; and no secret in the RA's audit trail or logs."""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.client import CertificateClient, NotFound
from signserver.ra.errors import OperationRefused
from signserver.ra.operations import Enrolment, EnrolmentSecrets, RaOperations
from signserver.ra.store import holder_search, repository
from tests.ca.test_certificate_service import client_pair
from tests.ra.conftest import KUAN, SILVA_PASSPORT

PASSWORD = "First-pass-1"
PHRASE = "Phrase2026ok"
OPERATOR = "dsaj-operator"


@pytest.fixture(scope="module")
def core(served, ca_service, ca_clock):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-operations-tests")
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with CertificateClient(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                           client_key=key, timeout_seconds=60, clock=ca_clock) as client:
        yield client


@pytest.fixture
def operations(ra_database, ca_clock, core):
    return RaOperations(ra_database, ca_clock, core)


def card_csr(name: str = KUAN.name) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A key pair and its PKCS#10 request, as a holder's smart card would make them."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return key, csr


def cloud(account: str, **changes) -> Enrolment:
    """A government holder with KUAN's registered data; a cloud-signature certificate unless ``changes`` say
    (its key P-256: tests/ra/running.py's create_account says why)."""
    return Enrolment(**{"holder": replace(KUAN, account=account), "profile": "cloud-signature-government",
                        "kind": "government", "organisation": "DSAJ", "department": "Legal", "title": "Técnico",
                        "key_algorithm": "ec-p256", **changes})


SECRETS = EnrolmentSecrets(password=PASSWORD, confirmation=PASSWORD, revocation_phrase=PHRASE)


def trail(database) -> list[dict]:
    with database.transaction() as conn:
        return repository.audit_entries(conn)


def assert_no_secret(texts, *secrets: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def test_a_cloud_signature_enrolment_gives_the_key_in_the_core_an_otp_uri_and_a_recovery_code(
        operations, ra_database, core, caplog):
    caplog.set_level(logging.DEBUG)
    enrolled = operations.enrol(cloud("op-cloud"), SECRETS, OPERATOR)

    assert enrolled.certificate.profile == "cloud-signature-government"
    assert enrolled.certificate.account == "op-cloud" and enrolled.certificate.status == "valid"
    assert enrolled.credential_id and enrolled.certificate.credential_id == enrolled.credential_id
    assert enrolled.otp_uri.startswith("otpauth://totp/") and enrolled.recovery_code
    assert [c.serial for c in core.list_certificates("op-cloud")] == [enrolled.certificate.serial]
    with ra_database.transaction() as conn:
        assert repository.find_holder(conn, "op-cloud") == replace(KUAN, account="op-cloud")
    entries = [e for e in trail(ra_database) if "op-cloud" in e["detail"]]
    assert [(e["actor"], e["action"]) for e in entries] == [(OPERATOR, "enrolment_pending"),
                                                            (OPERATOR, "holder_enrolled"),
                                                            (OPERATOR, "certificate_issued")]
    seed = parse_qs(urlparse(enrolled.otp_uri).query)["secret"][0]
    assert_no_secret([e["detail"] for e in trail(ra_database)] + [caplog.text, repr(enrolled)],
                     PASSWORD, PHRASE, seed, enrolled.recovery_code)


def test_a_qualified_enrolment_certifies_the_key_of_the_holders_card(operations, ra_database, core):
    key, csr = card_csr(SILVA_PASSPORT.name)
    enrolled = operations.enrol(Enrolment(holder=replace(SILVA_PASSPORT, account="op-qualified"),
                                          profile="qualified-corporate", kind="corporate", organisation="Banco",
                                          csr=csr, transaction_limit=500_000, agent_qualification="Procuradora",
                                          key_algorithm="ec-p256"),
                                SECRETS, OPERATOR)

    certificate = x509.load_der_x509_certificate(enrolled.certificate.certificate_der)
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    assert enrolled.certificate.profile == "qualified-corporate" and not enrolled.certificate.credential_id
    assert "Procuradora" in enrolled.certificate.subject or "Procuradora" in certificate.subject.rfc4514_string()


@pytest.mark.parametrize("changes, refusal", [
    ({"profile": "qualified-government"}, "give its CSR"),
    ({"profile": "encryption-corporate"}, "give its CSR"),
    ({"csr": card_csr()[1]}, "give no CSR"),
    ({"transaction_limit": 1000}, "belong to qualified certificates"),
    ({"agent_qualification": "Director"}, "belong to qualified certificates"),
])
def test_an_enrolment_whose_profile_and_options_disagree_is_refused_before_the_core(operations, core, changes,
                                                                                    refusal):
    with pytest.raises(OperationRefused, match=refusal):
        operations.enrol(cloud("op-refused", **changes), SECRETS, OPERATOR)
    with pytest.raises(NotFound):
        core.list_certificates("op-refused")


@pytest.mark.parametrize("secrets, refusal", [
    (EnrolmentSecrets(password=PASSWORD, confirmation="Other-pass-1"), "differ"),
    (EnrolmentSecrets(password="short1", confirmation="short1"), "at least 8"),
    (EnrolmentSecrets(password=PASSWORD, confirmation=PASSWORD, revocation_phrase="no spaces!"), "letters and digits"),
])
def test_bad_secrets_are_refused_without_repeating_them(operations, secrets, refusal):
    with pytest.raises(OperationRefused, match=refusal) as refused:
        operations.enrol(cloud("op-bad-secrets"), secrets, OPERATOR)
    assert_no_secret([str(refused.value)], secrets.password, secrets.confirmation)


def test_an_existing_account_gets_a_second_certificate_only_when_asked(operations, core):
    first = operations.enrol(cloud("op-second"), SECRETS, OPERATOR)
    key, csr = card_csr()
    with pytest.raises(OperationRefused, match="--existing-account"):
        operations.enrol(cloud("op-second", profile="encryption-government", csr=csr), SECRETS, OPERATOR)
    second = operations.enrol(cloud("op-second", profile="encryption-government", csr=csr, existing_account=True),
                              EnrolmentSecrets(), OPERATOR)
    assert not second.otp_uri and not second.recovery_code
    assert {c.serial for c in core.list_certificates("op-second")} == {first.certificate.serial,
                                                                        second.certificate.serial}


def test_unlock_with_the_recovery_code_gives_a_new_one_and_spends_the_old(operations, ra_database, caplog):
    caplog.set_level(logging.DEBUG)
    enrolled = operations.enrol(cloud("op-unlock"), SECRETS, OPERATOR)
    new_password = "Second-pass-2"

    with pytest.raises(OperationRefused, match="differ"):
        operations.unlock("op-unlock", enrolled.recovery_code, new_password, "Second-pass-3", OPERATOR)
    new_code = operations.unlock("op-unlock", enrolled.recovery_code, new_password, new_password,
                                 OPERATOR).recovery_code
    assert new_code and new_code != enrolled.recovery_code
    with pytest.raises(OperationRefused, match="recovery code was refused"):
        operations.unlock("op-unlock", enrolled.recovery_code, "Third-pass-3", "Third-pass-3", OPERATOR)
    assert operations.unlock("op-unlock", new_code, "Third-pass-3", "Third-pass-3", OPERATOR)

    unlocked = [e for e in trail(ra_database) if e["action"] == "account_unlocked"]
    assert len(unlocked) == 2 and all(e["actor"] == OPERATOR and "op-unlock" in e["detail"] for e in unlocked)
    assert_no_secret([e["detail"] for e in trail(ra_database)] + [caplog.text],
                     enrolled.recovery_code, new_code, new_password, "Third-pass-3")


def test_an_operator_revokes_a_certificate_once(operations, ra_database, core):
    serial = operations.enrol(cloud("op-revoke"), SECRETS, OPERATOR).certificate.serial
    revoked = operations.revoke(serial, "keyCompromise", OPERATOR)
    assert revoked.status == "revoked" and revoked.revocation_reason == "keyCompromise"
    assert core.get_certificate(serial).status == "revoked"
    with pytest.raises(OperationRefused):
        operations.revoke(serial, "keyCompromise", OPERATOR)
    with pytest.raises(OperationRefused, match="no certificate"):
        operations.revoke("0badc0de", "keyCompromise", OPERATOR)
    assert [e["detail"] for e in trail(ra_database) if e["action"] == "certificate_revoked"][-1].startswith(
        f"serial={serial} reason=keyCompromise")


def test_a_holder_revokes_with_the_revocation_phrase_and_a_wrong_one_is_refused(operations, ra_database, core,
                                                                                caplog):
    caplog.set_level(logging.DEBUG)
    serial = operations.enrol(cloud("op-holder-revokes"), SECRETS, OPERATOR).certificate.serial
    other = operations.enrol(cloud("op-other-holder"), SECRETS, OPERATOR).certificate.serial

    with pytest.raises(OperationRefused, match="revocation phrase is not right"):
        operations.revoke_by_holder(serial, "op-holder-revokes", "WrongPhrase99", OPERATOR)
    with pytest.raises(OperationRefused, match="revocation phrase is not right"):  # not the account's certificate
        operations.revoke_by_holder(other, "op-holder-revokes", PHRASE, OPERATOR)
    assert core.get_certificate(serial).status == "valid" and core.get_certificate(other).status == "valid"

    revoked = operations.revoke_by_holder(serial, "op-holder-revokes", PHRASE, OPERATOR, "affiliationChanged")
    assert revoked.status == "revoked" and revoked.revocation_reason == "affiliationChanged"
    actions = [e["action"] for e in trail(ra_database)
               if f"serial={serial}" in e["detail"] and e["action"] != "certificate_issued"]
    assert actions == ["holder_revocation_refused", "certificate_revoked_by_holder"]
    assert_no_secret([e["detail"] for e in trail(ra_database)] + [caplog.text], PHRASE, "WrongPhrase99")


def test_certificates_are_listed_by_account_status_and_expiry(operations):
    first = operations.enrol(cloud("op-listed"), SECRETS, OPERATOR).certificate
    _, csr = card_csr()
    second = operations.enrol(cloud("op-listed", profile="standard-government", csr=csr, existing_account=True),
                              EnrolmentSecrets(), OPERATOR).certificate
    operations.revoke(second.serial, "superseded", OPERATOR)

    assert {c.serial for c in operations.certificates("op-listed")} == {first.serial, second.serial}
    assert [c.serial for c in operations.certificates("op-listed", status="revoked")] == [second.serial]
    assert [c.serial for c in operations.certificates("op-listed", status="valid")] == [first.serial]
    days_left = (first.not_after - datetime.datetime.now(datetime.timezone.utc)).days
    assert [c.serial for c in operations.certificates("op-listed", expiring_within_days=days_left + 2)] == \
        [first.serial]
    assert operations.certificates("op-listed", expiring_within_days=1) == []
    assert first.serial in {c.serial for c in operations.certificates()}
    with pytest.raises(OperationRefused, match="no account"):
        operations.certificates("op-nobody")
    with pytest.raises(OperationRefused, match="status"):
        operations.certificates(status="lost")


def test_search_finds_holders_by_account_name_or_email_with_their_certificates(operations, ra_database):
    serial = operations.enrol(Enrolment(holder=replace(KUAN, account="op-found", name="LEONG 100% KA IO",
                                                       emails=("leong.kaio@dsaj.example.mo",)),
                                        profile="cloud-signature-corporate", kind="corporate",
                                        organisation="DSAJ", key_algorithm="ec-p256"),
                              SECRETS, OPERATOR).certificate.serial
    with ra_database.transaction() as conn:  # registered with the RA, unknown to the core
        repository.save_holder(conn, replace(KUAN, account="op-only-registered", name="LEONG KA MAN"),
                               datetime.datetime.now(datetime.timezone.utc))

    for text in ("op-found", "leong 100", "DSAJ.example", "100%"):
        [found] = operations.search(text, OPERATOR)
        assert found.holder.account == "op-found" and [c.serial for c in found.certificates] == [serial]
    assert {f.holder.account for f in operations.search("leong", OPERATOR)} == {"op-found", "op-only-registered"}
    assert [f.certificates for f in operations.search("only-registered", OPERATOR)] == [()]
    # Several holders found: each with its own certificates (the core lists them all at once).
    other = operations.enrol(Enrolment(holder=replace(KUAN, account="op-found-too", name="LEONG KA WAI",
                                                      emails=("leong.kawai@dsaj.example.mo",)),
                                       profile="cloud-signature-corporate", kind="corporate",
                                       organisation="DSAJ", key_algorithm="ec-p256"),
                             SECRETS, OPERATOR).certificate.serial
    assert {f.holder.account: [c.serial for c in f.certificates] for f in operations.search("leong", OPERATOR)} == {
        "op-found": [serial], "op-found-too": [other], "op-only-registered": []}
    assert operations.search("1_0%", OPERATOR) == [] and operations.search("nobody-at-all", OPERATOR) == []
    with pytest.raises(OperationRefused):
        operations.search("  ", OPERATOR)
    searched = [json.loads(e["detail"]) for e in trail(ra_database) if e["action"] == "holders_searched"]
    assert {"text": "leong", "found": ["op-found", "op-only-registered"]} in searched
    assert {"text": "leong", "found": ["op-found", "op-found-too", "op-only-registered"]} in searched


def test_a_search_that_finds_as_many_holders_as_it_shows_has_them_listed_by_the_core(operations, ra_database):
    # The RA shows at most holder_search.MAX_RESULTS holders and asks the core for all their
    # certificates in one listing, which names at most as many accounts as the core allows: a cap
    # raised on one side alone would fail here.
    now = datetime.datetime.now(datetime.timezone.utc)
    with ra_database.transaction() as conn:
        for number in range(holder_search.MAX_RESULTS + 5):
            repository.save_holder(conn, replace(KUAN, account=f"op-many-{number:03}", name=f"CHAN MANY {number}",
                                                 emails=(f"many.{number}@example.mo",)), now)

    found = operations.search("op-many-", OPERATOR)

    assert len(found) == holder_search.MAX_RESULTS
    assert all(f.holder.account.startswith("op-many-") and f.certificates == () for f in found)


def test_a_certificate_refused_after_the_account_was_made_still_gives_the_holder_the_account_secrets(
        operations, ra_database, core):
    _, someone_elses = card_csr("SOMEONE ELSE")
    enrolled = operations.enrol(cloud("op-half", profile="qualified-government", csr=someone_elses), SECRETS, OPERATOR)
    assert enrolled.certificate is None and "does not name" in enrolled.refusal
    assert enrolled.otp_uri and enrolled.recovery_code
    assert core.list_certificates("op-half") == []
    actions = [e["action"] for e in trail(ra_database) if "account=op-half" in e["detail"]]
    assert actions == ["enrolment_pending", "holder_enrolled", "certificate_refused"]

    _, csr = card_csr()
    issued = operations.enrol(cloud("op-half", profile="qualified-government", csr=csr, existing_account=True),
                              EnrolmentSecrets(), OPERATOR).certificate
    assert [c.serial for c in core.list_certificates("op-half")] == [issued.serial]


# The core's answers, translated in one place (signserver.ra.errors.core_error) for every caller


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED"])
def test_a_core_that_does_not_answer_is_unavailable_for_every_caller(code):
    from signserver.client import ServerBusy
    from signserver.ra.errors import ApplicationRefused, CoreUnavailable, StepRefused, core_error

    for refused in (StepRefused, OperationRefused, ApplicationRefused):
        error = core_error(ServerBusy(code, "the queue is full"), refused)
        assert type(error) is CoreUnavailable and code in str(error)


def test_a_refusal_of_the_core_keeps_its_help_code_whoever_asked():
    from signserver.client import CertificateRefused
    from signserver.ra.errors import ApplicationRefused, StepRefused, core_error

    refusal = CertificateRefused("FAILED_PRECONDITION", "the subject data changed", help_code="AC-AB-0015")
    for refused in (StepRefused, OperationRefused, ApplicationRefused):
        error = core_error(refusal, refused)
        assert type(error) is refused and error.help_code == "AC-AB-0015"
        assert str(error) == "the core refused: the subject data changed"
    assert str(core_error(refusal, OperationRefused, "revoke it first")) == "revoke it first"


def test_an_existing_account_the_core_does_not_have_registers_nothing(operations, ra_database):
    """The holder's identity data and the "holder_registered" record are kept only once the core
    has issued for the account: a refusal leaves the RA as it was."""
    before = trail(ra_database)
    key, csr = card_csr()
    with pytest.raises(OperationRefused, match="the core has no account op-nobody"):
        operations.enrol(cloud("op-nobody", profile="encryption-government", csr=csr, existing_account=True),
                         EnrolmentSecrets(), OPERATOR)
    with ra_database.transaction() as conn:
        assert repository.find_holder(conn, "op-nobody") is None
    assert trail(ra_database) == before
