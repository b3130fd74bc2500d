"""No activation token outlives a disable, or a change of what the holder's factors are checked
against, that commits while Authorize runs; a token never spends for a disabled account; and
nothing is spent of no digest.

Authorize checks the factors against the account as read when the attempt is admitted, and issues
the token in a later transaction. The competing request runs from inside Authorize, at the point
under test: the HashSigner is built with a collaborator (its signing packages, or its audit log)
that runs the real change after doing its own work (nothing of the HSM, the database or the
network is replaced), so each interleaving is the same on every run. On both stores
(`make test-postgresql POSTGRESQL_TESTS=tests/signing/test_authorize_races.py`).
"""

from __future__ import annotations

import datetime
import json
import threading
from typing import Callable

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from signserver.accounts import otp
from signserver.accounts.authentication import Authenticator
from signserver.accounts.lockout import LockoutPolicy
from signserver.accounts.packages import SigningPackages
from signserver.accounts.passwords import SecretHasher
from signserver.audit.log import AuditLog
from signserver.clock import epoch_seconds
from signserver.errors import (
    AccountDisabled,
    ActivationRefused,
    AuthenticationBusy,
    AuthenticationFailed,
    InvalidArgument,
    PermissionDenied,
)
from signserver.hsm.algorithms import HashAlgorithm
from signserver.secret import Secret
from signserver.signing import activation, spend_call
from signserver.signing.hash_signer import HashSigner
from signserver.store.arrays import TextArray
from signserver.store.schema import accounts, activation_tokens, audit_log
from tests.conftest import ON_POSTGRESQL, PASSWORD, enrol
from tests.signing.holders import ECDSA, authorize, digests, new_holder, no_otp_application, sign

NEW_PASSWORD = "Another-pass-77"


def _changes(service, holder) -> dict:
    """Each request that revokes the account's activation tokens, by what it changes."""
    name = holder.account.username
    return {
        "disable": lambda: service.accounts.set_status(name, False, "operator:test"),
        "change_password": lambda: service.accounts.change_password(
            name, Secret(PASSWORD), Secret(NEW_PASSWORD), Secret(NEW_PASSWORD), None, False, "holder"),
        "unlock_with_recovery_code": lambda: service.accounts.unlock_with_recovery_code(
            name, Secret(holder.recovery_code), Secret(NEW_PASSWORD), "operator:test"),
        "reset_password": lambda: service.accounts.reset_password(name, Secret(NEW_PASSWORD), "operator:test"),
        "reset_otp": lambda: service.accounts.reset_otp(name, "operator:test"),
    }


class PackagesThatChangeOnOpen(SigningPackages):
    """The service's signing packages, but the first package opened (in Authorize: after the
    factors were checked, with the seal key they gave) is followed by ``change()``."""

    def __init__(self, service, change: Callable[[], None]):
        super().__init__(service.database, service.package_keys, service.master_keys, service.clock)
        self._change = change

    def open(self, *args):
        opened = super().open(*args)
        change, self._change = self._change, None
        if change is not None:
            change()
        return opened


class AuditThatRunsOnIssue(AuditLog):
    """An audit log that, once it has appended ``authorization.issued`` (in the transaction that
    issues the token), runs ``during_issue()`` before that transaction commits."""

    def __init__(self, during_issue: Callable[[], None]):
        self._during_issue = during_issue

    def append(self, conn, now, event, actor, subject, **detail) -> int:
        appended = super().append(conn, now, event, actor, subject, **detail)
        if event == "authorization.issued":
            self._during_issue()
        return appended


def signer_with(service, packages: SigningPackages | None = None, audit: AuditLog | None = None) -> HashSigner:
    """A HashSigner of the service's database, token and settings, with these collaborators."""
    config, audit = service.config, audit or service.audit
    authenticator = Authenticator(service.database, SecretHasher(config.accounts), LockoutPolicy(config.accounts),
                                  service.sealing, audit, service.clock)
    return HashSigner(service.database, service.keys, packages or service.packages, service.package_keys,
                      service.applications, service.credentials, authenticator, audit, service.clock,
                      datetime.timedelta(seconds=config.authorization.token_lifetime_seconds),
                      config.authorization.max_signatures)


def _after_the_factors(service, change: Callable[[], None]) -> HashSigner:
    """A HashSigner whose Authorize runs ``change()`` once, after the factors were checked and the
    holder's package opened with them, before the transaction that issues the token."""
    return signer_with(service, packages=PackagesThatChangeOnOpen(service, change))


def _authorize(signer: HashSigner, app, username: str, credential_id: str, wanted: list[bytes]):
    return signer.authorize(app, username, Secret(PASSWORD), None, credential_id, HashAlgorithm.SHA256, wanted)


def _tokens_of(service, account_id: int) -> list:
    with service.database.read() as conn:
        return conn.execute(select(activation_tokens.c.revoked)
                            .where(activation_tokens.c.account_id == account_id)).all()


def _records(service, username: str, event: str) -> list[dict]:
    with service.database.read() as conn:
        return [json.loads(detail) for detail in conn.execute(
            select(audit_log.c.detail).where(audit_log.c.subject == username, audit_log.c.event == event)).scalars()]


def test_an_account_disabled_while_authorize_checks_its_factors_gets_no_token(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    signer = _after_the_factors(service, _changes(service, holder)["disable"])

    with pytest.raises(AccountDisabled):  # as the factors' check answers a disabled account
        _authorize(signer, app, holder.account.username, holder.credential.id, digests("doc"))
    assert _tokens_of(service, holder.account.id) == []
    assert [r["reason"] for r in _records(service, holder.account.username, "authorization.refused")] == \
        ["AccountDisabled"]


@pytest.mark.parametrize("change", ["change_password", "unlock_with_recovery_code", "reset_password", "reset_otp"])
def test_a_change_of_what_the_factors_are_checked_against_during_authorize_issues_no_token(fresh_service, change):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    signer = _after_the_factors(service, _changes(service, holder)[change])

    with pytest.raises(AuthenticationBusy, match="try again"):
        _authorize(signer, app, holder.account.username, holder.credential.id, digests("doc"))
    assert _tokens_of(service, holder.account.id) == []
    assert [r["reason"] for r in _records(service, holder.account.username, "authorization.refused")] == \
        ["AuthenticationBusy"]
    if change != "reset_otp":
        # Tried again: the factors are checked against the account as it is now.
        with pytest.raises(AuthenticationFailed):
            authorize(service, app, holder.account.username, holder.credential.id, digests("doc"))


def test_after_a_password_change_during_authorize_the_new_password_signs(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    signer = _after_the_factors(service, _changes(service, holder)["change_password"])
    with pytest.raises(AuthenticationBusy):
        _authorize(signer, app, holder.account.username, holder.credential.id, digests("doc"))

    token = authorize(service, app, holder.account.username, holder.credential.id, digests("doc"), NEW_PASSWORD)
    assert len(sign(service, app, token.credential_id, token.token, digests("doc"))) == 1


def test_an_otp_reset_during_authorize_refuses_the_code_checked_against_the_old_seed(fresh_service, clock):
    service = fresh_service
    holder, seed = enrol(service)
    app, _ = service.applications.create("otp-app")  # an OTP is required
    signer = _after_the_factors(service, _changes(service, holder)["reset_otp"])

    with pytest.raises(AuthenticationBusy):
        signer.authorize(app, holder.account.username, Secret(PASSWORD), otp.code_at(seed, clock.now()),
                         holder.credential.id, HashAlgorithm.SHA256, digests("doc"))
    assert _tokens_of(service, holder.account.id) == []


def test_a_disable_that_comes_while_the_token_is_issued_waits_and_revokes_it(fresh_service):
    """Once the issuing transaction has read the account again, a disable waits for it to commit
    (PostgreSQL: the row's share lock; SQLite: one writer at a time), then revokes the new token."""
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    disable = threading.Thread(target=_changes(service, holder)["disable"])
    waited = []

    def disable_beside_the_issue() -> None:
        disable.start()
        disable.join(timeout=1.0)
        waited.append(disable.is_alive())  # still waiting for the issuing transaction
    signer = signer_with(service, audit=AuditThatRunsOnIssue(disable_beside_the_issue))

    token = _authorize(signer, app, holder.account.username, holder.credential.id, digests("doc"))
    disable.join(timeout=30)
    assert waited == [True] and not disable.is_alive()
    assert service.accounts.get(holder.account.username).status.value == "disabled"
    assert _tokens_of(service, holder.account.id) == [(True,)]
    with pytest.raises(ActivationRefused, match="revoked"):
        sign(service, app, token.credential_id, token.token, digests("doc"))


def _disable_without_revoking(service, account_id: int, status: str = "disabled") -> None:
    """The account's status alone, its tokens left as they are: as a token issued while a disable
    committed would have been, before Authorize read the account again."""
    with service.database.transaction() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(status=status))


def test_a_token_spends_nothing_while_its_account_is_disabled(fresh_service):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    wanted = digests("a", "b")
    token = authorize(service, app, holder.account.username, holder.credential.id, wanted)
    _disable_without_revoking(service, holder.account.id)

    with pytest.raises(ActivationRefused, match="account is disabled"):  # SignHash: PostgreSQL's function
        sign(service, app, token.credential_id, token.token, wanted[:1])
    with pytest.raises(ActivationRefused, match="account is disabled"):  # the documents' flows
        service.signer.spend(app, token.credential_id, Secret(token.token), HashAlgorithm.SHA256, wanted[1:])
    with pytest.raises(PermissionDenied):  # nor does it list the account's credentials
        service.credentials.credentials_shown_to(app, holder.account.username, Secret(token.token))

    _disable_without_revoking(service, holder.account.id, "active")  # nothing was spent meanwhile
    assert len(sign(service, app, token.credential_id, token.token, wanted)) == 2


def test_no_digest_or_a_digest_twice_spends_nothing(fresh_service, clock):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    wanted = digests("doc")
    token = authorize(service, app, holder.account.username, holder.credential.id, wanted)

    for token_given in ("not-a-token-at-all", token.token):
        with pytest.raises(InvalidArgument, match="at least one digest"):
            service.signer.spend(app, holder.credential.id, Secret(token_given), HashAlgorithm.SHA256, [])
    with pytest.raises(InvalidArgument, match="twice"):
        service.signer.spend(app, holder.credential.id, Secret(token.token), HashAlgorithm.SHA256, wanted * 2)
    with pytest.raises(InvalidArgument, match="at least one digest"):
        service.sign_pdfs_with_activation(app, holder.credential.id, Secret("not-a-token-at-all"), [])
    with pytest.raises(InvalidArgument), service.database.transaction() as conn:
        activation.consume(conn, token=token.token, credential_id=holder.credential.id, application_id=app.id,
                           algorithm=HashAlgorithm.SHA256, digests=[], now=clock.now())
    assert len(sign(service, app, token.credential_id, token.token, wanted)) == 1  # still whole


@pytest.mark.skipif(not ON_POSTGRESQL, reason="PostgreSQL's spend_activation_token (SIGNSERVER_TEST_STORE)")
def test_postgresqls_spend_function_takes_no_empty_list_of_digests(fresh_service, clock):
    service = fresh_service
    holder = new_holder(service)
    app = no_otp_application(service)
    token = authorize(service, app, holder.account.username, holder.credential.id, digests("doc"))
    now = epoch_seconds(clock.now())
    with service.database.statements() as conn, pytest.raises(DBAPIError) as refused:
        spend_call._SPEND.execute(conn, {
            "token_hash": activation.token_hash(token.token), "credential_id": holder.credential.id,
            "certificate_serial": None, "application_id": app.id, "hash_algorithm": "sha256", "now": now,
            "digests": TextArray([]), "key_id": holder.credential.key_id, "open_key": False, "count_down": False,
            "at": now, "event": "signature", "actor": "test", "subject": holder.account.username,
            "details": TextArray([]), "tails": TextArray([])})
    assert refused.value.orig.sqlstate == spend_call.NOT_TAKEN
    assert len(sign(service, app, token.credential_id, token.token, digests("doc"))) == 1
