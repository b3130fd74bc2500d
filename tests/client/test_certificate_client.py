"""CertificateClient over a real served core with an RA client certificate (mutual TLS)."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from sqlalchemy import select

from signserver.client import (
    AccountDisabled,
    AccountLocked,
    AlreadyRenewed,
    AuthenticationRefused,
    CertificateClient,
    CertificateRefused,
    Evidence,
    HolderIdentity,
    HolderStanding,
    InvalidArgument,
    NewAccount,
    NotFound,
    PermissionRefused,
    RequestReplayed,
    SignServerClient,
)
from signserver.accounts.otp import code_at
from signserver.clock import ManualClock
from signserver.store.schema import audit_log
from tests.ca.conftest import ca_clock, ca_service  # noqa: F401 (fixtures)
from tests.ca.test_certificate_service import client_pair, served  # noqa: F401 (a fixture)
from tests.conftest import seed_of


def client_for(server, service, name: str, profile: str = "client-ra", clock=None) -> CertificateClient:
    _, certificate, key = client_pair(service, profile, name)
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    return CertificateClient(f"localhost:{server.port}", root_certificates=root, client_certificate=certificate,
                             client_key=key, timeout_seconds=60, clock=clock)


@pytest.fixture(scope="module")
def ra(served, ca_service, ca_clock):  # noqa: F811
    with client_for(served, ca_service, "ra-client-tests", clock=ca_clock) as client:
        yield client


def new_account(name: str) -> NewAccount:
    """A holder's account, its key P-256 (the algorithm is not what these tests are about; RSA-2048,
    the server's default, costs the token a few tenths of a second a key, renewals included)."""
    return NewAccount(account=name, holder_name="Lei Ka Io", emails=(f"{name}@example.mo",), password="Ra-created-1",
                      kind="government", organisation="DSAJ", department="Legal", revocation_phrase="Phrase2026ok",
                      key_algorithm="ec-p256")


def test_the_lifecycle_in_typed_values(ra, ca_service):
    created = ra.create_account(new_account("client-holder-1"))
    assert created.account == "client-holder-1" and created.recovery_code
    assert "Ra-created-1" not in repr(new_account("x")) and created.recovery_code not in repr(created)
    issued = ra.issue_certificate("client-holder-1", "cloud-signature-government")
    assert issued.status == "valid" and issued.credential_id == created.credential_id and issued.account == \
        "client-holder-1"
    assert issued.not_after - issued.not_before > datetime.timedelta(days=300) and issued.revoked_at is None
    assert ra.get_certificate(issued.serial) == issued

    evidence = Evidence(registry_match="match", face_score=0.91,
                        email_verifications=(("client-holder-1@example.mo",
                                              datetime.datetime(2026, 11, 30, 9, 15, tzinfo=datetime.timezone.utc)),),
                        application_sha256=hashlib.sha256(b"application").digest(), reference="renewal-17")
    renewed = ra.renew_certificate(issued.serial, evidence=evidence)
    assert renewed.predecessor_serial == issued.serial and renewed.serial != issued.serial

    revoked = ra.revoke_certificate(renewed.serial, "keyCompromise", revocation_phrase="Phrase2026ok",
                                    account="client-holder-1")
    assert revoked.status == "revoked" and revoked.revocation_reason == "keyCompromise" and revoked.revoked_at
    listed = {c.serial: c.status for c in ra.list_certificates("client-holder-1")}
    assert listed == {issued.serial: "valid", renewed.serial: "revoked"}

    # The evidence went with the renewal into the audit log.
    with ca_service.database.read() as conn:
        details = [json.loads(r.detail) for r in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.event == "ra.request", audit_log.c.subject == issued.serial))]
    assert [d["evidence"] for d in details if d["method"] == "RenewCertificate"] == [{
        "registry_match": "match", "face_score": 0.91,
        "email_verifications": [["client-holder-1@example.mo", 1796030100]],
        "application_sha256": hashlib.sha256(b"application").hexdigest(), "reference": "renewal-17"}]


def test_a_help_code_reaches_the_client(ra, ca_service):
    ra.create_account(new_account("client-holder-2"))
    issued = ra.issue_certificate("client-holder-2", "cloud-signature-government")
    ca_service.accounts.update_holder("client-holder-2", "test", title="Chefe")
    with pytest.raises(CertificateRefused) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-18"))
    assert refused.value.help_code == "AC-AB-0015"
    assert refused.value.code == "FAILED_PRECONDITION" and refused.value.reason == "CERTIFICATE_REFUSED"


def test_a_wrong_revocation_phrase_and_an_unknown_serial(ra):
    ra.create_account(new_account("client-holder-3"))
    issued = ra.issue_certificate("client-holder-3", "cloud-signature-government")
    with pytest.raises(PermissionRefused):
        ra.revoke_certificate(issued.serial, "unspecified", revocation_phrase="NotThePhrase1",
                              account="client-holder-3")
    with pytest.raises(NotFound):
        ra.get_certificate("7f" * 8)


def test_an_application_certificate_is_refused(served, ca_service):  # noqa: F811
    with client_for(served, ca_service, "client-tests-asp", profile="client-asp") as client:
        with pytest.raises(PermissionRefused):
            client.list_certificates()


def test_a_request_from_a_clock_far_off_is_refused(served, ca_service, ca_clock):  # noqa: F811
    late = ManualClock(ca_clock.now() - datetime.timedelta(minutes=6))
    with client_for(served, ca_service, "ra-late-clock", clock=late) as client:
        with pytest.raises(RequestReplayed) as refused:
            client.create_account(new_account("client-holder-late"))
        assert refused.value.reason == "RA_REQUEST_OUT_OF_WINDOW"
        late.advance(minutes=2)  # now 4 minutes behind: inside the window
        assert client.create_account(new_account("client-holder-late")).account == "client-holder-late"


def test_a_wrong_holder_password_is_refused_as_authorize_refuses(ra, ca_service):
    ra.create_account(new_account("client-holder-4"))
    issued = ra.issue_certificate("client-holder-4", "cloud-signature-government")
    with pytest.raises(AuthenticationRefused) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(), holder_password="Not-the-1",
                             revocation_phrase="NewPhrase2027")
    assert refused.value.reason == "AUTHENTICATION_FAILED"
    assert ca_service.accounts.lock_state("client-holder-4").failed_attempts == 1


def test_a_second_renewal_of_one_certificate_is_refused_with_its_reason(ra):
    ra.create_account(new_account("client-holder-5"))
    issued = ra.issue_certificate("client-holder-5", "cloud-signature-government")
    renewed = ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-19"))
    with pytest.raises(AlreadyRenewed) as refused:
        ra.renew_certificate(issued.serial, evidence=Evidence(reference="renewal-19"))
    assert refused.value.code == "FAILED_PRECONDITION" and refused.value.reason == "ALREADY_RENEWED"
    assert isinstance(refused.value, CertificateRefused) and renewed.serial in refused.value.message


# Holders through the RA's pages: sign-in and password change (CertificateClient).


def holder(ra, name: str) -> str:
    """An account with given name and surname (its key P-256: these tests are of the holder's
    sign-in and password, not of its key); returns its OTP seed."""
    created = ra.create_account(NewAccount(
        account=name, holder_name="Weng Sam LUZIA KUAN", emails=(f"{name}@example.mo",), password="Ra-created-1",
        kind="government", organisation="DSAJ", given_name="Weng Sam LUZIA", surname="KUAN",
        key_algorithm="ec-p256"))
    return seed_of(created.otp_uri)


def test_authenticate_holder_in_typed_values(ra, ca_clock):
    seed = holder(ra, "client-signer-1")
    identity = ra.authenticate_holder("client-signer-1", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert identity == HolderIdentity(account="client-signer-1", holder_name="Weng Sam LUZIA KUAN",
                                      given_name="Weng Sam LUZIA", surname="KUAN", emails=("client-signer-1@example.mo",),
                                      password_changed_at=ca_clock.now())  # the clock stood still since


def test_holder_standing_in_typed_values(ra, ca_service, ca_clock):
    holder(ra, "client-standing-1")
    created_at = ca_clock.now()
    assert ra.holder_standing("client-standing-1") == HolderStanding(
        account="client-standing-1", password_changed_at=created_at, disabled=False)
    ca_clock.advance(seconds=30)
    ra.change_password("client-standing-1", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    assert ra.holder_standing("client-standing-1").password_changed_at == ca_clock.now() > created_at
    ca_service.accounts.set_status("client-standing-1", False, "operator:test")
    assert ra.holder_standing("client-standing-1").disabled
    with pytest.raises(NotFound):
        ra.holder_standing("client-nobody-stands")


def test_authenticate_holder_refusals_in_typed_errors(ra, ca_service, ca_clock):
    seed = holder(ra, "client-signer-2")
    with pytest.raises(AuthenticationRefused) as wrong:
        ra.authenticate_holder("client-signer-2", "Not-the-1", code_at(seed, ca_clock.now()))
    with pytest.raises(AuthenticationRefused) as unknown:
        ra.authenticate_holder("client-signer-nobody", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert wrong.value.message == unknown.value.message and wrong.value.reason == "AUTHENTICATION_FAILED"
    for _ in range(4):
        with pytest.raises(AuthenticationRefused):
            ra.authenticate_holder("client-signer-2", "Ra-created-1", "000000" if code_at(
                seed, ca_clock.now()) != "000000" else "111111")
    with pytest.raises(AccountLocked) as locked:
        ra.authenticate_holder("client-signer-2", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert locked.value.locked_until == ca_clock.now() + datetime.timedelta(minutes=30)

    seed = holder(ra, "client-signer-3")
    ca_service.accounts.set_status("client-signer-3", False, "operator:test")
    with pytest.raises(AccountDisabled) as disabled:
        ra.authenticate_holder("client-signer-3", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert isinstance(disabled.value, PermissionRefused) and disabled.value.reason == "ACCOUNT_DISABLED"
    with pytest.raises(InvalidArgument):
        ra.authenticate_holder("", "Ra-created-1", "123456")


def test_authenticate_holder_refuses_an_application_certificate(served, ca_service):  # noqa: F811
    with client_for(served, ca_service, "client-tests-asp-2", profile="client-asp") as client:
        with pytest.raises(PermissionRefused):
            client.authenticate_holder("client-signer-1", "Ra-created-1", "123456")


def test_the_ra_changes_a_password_without_an_otp(ra, ca_clock):
    seed = holder(ra, "client-ra-changer-1")
    assert ra.change_password("client-ra-changer-1", "Ra-created-1", "Changed-pass-2", "Changed-pass-2") is None
    ca_clock.advance(seconds=30)  # a fresh OTP step for each sign-in below
    with pytest.raises(AuthenticationRefused):
        ra.authenticate_holder("client-ra-changer-1", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert ra.authenticate_holder("client-ra-changer-1", "Changed-pass-2", code_at(seed, ca_clock.now())).account == \
        "client-ra-changer-1"
    # The same call again (a replay) finds the current password changed.
    with pytest.raises(AuthenticationRefused):
        ra.change_password("client-ra-changer-1", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")


@pytest.mark.parametrize("new, confirmation, rule", [
    ("Short-1", "Short-1", "too_short"),
    ("Changed-pass-2", "Changed-pass-3", "confirmation_differs"),
    ("lettersonly", "lettersonly", "no_non_letter"),
    ("Ra-created-1", "Ra-created-1", "unchanged"),
])
def test_the_ra_learns_the_rule_a_new_password_broke(ra, ca_service, new, confirmation, rule):
    name = f"client-ra-rules-{rule.replace('_', '-')}"
    holder(ra, name)
    with pytest.raises(InvalidArgument) as refused:
        ra.change_password(name, "Ra-created-1", new, confirmation)
    assert refused.value.rule == rule and refused.value.message
    assert ca_service.accounts.lock_state(name).failed_attempts == 0


def test_the_ra_password_change_refusals_in_typed_errors(ra, ca_service, ca_clock):
    holder(ra, "client-ra-changer-2")
    with pytest.raises(AuthenticationRefused) as wrong:
        ra.change_password("client-ra-changer-2", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    with pytest.raises(AuthenticationRefused) as unknown:
        ra.change_password("client-ra-changer-nobody", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    assert wrong.value.message == unknown.value.message and "rule" not in wrong.value.metadata
    for _ in range(4):
        with pytest.raises(AuthenticationRefused):
            ra.change_password("client-ra-changer-2", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    with pytest.raises(AccountLocked) as locked:
        ra.change_password("client-ra-changer-2", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    assert locked.value.locked_until == ca_clock.now() + datetime.timedelta(minutes=30)

    holder(ra, "client-ra-changer-3")
    ca_service.accounts.set_status("client-ra-changer-3", False, "operator:test")
    with pytest.raises(AccountDisabled):
        ra.change_password("client-ra-changer-3", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")


def test_the_password_change_refuses_an_application_certificate(served, ca_service, ra):  # noqa: F811
    holder(ra, "client-ra-changer-4")
    with client_for(served, ca_service, "client-tests-asp-3", profile="client-asp") as client:
        with pytest.raises(PermissionRefused) as denied:
            client.change_password("client-ra-changer-4", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    assert denied.value.code == "PERMISSION_DENIED"


# Applications change a holder's password through SignServerClient (the OTP as their policy says).


def password_application(served, ca_service, name: str, otp_required: bool) -> SignServerClient:  # noqa: F811
    """An application of the core (an ASP client certificate) serving every account."""
    issued, certificate, key = client_pair(ca_service, "client-asp", name)
    ca_service.applications.create(name, otp_required=otp_required, with_api_key=False,
                                   client_certificate_sha256=hashlib.sha256(issued.der).hexdigest())
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    return SignServerClient(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                            client_key=key, timeout=60)


@pytest.fixture(scope="module")
def passwords(served, ca_service):  # noqa: F811
    with password_application(served, ca_service, "client-password-app", otp_required=False) as client:
        yield client


def test_change_password_without_an_otp(ra, passwords, ca_clock):
    seed = holder(ra, "client-changer-1")
    passwords.change_password("client-changer-1", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    ca_clock.advance(seconds=30)
    with pytest.raises(AuthenticationRefused):
        ra.authenticate_holder("client-changer-1", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert ra.authenticate_holder("client-changer-1", "Changed-pass-2", code_at(seed, ca_clock.now())).account == \
        "client-changer-1"


@pytest.mark.parametrize("new, confirmation, rule", [
    ("Short-1", "Short-1", "too_short"),
    ("only-digits-and-dashes-1", "only-digits-and-dashes-2", "confirmation_differs"),
    ("12345678", "12345678", "no_letter"),
    ("lettersonly", "lettersonly", "no_non_letter"),
    ("Ra-created-1", "Ra-created-1", "unchanged"),
])
def test_change_password_names_the_rule_broken(ra, ca_service, passwords, new, confirmation, rule):
    name = f"client-rules-{rule.replace('_', '-')}"
    holder(ra, name)
    with pytest.raises(InvalidArgument) as refused:
        passwords.change_password(name, "Ra-created-1", new, confirmation)
    assert refused.value.rule == rule and refused.value.message
    # Checked before the factors: nothing counted.
    assert ca_service.accounts.lock_state(name).failed_attempts == 0


def test_change_password_refusals(ra, ca_service, served, passwords, ca_clock):  # noqa: F811
    holder(ra, "client-changer-2")
    with pytest.raises(AuthenticationRefused) as wrong:
        passwords.change_password("client-changer-2", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    with pytest.raises(AuthenticationRefused) as unknown:
        passwords.change_password("client-changer-nobody", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    assert wrong.value.message == unknown.value.message and "rule" not in wrong.value.metadata
    for _ in range(4):
        with pytest.raises(AuthenticationRefused):
            passwords.change_password("client-changer-2", "Not-the-1", "Changed-pass-2", "Changed-pass-2")
    with pytest.raises(AccountLocked) as locked:
        passwords.change_password("client-changer-2", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    assert locked.value.locked_until == ca_clock.now() + datetime.timedelta(minutes=30)

    # An application whose policy requires the OTP refuses a change without one, as a wrong factor.
    holder(ra, "client-changer-3")
    with password_application(served, ca_service, "client-otp-app", otp_required=True) as strict:
        with pytest.raises(AuthenticationRefused):
            strict.change_password("client-changer-3", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
    # One that serves other accounts only may not change this one's.
    issued, certificate, key = client_pair(ca_service, "client-asp", "client-narrow-app")
    ca_service.applications.create("client-narrow-app", accounts_served=("client-changer-1",), with_api_key=False,
                                   client_certificate_sha256=hashlib.sha256(issued.der).hexdigest())
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with SignServerClient(f"localhost:{served.port}", root_certificates=root, client_certificate=certificate,
                          client_key=key, timeout=60) as narrow:
        with pytest.raises(PermissionRefused):
            narrow.change_password("client-changer-3", "Ra-created-1", "Changed-pass-2", "Changed-pass-2")
