"""A secret the holder gave up (an old password, a replaced or spent recovery code) opens nothing
current, even with an older copy of the database and the token's PIN: each change of the
secrets gives the account a new seal key and re-seals its packages to it. The secrets the
holder has now keep opening everything, the recovery code across password changes too."""

from __future__ import annotations

import datetime
import uuid

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, update

from signserver.accounts import holder_seal
from signserver.accounts.packages import open_seal_key, package_context
from signserver.accounts.passwords import SecretHasher, normalise_recovery_code
from signserver.ca.authority import CertificateRequest
from signserver.errors import CertificateRefused, CredentialUnusable, DataCorrupted
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.packages import KeyToOpen
from signserver.secret import Secret
from signserver.store.schema import accounts, credentials, signing_packages
from tests.conftest import PASSWORD, service_with_ca
from tests.signing.holders import (CLOUD_SIGNATURE, ECDSA, assert_signed_by, authorize_and_sign, digests, new_holder,
                                   no_otp_application, verifies)

OPERATOR = "operator:test"
NEW_PASSWORD = "Changed-pass-2026"
UNLOCKED_PASSWORD = "Unlocked-pass-7"


def copy_of_secrets(service, username: str):
    """What an older copy of the database keeps of the account's secrets."""
    with service.database.read() as conn:
        return conn.execute(select(accounts.c.password_hash, accounts.c.seal_key_by_password,
                                   accounts.c.recovery_code_hash, accounts.c.seal_key_by_recovery)
                            .where(accounts.c.username == username)).one()


def seal_key_from_copy(service, username: str, copy, secret: str, by: str) -> bytes:
    """The seal key that ``secret`` (a password, or a recovery code) opens in ``copy``."""
    stored_hash, sealed = ((copy.password_hash, copy.seal_key_by_password) if by == "password"
                           else (copy.recovery_code_hash, copy.seal_key_by_recovery))
    derived = SecretHasher(service.config.accounts).derive(
        stored_hash, secret if by == "password" else normalise_recovery_code(secret))
    assert derived.matched
    return open_seal_key(username, sealed, derived.key, by)


def signs_with(service, holder, seal_private: bytes) -> bool:
    """Whether someone with the live database, the token's PIN and ``seal_private`` makes the
    holder's current package sign."""
    with service.database.read() as conn:
        row = conn.execute(select(signing_packages)
                           .where(signing_packages.c.key_id == holder.credential.key_id)).one()
    try:
        wrapped_private = holder_seal.open_sealed(seal_private, row.sealed_private_key,
                                                  package_context(row.key_id, holder.account.username))
    except DataCorrupted:
        return False
    to_open = KeyToOpen(handle_id=f"copy-{uuid.uuid4().hex}", algorithm=KeyAlgorithm(row.algorithm),
                        wrapped_private=wrapped_private, wrapped_package_key=row.wrapped_package_key,
                        master_label=row.master_label, mechanism=row.mechanism,
                        expires_at=datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc))
    wanted = digests("signed with an abandoned secret")
    signatures = service.package_keys.sign(to_open.handle_id, wanted, ECDSA, service.clock.now(), to_open,
                                           last=True)
    return verifies(row.public_key, signatures[0], wanted[0])


def holder_signs(service, holder, password: str) -> None:
    wanted = digests("the holder signs")
    signatures = authorize_and_sign(service, no_otp_application(service), holder.account.username,
                                    holder.credential.id, wanted, password)
    assert_signed_by(service.packages.public_key_der(holder.credential.key_id), signatures, wanted)


def change_password(service, name: str, old: str, new: str) -> None:
    service.accounts.change_password(name, Secret(old), Secret(new), Secret(new), None, False, f"holder:{name}")


def test_the_password_changed_away_from_opens_nothing_current_from_an_older_copy(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    name = holder.account.username
    copy = copy_of_secrets(service, name)
    old_seal = seal_key_from_copy(service, name, copy, PASSWORD, "password")
    assert signs_with(service, holder, old_seal)  # what the change takes away

    change_password(service, name, PASSWORD, NEW_PASSWORD)

    assert not signs_with(service, holder, old_seal)
    holder_signs(service, holder, NEW_PASSWORD)


def test_the_recovery_code_opens_the_packages_after_password_changes(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    name = holder.account.username
    change_password(service, name, PASSWORD, NEW_PASSWORD)
    change_password(service, name, NEW_PASSWORD, "Changed-again-2027")

    service.accounts.unlock_with_recovery_code(name, Secret(holder.recovery_code), Secret(UNLOCKED_PASSWORD),
                                               OPERATOR)
    holder_signs(service, holder, UNLOCKED_PASSWORD)


def test_a_replaced_recovery_code_opens_nothing_current_from_an_older_copy(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    name = holder.account.username
    old_seal = seal_key_from_copy(service, name, copy_of_secrets(service, name), holder.recovery_code, "recovery")

    new_code = service.accounts.replace_recovery_code(name, Secret(PASSWORD), None, False, f"holder:{name}")

    assert not signs_with(service, holder, old_seal)
    holder_signs(service, holder, PASSWORD)
    service.accounts.unlock_with_recovery_code(name, Secret(new_code), Secret(UNLOCKED_PASSWORD), OPERATOR)
    holder_signs(service, holder, UNLOCKED_PASSWORD)


def test_the_code_and_password_an_unlock_replaced_open_nothing_current_from_an_older_copy(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    name = holder.account.username
    copy = copy_of_secrets(service, name)
    by_code = seal_key_from_copy(service, name, copy, holder.recovery_code, "recovery")
    by_password = seal_key_from_copy(service, name, copy, PASSWORD, "password")

    new_code = service.accounts.unlock_with_recovery_code(name, Secret(holder.recovery_code),
                                                          Secret(UNLOCKED_PASSWORD), OPERATOR)

    assert not signs_with(service, holder, by_code)
    assert not signs_with(service, holder, by_password)
    holder_signs(service, holder, UNLOCKED_PASSWORD)
    change_password(service, name, UNLOCKED_PASSWORD, NEW_PASSWORD)
    service.accounts.unlock_with_recovery_code(name, Secret(new_code), Secret("Unlocked-again-8"), OPERATOR)
    holder_signs(service, holder, "Unlocked-again-8")


def give_the_code_its_earlier_form(service, holder) -> None:
    """The account's recovery code value as versions before codes had a public key made it: the
    seal key locked under the code's key itself."""
    name = holder.account.username
    copy = copy_of_secrets(service, name)
    seal = seal_key_from_copy(service, name, copy, holder.recovery_code, "recovery")
    key = SecretHasher(service.config.accounts).derive(copy.recovery_code_hash,
                                                       normalise_recovery_code(holder.recovery_code)).key
    earlier = holder_seal.lock(key, seal, f"seal key|recovery|{name}".encode())
    with service.database.transaction() as conn:
        conn.execute(update(accounts).where(accounts.c.username == name).values(seal_key_by_recovery=earlier))


def test_a_recovery_code_of_the_earlier_form_still_opens_the_packages(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    give_the_code_its_earlier_form(service, holder)
    service.accounts.unlock_with_recovery_code(holder.account.username, Secret(holder.recovery_code),
                                               Secret(UNLOCKED_PASSWORD), OPERATOR)
    holder_signs(service, holder, UNLOCKED_PASSWORD)


def test_a_password_change_drops_a_recovery_code_of_the_earlier_form_and_its_unlock_then_disables_the_packages(
        fresh_service):
    service = fresh_service
    holder = new_holder(service)
    name = holder.account.username
    give_the_code_its_earlier_form(service, holder)
    change_password(service, name, PASSWORD, NEW_PASSWORD)
    assert copy_of_secrets(service, name).seal_key_by_recovery is None
    holder_signs(service, holder, NEW_PASSWORD)

    service.accounts.unlock_with_recovery_code(name, Secret(holder.recovery_code), Secret(UNLOCKED_PASSWORD),
                                               OPERATOR)
    with service.database.read() as conn:
        status = conn.execute(select(credentials.c.status).where(credentials.c.id == holder.credential.id)).scalar()
    assert status == "disabled"
    with pytest.raises(CredentialUnusable):
        holder_signs(service, holder, UNLOCKED_PASSWORD)


@pytest.fixture
def ca_service(config, tmp_path, clock):
    return service_with_ca(config, tmp_path / "signserver.db", clock)


def test_an_issuance_whose_key_was_sealed_before_a_password_change_is_refused(ca_service):
    service = ca_service
    holder = new_holder(service)
    name = holder.account.username
    service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)  # the enrolment key's
    make = service.packages.make

    def made_then_changed(*args, **kwargs):
        del service.packages.make  # once
        package = make(*args, **kwargs)
        change_password(service, name, PASSWORD, NEW_PASSWORD)
        return package
    service.packages.make = made_then_changed

    with pytest.raises(CertificateRefused, match="seal key of .* changed"):
        service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    issued = service.ca.issue(CertificateRequest(CLOUD_SIGNATURE, name), OPERATOR)
    wanted = digests("made again")
    signatures = authorize_and_sign(service, no_otp_application(service), name, issued.credential_id, wanted,
                                    NEW_PASSWORD)
    assert_signed_by(issued.certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
                     signatures, wanted)
