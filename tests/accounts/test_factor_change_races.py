"""A holder's own change of password or recovery code is written only over the account as its
factors were checked: a disable, or a change of what the factors are checked against, that commits
while the holder's request runs wins, and the request changes nothing.

The competing request runs from inside the holder's: the AccountManager is built with a password
hasher that runs the real change once it has hashed the new secret (after the factors were checked,
before the transaction that writes), so each interleaving is the same on every run. On both stores
(`make test-postgresql POSTGRESQL_TESTS=tests/accounts/test_factor_change_races.py`).
"""

from __future__ import annotations

from typing import Callable

import pytest
from sqlalchemy import select

from signserver.accounts import otp
from signserver.accounts.authentication import Authenticator
from signserver.accounts.lockout import LockoutPolicy
from signserver.accounts.manager import AccountManager
from signserver.accounts.passwords import SecretHasher
from signserver.errors import AccountDisabled, AuthenticationBusy
from signserver.secret import Secret
from signserver.store.schema import accounts
from tests.conftest import PASSWORD, enrol

NEW_PASSWORD = "Another-pass-77"
RESET_PASSWORD = "Operator-set-88"


class HasherThatChangesAfterHashing(SecretHasher):
    """A SecretHasher that runs ``change()`` once, after the first secret it hashes with a key."""

    def __init__(self, config, change: Callable[[], None]):
        super().__init__(config)
        self._change = change

    def hash_with_key(self, secret: str) -> tuple[str, bytes]:
        hashed = super().hash_with_key(secret)
        change, self._change = self._change, None
        if change is not None:
            change()
        return hashed


def manager_with(service, change: Callable[[], None]) -> AccountManager:
    """An AccountManager of the service's database, token and settings whose first hash of a new
    secret is followed by ``change()``."""
    config = service.config.accounts
    authenticator = Authenticator(service.database, SecretHasher(config), LockoutPolicy(config), service.sealing,
                                  service.audit, service.clock)
    return AccountManager(service.database, service.packages, service.sealing,
                          HasherThatChangesAfterHashing(config, change), LockoutPolicy(config), authenticator,
                          service.audit, service.clock)


def _changes(service, username: str) -> dict[str, Callable[[], None]]:
    return {
        "disable": lambda: service.accounts.set_status(username, False, "operator:test"),
        "reset_password": lambda: service.accounts.reset_password(username, Secret(RESET_PASSWORD), "operator:test"),
        "reset_otp": lambda: service.accounts.reset_otp(username, "operator:test"),
    }


def _holders_request(manager: AccountManager, what: str, username: str, code: str):
    if what == "change_password":
        return manager.change_password(username, Secret(PASSWORD), Secret(NEW_PASSWORD), Secret(NEW_PASSWORD),
                                       code, True, "holder")
    return manager.replace_recovery_code(username, Secret(PASSWORD), code, True, "holder")


def _written(service, username: str) -> tuple:
    """What a holder's change of password or recovery code writes to the account's row."""
    with service.database.read() as conn:
        return tuple(conn.execute(select(accounts.c.password_hash, accounts.c.password_changed_at,
                                         accounts.c.seal_key_by_password, accounts.c.recovery_code_hash,
                                         accounts.c.seal_key_by_recovery)
                                  .where(accounts.c.username == username)).one())


@pytest.mark.parametrize("what", ["change_password", "replace_recovery_code"])
@pytest.mark.parametrize("change, refusal", [("disable", AccountDisabled), ("reset_password", AuthenticationBusy),
                                             ("reset_otp", AuthenticationBusy)])
def test_a_change_that_commits_during_the_holders_request_wins(fresh_service, clock, what, change, refusal):
    service = fresh_service
    created, seed = enrol(service)
    username = created.account.username
    after_the_change = []

    def competing_change() -> None:
        _changes(service, username)[change]()
        after_the_change.append(_written(service, username))

    with pytest.raises(refusal):
        _holders_request(manager_with(service, competing_change), what, username, otp.code_at(seed, clock.now()))
    assert after_the_change and _written(service, username) == after_the_change[0]  # nothing written over it


def test_without_a_competing_change_the_holders_request_writes(fresh_service, clock):
    """The same path with a change that changes nothing: the password is changed."""
    service = fresh_service
    created, seed = enrol(service)
    username = created.account.username
    before = _written(service, username)
    _holders_request(manager_with(service, lambda: None), "change_password", username, otp.code_at(seed, clock.now()))
    assert _written(service, username)[0] != before[0]
