"""Enrolment, password change, recovery, OTP reset and revocation phrases."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from signserver.accounts import otp
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind, AccountStatus
from signserver.accounts.passwords import PasswordRejected
from signserver.errors import AlreadyExists, AuthenticationFailed, InvalidArgument
from signserver.secret import Secret
from signserver.store.schema import outbox
from tests.conftest import PASSWORD, enrol


def outbox_subjects(service):
    with service.database.transaction() as conn:
        return [(r.recipient, r.subject) for r in conn.execute(outbox.select())]


def test_enrolment_makes_a_signing_data_package_and_no_token_object(fresh_service):
    keys_before = {k.key_id for k in fresh_service.keys.list()}
    created, seed = enrol(fresh_service, organisation="DSAJ", kind=AccountKind.GOVERNMENT, title="Técnico")
    assert {k.key_id for k in fresh_service.keys.list()} == keys_before
    assert created.credential.is_package
    assert load_der_public_key(fresh_service.packages.public_key_der(created.credential.key_id))
    assert created.account.kind is AccountKind.GOVERNMENT and created.account.title == "Técnico"
    assert created.otp_uri.startswith("otpauth://totp/signserver:") and len(seed) == 32
    assert len(created.recovery_code) == 29  # five groups of five, dashes between


@pytest.mark.parametrize("field,value,message", [
    ("username", "x", "account name"),
    ("username", "bad name", "account name"),
    ("holder_name", "", "holder's name is required"),
    ("holder_name", "a\nb", "control characters"),
    ("emails", (), "at least one e-mail"),
    ("emails", ("not-an-address",), "not an e-mail address"),
    ("kind", AccountKind.CORPORATE, "needs its organisation"),
])
def test_enrolment_refuses_bad_fields(fresh_service, field, value, message):
    values = dict(username="valid-user", holder_name="Chan Tai Man", emails=("c@example.mo",))
    values[field] = value
    with pytest.raises(InvalidArgument, match=message):
        fresh_service.accounts.create(Enrolment(**values), Secret(PASSWORD), operator="test")
    assert fresh_service.accounts.list() == []


@pytest.mark.parametrize("password,rule", [
    ("short1!", "at least 8"),
    ("onlyletters", "not a letter"),
    ("12345678", "one letter"),
    ("password1", "most common"),
    ("xxvalid-userxx1", "account name"),
])
def test_password_rules(fresh_service, password, rule):
    with pytest.raises(PasswordRejected, match=rule):
        fresh_service.accounts.create(Enrolment("valid-user", "Chan Tai Man", ("c@example.mo",)),
                                      Secret(password), operator="test")


def test_duplicate_username_leaves_no_key_behind(fresh_service):
    created, _ = enrol(fresh_service)
    keys_before = len(fresh_service.keys.list())
    with pytest.raises(AlreadyExists):
        enrol(fresh_service, created.account.username)
    assert len(fresh_service.keys.list()) == keys_before


def test_change_password(fresh_service, clock):
    created, seed = enrol(fresh_service)
    name = created.account.username
    fresh_service.accounts.change_password(name, Secret(PASSWORD), Secret("New-pass-2026"), Secret("New-pass-2026"),
                                           otp.code_at(seed, clock.now()), True, "test")
    authenticate = fresh_service.accounts._authenticator.authenticate
    with pytest.raises(AuthenticationFailed):
        authenticate(name, Secret(PASSWORD), None, False, "test")
    authenticate(name, Secret("New-pass-2026"), None, False, "test")
    assert (f"{name}@example.mo", "簽署服務密碼已更改 / Palavra-passe alterada / Password changed") in \
        outbox_subjects(fresh_service)


def test_change_password_checks(fresh_service):
    created, _ = enrol(fresh_service)
    name = created.account.username
    change = fresh_service.accounts.change_password
    with pytest.raises(InvalidArgument, match="confirmation differ"):
        change(name, Secret(PASSWORD), Secret("New-pass-2026"), Secret("New-pass-2027"), None, False, "t")
    with pytest.raises(PasswordRejected, match="differ from the current"):
        change(name, Secret(PASSWORD), Secret(PASSWORD), Secret(PASSWORD), None, False, "t")
    for _ in range(5):  # a wrong current password counts toward the lockout
        with pytest.raises(AuthenticationFailed):
            change(name, Secret("Not-the-pass-1"), Secret("New-pass-2026"), Secret("New-pass-2026"), None, False, "t")
    assert fresh_service.accounts.get(name).status is AccountStatus.LOCKED


def test_recovery_code_unlocks_once_and_a_new_one_is_issued(fresh_service):
    created, _ = enrol(fresh_service)
    name = created.account.username
    authenticate = fresh_service.accounts._authenticator.authenticate
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            authenticate(name, Secret("Wrong-pass-1"), None, False, "t")
    unlock = fresh_service.accounts.unlock_with_recovery_code
    with pytest.raises(AuthenticationFailed, match="recovery code is not right"):
        unlock(name, Secret("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"), Secret("Fresh-pass-99"), "operator")
    assert fresh_service.accounts.get(name).status is AccountStatus.LOCKED

    new_code = unlock(name, Secret(created.recovery_code.lower()), Secret("Fresh-pass-99"), "operator")
    assert new_code != created.recovery_code
    assert fresh_service.accounts.get(name).status is AccountStatus.ACTIVE
    authenticate(name, Secret("Fresh-pass-99"), None, False, "t")
    with pytest.raises(AuthenticationFailed):  # single use
        unlock(name, Secret(created.recovery_code), Secret("Other-pass-99"), "operator")
    unlock(name, Secret(new_code), Secret("Other-pass-99"), "operator")


def test_reset_otp_replaces_the_seed(fresh_service, clock):
    created, old_seed = enrol(fresh_service)
    name = created.account.username
    uri = fresh_service.accounts.reset_otp(name, "operator")
    new_seed = uri.split("secret=")[1].split("&")[0]
    authenticate = fresh_service.accounts._authenticator.authenticate
    with pytest.raises(AuthenticationFailed):
        authenticate(name, Secret(PASSWORD), otp.code_at(old_seed, clock.now()), True, "t")
    authenticate(name, Secret(PASSWORD), otp.code_at(new_seed, clock.now()), True, "t")


def test_revocation_phrase(fresh_service):
    created, _ = enrol(fresh_service, revocation_phrase=Secret("RevokeMe2026"))
    name = created.account.username
    assert fresh_service.accounts.check_revocation_phrase(name, Secret("RevokeMe2026"))
    assert not fresh_service.accounts.check_revocation_phrase(name, Secret("RevokeMe2027"))
    for bad in ("short1", "has spaces 123", "x" * 65, "símbolo123"):
        with pytest.raises(InvalidArgument, match="revocation phrase"):
            enrol(fresh_service, revocation_phrase=Secret(bad))


def test_account_key_is_deleted_with_a_failed_enrolment(fresh_service, monkeypatch):
    """A database failure after key generation removes the key again."""
    from signserver.accounts import manager as manager_module
    from signserver.errors import StoreUnavailable

    def broken(*args, **kwargs):
        raise StoreUnavailable("database gone")

    monkeypatch.setattr(manager_module, "insert_credential", broken)
    fresh_service.packages.ensure_master()
    keys_before = {k.key_id for k in fresh_service.keys.list()}
    with pytest.raises(StoreUnavailable):
        enrol(fresh_service)
    assert {k.key_id for k in fresh_service.keys.list()} == keys_before
    assert fresh_service.accounts.list() == []
