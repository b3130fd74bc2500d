"""What each step of an account's life does to the holder's ability to sign with a package:
password change, recovery, reset without a code, lockout, disable, revocation, renewal."""

from __future__ import annotations

import datetime
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, update

from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock
from signserver.errors import (
    AccountDisabled,
    AccountLocked,
    ActivationRefused,
    AuthenticationFailed,
    CredentialUnusable,
)
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.store.schema import accounts, certificates, credentials, signing_packages
from tests.conftest import PASSWORD, service_with_ca
from tests.signing.holders import (
    CLOUD_SIGNATURE,
    RSA,
    assert_signed_by,
    authorize,
    authorize_and_sign,
    digests,
    new_holder,
    no_otp_application,
    sign,
)

OPERATOR = "operator:test"
NEW_PASSWORD = "Changed-pass-2026"


@pytest.fixture(scope="module")
def lifecycle(config, tmp_path_factory):
    """A service with an initialised CA, a clock the tests move, and an application without OTP."""
    clock = ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))
    service = service_with_ca(config, tmp_path_factory.mktemp("lifecycle") / "signserver.db", clock, operator=OPERATOR)
    return service, clock, no_otp_application(service)


def public_of(service, credential) -> bytes:
    return service.packages.public_key_der(credential.key_id)


def spki(certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def certify(service, username: str):
    return service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, username), OPERATOR)


def credential_status(service, credential_id: str) -> str:
    with service.database.read() as conn:
        return conn.execute(select(credentials.c.status).where(credentials.c.id == credential_id)).scalar()


def test_a_password_change_keeps_the_same_key(lifecycle):
    service, _, app = lifecycle
    holder = new_holder(service)
    name, credential = holder.account.username, holder.credential
    public = public_of(service, credential)
    service.accounts.change_password(name, Secret(PASSWORD), Secret(NEW_PASSWORD), Secret(NEW_PASSWORD), None,
                                     False, f"holder:{name}")
    with pytest.raises(AuthenticationFailed):
        authorize(service, app, name, credential.id, digests("old password"))
    wanted = digests("after the change", "and another")
    assert_signed_by(public, authorize_and_sign(service, app, name, credential.id, wanted, NEW_PASSWORD), wanted)
    assert public_of(service, credential) == public


def test_recovery_by_code_keeps_the_key_and_each_code_works_once(lifecycle):
    service, _, app = lifecycle
    holder = new_holder(service)
    name, credential = holder.account.username, holder.credential
    public = public_of(service, credential)
    second = service.accounts.unlock_with_recovery_code(name, Secret(holder.recovery_code),
                                                        Secret("Recovered-pass-1"), OPERATOR)
    assert second and second != holder.recovery_code
    with pytest.raises(AuthenticationFailed):  # the first code is spent
        service.accounts.unlock_with_recovery_code(name, Secret(holder.recovery_code), Secret("Recovered-pass-9"),
                                                   OPERATOR)
    wanted = digests("recovered")
    assert_signed_by(public, authorize_and_sign(service, app, name, credential.id, wanted, "Recovered-pass-1"),
                     wanted)

    third = service.accounts.unlock_with_recovery_code(name, Secret(second), Secret("Recovered-pass-2"), OPERATOR)
    with pytest.raises(AuthenticationFailed):
        service.accounts.unlock_with_recovery_code(name, Secret(second), Secret("Recovered-pass-3"), OPERATOR)
    assert third not in (second, holder.recovery_code)
    with pytest.raises(AuthenticationFailed):
        authorize(service, app, name, credential.id, digests("previous password"), "Recovered-pass-1")
    wanted = digests("recovered twice")
    assert_signed_by(public, authorize_and_sign(service, app, name, credential.id, wanted, "Recovered-pass-2"),
                     wanted)


def test_without_a_recovery_code_a_reset_ends_the_old_key_and_a_new_certificate_signs(lifecycle):
    service, clock, app = lifecycle
    holder = new_holder(service, recovery_by_code=False)
    name, old = holder.account.username, holder.credential
    assert holder.recovery_code == ""
    with service.database.read() as conn:
        row = conn.execute(select(accounts.c.recovery_code_hash, accounts.c.seal_key_by_recovery)
                           .where(accounts.c.username == name)).first()
    assert row.recovery_code_hash == "" and row.seal_key_by_recovery is None
    for code in ("", "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"):
        with pytest.raises(AuthenticationFailed):
            service.accounts.unlock_with_recovery_code(name, Secret(code), Secret("Unlocked-pass-1"), OPERATOR)
    first = certify(service, name)
    assert first.credential_id == old.id
    wanted = digests("before the reset")
    assert_signed_by(spki(first.certificate), authorize_and_sign(service, app, name, old.id, wanted), wanted)

    new_code = service.accounts.reset_password(name, Secret("Reset-pass-2026"), OPERATOR)
    assert new_code
    assert credential_status(service, old.id) == "disabled"
    with pytest.raises(AuthenticationFailed):
        authorize(service, app, name, old.id, digests("old password"))
    with pytest.raises(CredentialUnusable):
        authorize(service, app, name, old.id, digests("old key"), "Reset-pass-2026")
    # Enabled again behind the server's back, the old package still does not open: it is sealed
    # to a seal key the holder no longer has.
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == old.id).values(status="active"))
    with pytest.raises(CredentialUnusable):
        authorize(service, app, name, old.id, digests("old key again"), "Reset-pass-2026")
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == old.id).values(status="disabled"))

    service.ca.revoke(first.serial, "keyCompromise", OPERATOR)
    clock.advance(seconds=1)
    renewed = certify(service, name)
    assert renewed.credential_id != old.id
    wanted = digests("after the reset")
    authorization = authorize(service, app, name, "", wanted, "Reset-pass-2026")
    assert authorization.credential_id == renewed.credential_id
    signatures = sign(service, app, authorization.credential_id, authorization.token, wanted)
    assert_signed_by(spki(renewed.certificate), signatures, wanted)
    assert spki(renewed.certificate) != spki(first.certificate)


def test_a_lockout_stops_signing_until_the_lock_ends(lifecycle):
    service, clock, app = lifecycle
    holder = new_holder(service)
    name, credential = holder.account.username, holder.credential
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            authorize(service, app, name, credential.id, digests("guess"), "Wrong-pass-2026")
    with pytest.raises(AccountLocked):
        authorize(service, app, name, credential.id, digests("locked"))
    clock.advance(minutes=29)
    with pytest.raises(AccountLocked):
        authorize(service, app, name, credential.id, digests("still locked"))
    clock.advance(minutes=2)
    wanted = digests("after the lock")
    assert_signed_by(public_of(service, credential), authorize_and_sign(service, app, name, credential.id, wanted),
                     wanted)


def test_disable_ends_signing_and_enable_restores_the_same_key(lifecycle):
    service, _, app = lifecycle
    holder = new_holder(service)
    name, credential = holder.account.username, holder.credential
    wanted = digests("first", "second")
    authorization = authorize(service, app, name, credential.id, wanted)
    sign(service, app, credential.id, authorization.token, wanted[:1])  # the key is open here now
    service.accounts.set_status(name, False, OPERATOR)
    with pytest.raises(ActivationRefused, match="revoked"):
        sign(service, app, credential.id, authorization.token, wanted[1:])
    with pytest.raises(AccountDisabled):
        authorize(service, app, name, credential.id, digests("disabled"))
    service.accounts.set_status(name, True, OPERATOR)
    wanted = digests("enabled again")
    assert_signed_by(public_of(service, credential), authorize_and_sign(service, app, name, credential.id, wanted),
                     wanted)


def test_revocation_destroys_the_package_for_good(lifecycle):
    service, _, app = lifecycle
    holder = new_holder(service)
    name, credential = holder.account.username, holder.credential
    issued = certify(service, name)
    wanted = digests("first", "second")
    authorization = authorize(service, app, name, credential.id, wanted)
    sign(service, app, credential.id, authorization.token, wanted[:1])
    service.ca.revoke(issued.serial, "keyCompromise", OPERATOR)
    with service.database.read() as conn:
        package = conn.execute(select(signing_packages).where(signing_packages.c.key_id == credential.key_id)).first()
    assert package.wrapped_package_key is None and package.sealed_private_key is None
    assert package.public_key  # the public key stays, for what was signed before
    with pytest.raises((ActivationRefused, CredentialUnusable)):  # the key is still open here
        sign(service, app, credential.id, authorization.token, wanted[1:])
    with pytest.raises(CredentialUnusable):
        authorize(service, app, name, credential.id, digests("revoked"))
    # Re-enabled in the database behind the server's back: the package is gone.
    with service.database.transaction() as conn:
        conn.execute(update(credentials).where(credentials.c.id == credential.id).values(status="active"))
        conn.execute(update(certificates).where(certificates.c.serial == issued.serial)
                     .values(status="valid", revoked_at=None, revocation_reason=None))
    with pytest.raises(CredentialUnusable):
        authorize(service, app, name, credential.id, digests("revived"))


@pytest.mark.parametrize("algorithm,signature", [(KeyAlgorithm.EC_P256, None), (KeyAlgorithm.RSA_3072, RSA)])
def test_renewal_makes_a_new_package_of_the_accounts_algorithm(lifecycle, algorithm, signature):
    service, clock, app = lifecycle
    holder = new_holder(service, algorithm=algorithm)
    name = holder.account.username
    first = certify(service, name)
    clock.advance(seconds=1)
    renewed = service.ca.renew(first.serial, OPERATOR)
    assert renewed.predecessor_serial == first.serial and renewed.credential_id != first.credential_id
    credential = service.credentials.credential(app, renewed.credential_id)
    assert credential.is_package and credential.key_algorithm is algorithm
    assert spki(renewed.certificate) == public_of(service, credential) != spki(first.certificate)
    if algorithm is KeyAlgorithm.EC_P256:
        assert isinstance(renewed.certificate.public_key(), ec.EllipticCurvePublicKey)
    else:
        assert renewed.certificate.public_key().key_size == 3072
    wanted = digests("renewed")
    extra = {"algorithm": signature} if signature else {}
    assert_signed_by(spki(renewed.certificate),
                     authorize_and_sign(service, app, name, credential.id, wanted, **extra), wanted)


def test_an_account_name_of_64_characters_enrols_certifies_renews_and_signs(lifecycle):
    service, clock, app = lifecycle
    name = f"holder.{uuid.uuid4().hex}".ljust(64, "x")
    assert len(name) == 64
    holder = new_holder(service, name)
    first = certify(service, name)
    assert first.credential_id == holder.credential.id
    clock.advance(seconds=1)
    renewed = service.ca.renew(first.serial, OPERATOR)
    wanted = digests("a long name")
    assert_signed_by(spki(renewed.certificate),
                     authorize_and_sign(service, app, name, renewed.credential_id, wanted), wanted)
