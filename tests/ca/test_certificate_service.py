"""CertificateService over mutual TLS set up the way `serve` sets it up: RA certificates only."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import replace

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from signserver.config import ServerConfig, TlsConfig
from signserver.grpc_api.server import bootstrap
from signserver.grpc_api.server import served_config as make_served_config
from signserver.store.schema import audit_log
from signserver.v1 import account_pb2, account_pb2_grpc, certificate_pb2, certificate_pb2_grpc
from tests.ca.conftest import StampedStub
from tests.grpc_api.conftest import ServerThread
from tests.held_pools import threads_held

PEM = serialization.Encoding.PEM


@pytest.fixture(scope="module")
def served(ca_service, config, tmp_path_factory):
    state = tmp_path_factory.mktemp("served")
    tls = TlsConfig(cert_file=state / "tls" / "server.pem", key_file=state / "tls" / "server-key.pem",
                    client_ca_file=None, explicit=False, mutual=True)
    raw = replace(config, state_dir=state, tls=tls, server=ServerConfig("127.0.0.1:0", False))
    bootstrap(raw, ca_service)
    served_config = make_served_config(raw)
    assert served_config.tls.client_ca_file is not None
    with ServerThread(served_config, ca_service) as server:
        yield server


def client_pair(service, profile: str, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate(profile, name, key.public_key(), "operator:test")
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return issued, issued.certificate.public_bytes(PEM), key_pem


def channel_for(server, certificate: bytes, key: bytes) -> grpc.Channel:
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    credentials = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=certificate)
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


@pytest.fixture(scope="module")
def ra(served, ca_service, ca_clock):
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-operator-1")
    with channel_for(served, certificate, key) as channel:
        yield StampedStub(certificate_pb2_grpc.CertificateServiceStub(channel), ca_clock)


def create(ra, name: str):
    """A holder's account, its key P-256 (the algorithm is not what these tests are about; RSA-2048,
    the server's default, which test_create_account_without_a_recovery_code keeps, costs the token a
    few tenths of a second a key)."""
    return ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account=name, holder_name="Lei Ka Io", emails=[f"{name}@example.mo"], kind="government",
        organisation="DSAJ", department="Legal", title="Técnico", password="Ra-created-1",
        revocation_phrase="Phrase2026ok", key_algorithm="ec-p256"), timeout=60)


def test_ra_lifecycle(ra, ca_service):
    created = create(ra, "ra-holder-1")
    assert created.recovery_code and created.otp_uri.startswith("otpauth://")
    issued = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="ra-holder-1", profile="cloud-signature-government"), timeout=60)
    assert issued.status == "valid" and issued.credential_id == created.credential_id
    assert ra.GetCertificate(certificate_pb2.GetCertificateRequest(serial=issued.serial), timeout=30).serial == \
        issued.serial
    renewed = ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=issued.serial), timeout=60)
    assert renewed.predecessor_serial == issued.serial

    ca_service.accounts.update_holder("ra-holder-1", "test", title="Chefe")
    with pytest.raises(grpc.RpcError) as refused:
        ra.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=renewed.serial), timeout=60)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details().startswith("AC-AB-0015")
    assert ("help-code", "AC-AB-0015") in tuple(refused.value.trailing_metadata())

    with pytest.raises(grpc.RpcError) as wrong:
        ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(
            serial=renewed.serial, account="ra-holder-1", revocation_phrase="NotThePhrase1"), timeout=30)
    assert wrong.value.code() is grpc.StatusCode.PERMISSION_DENIED
    revoked = ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(
        serial=renewed.serial, reason="affiliationChanged"), timeout=30)
    assert revoked.status == "revoked" and revoked.revocation_reason == "affiliationChanged"
    listed = ra.ListCertificates(certificate_pb2.ListCertificatesRequest(account="ra-holder-1"), timeout=30)
    assert {c.serial: c.status for c in listed.certificates} == {issued.serial: "valid", renewed.serial: "revoked"}

    with ca_service.database.read() as conn:
        actors = {r.actor for r in conn.execute(select(audit_log.c.actor).where(audit_log.c.subject == "ra-holder-1"))}
    assert "ra:ra-operator-1" in actors


def hsm_threads_held(server: ServerThread):
    """Every thread of the server's HSM pool busy (as under a signing load) until the block ends."""
    pool = server._server.pools.hsm
    return threads_held(server._loop, pool, pool._threads)


def test_the_ras_reads_and_a_holders_revocation_do_not_wait_for_the_hsms_threads(served, ra):
    """They read and write the database only: an RA listing certificates while the HSM's threads
    sign is answered without waiting for a signature."""
    create(ra, "ra-holder-pools")
    issued = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="ra-holder-pools", profile="cloud-signature-government"), timeout=60)
    with hsm_threads_held(served):
        assert ra.GetCertificate(certificate_pb2.GetCertificateRequest(serial=issued.serial), timeout=20).serial \
            == issued.serial
        listed = ra.ListCertificates(certificate_pb2.ListCertificatesRequest(account="ra-holder-pools"), timeout=20)
        assert [c.serial for c in listed.certificates] == [issued.serial]
        revoked = ra.RevokeCertificate(certificate_pb2.RevokeCertificateRequest(
            serial=issued.serial, account="ra-holder-pools", revocation_phrase="Phrase2026ok",
            reason="keyCompromise"), timeout=20)
        assert revoked.status == "revoked"


def test_an_ra_is_shown_holders_and_ras_certificates_only(ra, served, ca_service):
    """GetCertificate shows an RA holders' certificates, and RAs' client certificates (the RA checks
    an operator's sign-in with an RA certificate against them); an application's client
    certificate and the CA's service certificates are as unknown to it as a serial never issued.
    The CA's operator reads them all."""
    from cryptography import x509

    create(ra, "ra-holder-shown")
    holders = ra.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="ra-holder-shown", profile="cloud-signature-government"), timeout=60)
    other_ra, _, _ = client_pair(ca_service, "client-ra", "ra-operator-shown")
    application, _, _ = client_pair(ca_service, "client-asp", "portal-hidden")
    server = x509.load_pem_x509_certificate(served.config.tls.cert_file.read_bytes())
    hidden = [application.serial] + [format(c.serial_number, "x") for c in (
        ca_service.ca.status().ocsp_responder, ca_service.pades.tsa.certificate(), server)]

    def get(serial: str):
        return ra.GetCertificate(certificate_pb2.GetCertificateRequest(serial=serial), timeout=30)

    assert get(holders.serial).account == "ra-holder-shown"
    assert get(other_ra.serial).profile == "client-ra" and get(other_ra.serial).account == ""
    with pytest.raises(grpc.RpcError) as unknown:
        get("7f" * 8)
    for serial in hidden:
        with pytest.raises(grpc.RpcError) as refused:
            get(serial.upper())
        assert refused.value.code() is unknown.value.code() is grpc.StatusCode.NOT_FOUND
        assert refused.value.details() == unknown.value.details().replace("7f" * 8, serial.upper())
        assert ca_service.ca.get(serial).serial == serial


def test_unlock_account(ra, ca_service):
    from signserver.errors import AuthenticationFailed
    from signserver.secret import Secret

    created = create(ra, "ra-holder-2")
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            ca_service.accounts._authenticator.authenticate("ra-holder-2", Secret("Wrong-pass-1"), None, False, "t")
    unlocked = ra.UnlockAccount(certificate_pb2.UnlockAccountRequest(
        account="ra-holder-2", recovery_code=created.recovery_code, new_password="After-unlock-1"), timeout=60)
    assert unlocked.recovery_code != created.recovery_code
    assert ca_service.accounts.get("ra-holder-2").status.value == "active"


def test_an_application_certificate_is_refused(served, ca_service):
    issued, certificate, key = client_pair(ca_service, "client-asp", "portal-1")
    ca_service.applications.set_client_certificate(
        "portal-1", hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest())
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # ... while the same certificate is what the application signs with
        accounts = account_pb2_grpc.AccountServiceStub(channel)
        assert accounts.GetAccountStatus(account_pb2.GetAccountStatusRequest(account="ra-holder-1"), timeout=30)


def test_a_revoked_ra_certificate_is_refused(served, ca_service):
    issued, certificate, key = client_pair(ca_service, "client-ra", "ra-operator-2")
    ca_service.ca.revoke(issued.serial, "privilegeWithdrawn", "operator:test")
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=30)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED and "revoked" in refused.value.details()


def test_a_client_without_a_certificate_cannot_connect(served):
    root = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    with grpc.secure_channel(f"localhost:{served.port}", grpc.ssl_channel_credentials(root)) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListCertificates(certificate_pb2.ListCertificatesRequest(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_server_certificate_is_issued_by_the_ca(served, ca_service):
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(served.config.tls.cert_file.read_bytes())
    leaf.verify_directly_issued_by(ca_service.ca.chain()[0])



def test_create_account_without_a_recovery_code(ra, ca_service):
    from signserver.errors import AuthenticationFailed
    from signserver.secret import Secret

    created = ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account="ra-holder-no-code", holder_name="Lei Ka Io", emails=["ra-holder-no-code@example.mo"],
        kind="government", organisation="DSAJ", password="Ra-created-2", no_recovery_code=True), timeout=60)
    assert created.recovery_code == "" and created.otp_uri.startswith("otpauth://")
    with pytest.raises(AuthenticationFailed):
        ca_service.accounts.unlock_with_recovery_code("ra-holder-no-code", Secret("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"),
                                                      Secret("After-unlock-2"), "operator:test")
    with pytest.raises(grpc.RpcError) as refused:
        ra.UnlockAccount(certificate_pb2.UnlockAccountRequest(
            account="ra-holder-no-code", recovery_code="AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
            new_password="After-unlock-2"), timeout=60)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    # Without the field, a code as before.
    assert create(ra, "ra-holder-with-code").recovery_code


def test_ra_certificates_stay_ra_certificates_when_the_policy_arc_changes(ca_service, config, ca_clock):
    """An RA is known by the profile its certificate was issued with, so an administrator moving
    ca.policy_oid_arc (from the default to the deployment's own arc, say) locks no RA out; and an
    application's certificate never passes for an RA's, whatever OIDs it names."""
    from signserver.errors import PermissionDenied
    from tests.conftest import service_with

    _, ra_certificate, _ = client_pair(ca_service, "client-ra", "ra-before-the-move")
    _, asp_certificate, _ = client_pair(ca_service, "client-asp", "asp-before-the-move")
    moved = service_with(config, ca_service.database.url, ca_clock, ca=replace(config.ca, policy_oid_arc="1.3.6.1.4.1.64000.9"))
    assert moved.ca.profile("client-ra").policy != ca_service.ca.profile("client-ra").policy
    assert moved.ca.identify_ra(ra_certificate) == "ra-before-the-move"
    with pytest.raises(PermissionDenied):
        moved.ca.identify_ra(asp_certificate)


# AuthenticateHolder: the holder's factors, checked for the RA's pages as Authorize checks them.


def holder_with_otp(ra, name: str) -> str:
    """An account with given name and surname; returns its OTP seed."""
    from tests.conftest import seed_of

    created = ra.CreateAccount(certificate_pb2.CreateAccountRequest(
        account=name, holder_name="Weng Sam LUZIA KUAN", emails=[f"{name}@example.mo", f"{name}@work.example.mo"],
        kind="government", organisation="DSAJ", password="Ra-created-1", given_name="Weng Sam LUZIA",
        surname="KUAN", key_algorithm="ec-p256"), timeout=60)
    return seed_of(created.otp_uri)


def authenticate(ra, account: str, password: str, otp_code: str):
    return ra.AuthenticateHolder(certificate_pb2.AuthenticateHolderRequest(
        account=account, password=password, otp=otp_code), timeout=60)


def refusal(ra, account: str, password: str, otp_code: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        authenticate(ra, account, password, otp_code)
    return refused.value


def error_info(error: grpc.RpcError):
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in the status")


def test_authenticate_holder_returns_the_holder_and_audits_the_ra(ra, ca_service, ca_clock):
    from signserver.accounts.otp import code_at

    seed = holder_with_otp(ra, "ra-auth-1")
    identity = authenticate(ra, "ra-auth-1", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert (identity.account, identity.holder_name, identity.given_name, identity.surname) == (
        "ra-auth-1", "Weng Sam LUZIA KUAN", "Weng Sam LUZIA", "KUAN")
    assert list(identity.emails) == ["ra-auth-1@example.mo", "ra-auth-1@work.example.mo"]
    with ca_service.database.read() as conn:
        events = [(r.event, r.actor) for r in conn.execute(
            select(audit_log.c.event, audit_log.c.actor).where(audit_log.c.subject == "ra-auth-1"))]
    assert ("auth.success", "ra:ra-operator-1") in events
    # No nonce, no evidence: a sign-in changes no key or certificate (the one request is CreateAccount).
    assert [event for event, _ in events].count("ra.request") == 1


def test_every_wrong_factor_and_an_unknown_account_are_one_refusal(ra, ca_service, ca_clock):
    from signserver.accounts.otp import code_at

    seed = holder_with_otp(ra, "ra-auth-2")
    right_otp = code_at(seed, ca_clock.now())
    wrong_otp = "000000" if right_otp != "000000" else "111111"
    refusals = [refusal(ra, "ra-auth-2", "Not-the-1", right_otp),  # wrong password
                refusal(ra, "ra-auth-2", "Ra-created-1", wrong_otp),  # wrong OTP
                refusal(ra, "ra-auth-2", "Ra-created-1", ""),  # no OTP: a wrong one, not a bad request
                refusal(ra, "ra-nobody-has-this", "Ra-created-1", right_otp)]  # unknown account
    assert {(r.code(), r.details(), error_info(r).reason) for r in refusals} == {
        (grpc.StatusCode.UNAUTHENTICATED, refusals[0].details(), "AUTHENTICATION_FAILED")}
    # Each counted toward its name's lock.
    assert ca_service.accounts.lock_state("ra-auth-2").failed_attempts == 3
    assert ca_service.accounts.lock_state("ra-nobody-has-this").failed_attempts == 1


def test_an_otp_is_accepted_once(ra, ca_clock):
    from signserver.accounts.otp import code_at

    seed = holder_with_otp(ra, "ra-auth-3")
    code = code_at(seed, ca_clock.now())
    assert authenticate(ra, "ra-auth-3", "Ra-created-1", code).account == "ra-auth-3"
    assert refusal(ra, "ra-auth-3", "Ra-created-1", code).code() is grpc.StatusCode.UNAUTHENTICATED
    ca_clock.advance(seconds=30)
    assert authenticate(ra, "ra-auth-3", "Ra-created-1", code_at(seed, ca_clock.now())).account == "ra-auth-3"


def test_five_failures_lock_the_account(ra, ca_clock):
    from signserver.accounts.otp import code_at
    from signserver.grpc_api.errors import rfc3339_utc

    seed = holder_with_otp(ra, "ra-auth-4")
    for _ in range(5):
        assert refusal(ra, "ra-auth-4", "Not-the-1", "123456").code() is grpc.StatusCode.UNAUTHENTICATED
    locked = refusal(ra, "ra-auth-4", "Ra-created-1", code_at(seed, ca_clock.now()))  # right factors, too late
    assert locked.code() is grpc.StatusCode.FAILED_PRECONDITION and "locked until" in locked.details()
    info = error_info(locked)
    assert info.reason == "ACCOUNT_LOCKED"
    assert info.metadata["locked_until"] == rfc3339_utc(ca_clock.now() + datetime.timedelta(minutes=30))


def test_a_disabled_account_is_said_only_to_the_right_factors(ra, ca_service, ca_clock):
    from signserver.accounts.otp import code_at

    seed = holder_with_otp(ra, "ra-auth-5")
    ca_service.accounts.set_status("ra-auth-5", False, "operator:test")
    assert refusal(ra, "ra-auth-5", "Not-the-1", code_at(seed, ca_clock.now())).code() is \
        grpc.StatusCode.UNAUTHENTICATED
    disabled = refusal(ra, "ra-auth-5", "Ra-created-1", code_at(seed, ca_clock.now()))
    assert disabled.code() is grpc.StatusCode.FAILED_PRECONDITION and error_info(disabled).reason == "ACCOUNT_DISABLED"


def test_authenticate_holder_refuses_an_application_certificate(served, ca_service):
    issued, certificate, key = client_pair(ca_service, "client-asp", "portal-auth")
    ca_service.applications.set_client_certificate(
        "portal-auth", hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest())
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        denied = refusal(stub, "ra-auth-1", "Ra-created-1", "123456")
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED


def test_authenticate_holder_refuses_malformed_requests(ra):
    assert refusal(ra, "", "Ra-created-1", "123456").code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(ra, "ra-auth-1", "", "123456").code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(ra, "x" * 65, "Ra-created-1", "123456").code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refusal(ra, "ra-auth-1", "Ra-created-1", "1" * 17).code() is grpc.StatusCode.INVALID_ARGUMENT


# ChangeHolderPassword: the RA's password page (document 000, no OTP), as ChangePassword changes it.


def change(ra, account: str, current: str, new: str, confirmation: str | None = None):
    return ra.ChangeHolderPassword(certificate_pb2.ChangeHolderPasswordRequest(
        account=account, current_password=current, new_password=new,
        confirm_new_password=new if confirmation is None else confirmation), timeout=60)


def change_refusal(ra, account: str, current: str, new: str, confirmation: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        change(ra, account, current, new, confirmation)
    return refused.value


def test_change_holder_password_replaces_the_password_and_audits_the_ra(ra, ca_service, ca_clock):
    from signserver.accounts.otp import code_at
    from signserver.store.schema import outbox

    seed = holder_with_otp(ra, "ra-change-1")
    change(ra, "ra-change-1", "Ra-created-1", "Changed-pass-2")
    ca_clock.advance(seconds=30)  # a fresh OTP step for each sign-in below
    assert refusal(ra, "ra-change-1", "Ra-created-1", code_at(seed, ca_clock.now())).code() is \
        grpc.StatusCode.UNAUTHENTICATED
    assert authenticate(ra, "ra-change-1", "Changed-pass-2", code_at(seed, ca_clock.now())).account == "ra-change-1"
    # The same request again (a replay) is a wrong current password now.
    assert change_refusal(ra, "ra-change-1", "Ra-created-1", "Changed-pass-2").code() is \
        grpc.StatusCode.UNAUTHENTICATED

    with ca_service.database.read() as conn:
        events = [(r.event, r.actor) for r in conn.execute(
            select(audit_log.c.event, audit_log.c.actor).where(audit_log.c.subject == "ra-change-1"))]
        mailed = {r.recipient for r in conn.execute(select(outbox.c.recipient))}
    assert ("password.changed", "ra:ra-operator-1") in events
    # No nonce, no evidence: the one RA request recorded is CreateAccount's.
    assert [event for event, _ in events].count("ra.request") == 1
    assert {"ra-change-1@example.mo", "ra-change-1@work.example.mo"} <= mailed


def test_change_holder_password_refuses_a_wrong_password_and_an_unknown_account_alike(ra, ca_service):
    holder_with_otp(ra, "ra-change-2")
    wrong = change_refusal(ra, "ra-change-2", "Not-the-1", "Changed-pass-2")
    unknown = change_refusal(ra, "ra-nobody-changes-this", "Ra-created-1", "Changed-pass-2")
    assert {(r.code(), r.details(), error_info(r).reason) for r in (wrong, unknown)} == {
        (grpc.StatusCode.UNAUTHENTICATED, wrong.details(), "AUTHENTICATION_FAILED")}
    assert "rule" not in error_info(wrong).metadata
    assert ca_service.accounts.lock_state("ra-change-2").failed_attempts == 1
    assert ca_service.accounts.lock_state("ra-nobody-changes-this").failed_attempts == 1


def test_change_holder_password_locks_after_five_wrong_passwords(ra, ca_clock):
    from signserver.grpc_api.errors import rfc3339_utc

    holder_with_otp(ra, "ra-change-3")
    for _ in range(5):
        assert change_refusal(ra, "ra-change-3", "Not-the-1", "Changed-pass-2").code() is \
            grpc.StatusCode.UNAUTHENTICATED
    locked = change_refusal(ra, "ra-change-3", "Ra-created-1", "Changed-pass-2")  # the right one, too late
    assert locked.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(locked)
    assert info.reason == "ACCOUNT_LOCKED"
    assert info.metadata["locked_until"] == rfc3339_utc(ca_clock.now() + datetime.timedelta(minutes=30))


@pytest.mark.parametrize("new, confirmation, rule", [
    ("Short-1", "Short-1", "too_short"),
    ("Changed-pass-2", "Changed-pass-3", "confirmation_differs"),
    ("12345678", "12345678", "no_letter"),
    ("lettersonly", "lettersonly", "no_non_letter"),
    ("Ra-created-1", "Ra-created-1", "unchanged"),
])
def test_change_holder_password_names_the_rule_broken(ra, ca_service, new, confirmation, rule):
    name = f"ra-change-rule-{rule.replace('_', '-')}"
    holder_with_otp(ra, name)
    refused = change_refusal(ra, name, "Ra-created-1", new, confirmation)
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and error_info(refused).metadata["rule"] == rule
    # Checked from the request alone, before the password: nothing counted.
    assert ca_service.accounts.lock_state(name).failed_attempts == 0


def test_change_holder_password_says_disabled_only_to_the_right_password(ra, ca_service):
    holder_with_otp(ra, "ra-change-4")
    ca_service.accounts.set_status("ra-change-4", False, "operator:test")
    assert change_refusal(ra, "ra-change-4", "Not-the-1", "Changed-pass-2").code() is \
        grpc.StatusCode.UNAUTHENTICATED
    disabled = change_refusal(ra, "ra-change-4", "Ra-created-1", "Changed-pass-2")
    assert disabled.code() is grpc.StatusCode.FAILED_PRECONDITION and error_info(disabled).reason == "ACCOUNT_DISABLED"


def test_change_holder_password_and_holder_standing_refuse_an_application_certificate(served, ca_service, ra):
    holder_with_otp(ra, "ra-change-5")
    issued, certificate, key = client_pair(ca_service, "client-asp", "portal-change")
    ca_service.applications.create("portal-change", otp_required=False, with_api_key=False,
                                   client_certificate_sha256=hashlib.sha256(issued.der).hexdigest())
    with channel_for(served, certificate, key) as channel:
        stub = certificate_pb2_grpc.CertificateServiceStub(channel)
        denied = change_refusal(stub, "ra-change-5", "Ra-created-1", "Changed-pass-2")
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetHolderStanding(certificate_pb2.GetHolderStandingRequest(account="ra-change-5"), timeout=60)
    assert denied.code() is refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert ca_service.accounts.lock_state("ra-change-5").failed_attempts == 0


# GetHolderStanding: whether a holder's sign-in to the RA's pages still stands.


def standing(stub, account: str):
    return stub.GetHolderStanding(certificate_pb2.GetHolderStandingRequest(account=account), timeout=60)


def test_holder_standing_follows_the_password_by_every_route_and_the_account_s_status(ra, ca_service, ca_clock):
    from signserver.accounts.otp import code_at
    from signserver.secret import Secret

    seed = holder_with_otp(ra, "ra-standing-1")
    ca_clock.advance(seconds=30)
    signed_in = authenticate(ra, "ra-standing-1", "Ra-created-1", code_at(seed, ca_clock.now()))
    first = standing(ra, "ra-standing-1")
    assert signed_in.HasField("password_changed_at") and first.HasField("password_changed_at")
    assert (first.account, first.password_changed_at, first.disabled) == (
        "ra-standing-1", signed_in.password_changed_at, False)

    ca_clock.advance(seconds=30)
    change(ra, "ra-standing-1", "Ra-created-1", "Changed-pass-2")  # the RA's password page
    second = standing(ra, "ra-standing-1").password_changed_at
    ca_clock.advance(seconds=30)  # an application's AccountService.ChangePassword makes this change
    ca_service.accounts.change_password("ra-standing-1", Secret("Changed-pass-2"), Secret("Changed-pass-3"),
                                        Secret("Changed-pass-3"), otp_code=None, otp_required=False,
                                        actor="application:portal")
    third = standing(ra, "ra-standing-1").password_changed_at
    assert first.password_changed_at.seconds < second.seconds < third.seconds
    assert third.seconds == int(ca_clock.now().timestamp())
    assert not standing(ra, "ra-standing-1").disabled

    ca_service.accounts.set_status("ra-standing-1", False, "operator:test")
    assert standing(ra, "ra-standing-1").disabled
    ca_service.accounts.set_status("ra-standing-1", True, "operator:test")
    assert not standing(ra, "ra-standing-1").disabled
    # It checks no factor: nothing counted toward the lock.
    assert ca_service.accounts.lock_state("ra-standing-1").failed_attempts == 0


def test_holder_standing_of_an_unknown_account_is_not_found(ra):
    with pytest.raises(grpc.RpcError) as refused:
        standing(ra, "ra-nobody-stands-here")
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        standing(ra, "")
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
