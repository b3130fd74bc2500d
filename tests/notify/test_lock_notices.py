"""The "account locked" e-mail, queued by the background work from the notice the locking failure
writes alike for every name, to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from signserver.errors import AuthenticationFailed
from signserver.grpc_api.server import BackgroundWork
from signserver.secret import Secret
from signserver.store.schema import lock_notices, outbox
from tests.conftest import enrol, service_with

LOCKED = "簽署服務帳戶已鎖定 / Conta bloqueada / Account locked"


def lock(service, username: str) -> None:
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            service.accounts._authenticator.authenticate(username, Secret("Wrong-pass-1"), None, False, "test")


def count(service, table) -> int:
    with service.database.transaction() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_the_locked_email_arrives_once_and_none_for_an_unknown_name(mailing_service, smtp_server, clock):
    created, _ = enrol(mailing_service, emails=("one@example.mo", "two@example.mo"))
    lock(mailing_service, created.account.username)
    lock(mailing_service, "nobody-has-this-name")
    assert count(mailing_service, lock_notices) == 2 and count(mailing_service, outbox) == 0

    assert mailing_service.lock_notices.queue_due() == 1  # the unknown name's notice is dropped
    assert mailing_service.lock_notices.queue_due() == 0  # each notice once
    assert count(mailing_service, lock_notices) == 0
    assert mailing_service.outbox.send_due() == 2
    assert sorted((m["To"], m["Subject"]) for m in smtp_server.messages) == [
        ("one@example.mo", LOCKED), ("two@example.mo", LOCKED)]
    body = smtp_server.messages[0].get_content()
    assert created.account.username in body and "2026.11.21 10:56:06 +0800" in body  # the lock's end
    assert mailing_service.outbox.send_due() == 0


def test_a_notice_outlives_the_process_that_wrote_it(mailing_service, smtp_server, config, clock):
    created, _ = enrol(mailing_service, emails=("one@example.mo",))
    lock(mailing_service, created.account.username)
    # Another process on the same database, as after a crash before any background round.
    restarted = service_with(config, mailing_service.database.url, clock, smtp=mailing_service.config.smtp)
    assert restarted.lock_notices.queue_due() == 1
    assert restarted.outbox.send_due() == 1
    assert [(m["To"], m["Subject"]) for m in smtp_server.messages] == [("one@example.mo", LOCKED)]


def test_the_server_background_round_sends_the_locked_email(mailing_service, smtp_server, clock):
    created, _ = enrol(mailing_service, emails=("one@example.mo",))
    lock(mailing_service, created.account.username)
    lock(mailing_service, "nobody-has-this-name")
    work = BackgroundWork(mailing_service, poll_seconds=0.05)
    work.start()
    try:
        deadline = time.monotonic() + 60
        while not smtp_server.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        work.stop()
    assert [(m["To"], m["Subject"]) for m in smtp_server.messages] == [("one@example.mo", LOCKED)]
    assert count(mailing_service, lock_notices) == 0


UNLOCKED = "簽署服務帳戶已解鎖 / Conta desbloqueada / Account unlocked"
RESET = "簽署服務密碼已重設 / Palavra-passe redefinida / Password reset"


@pytest.mark.parametrize("lifted_by", ["recovery code", "password reset"])
def test_a_lock_lifted_before_the_background_round_tells_of_the_lock_first(mailing_service, smtp_server, lifted_by):
    """The locked e-mail is queued by the background work, the unlocked one at the unlock: an
    unlock in between (an operator at the counter at once) used to reach the holder first."""
    created, _ = enrol(mailing_service, emails=("one@example.mo",))
    username = created.account.username
    lock(mailing_service, username)
    if lifted_by == "recovery code":
        mailing_service.accounts.unlock_with_recovery_code(username, Secret(created.recovery_code),
                                                           Secret("Unlocked-pass-2"), "operator:test")
    else:
        mailing_service.accounts.reset_password(username, Secret("Unlocked-pass-2"), "operator:test")

    assert count(mailing_service, lock_notices) == 0 and mailing_service.lock_notices.queue_due() == 0  # told once
    assert mailing_service.outbox.send_due() == 2
    assert [m["Subject"] for m in smtp_server.messages] == [LOCKED, UNLOCKED if lifted_by == "recovery code" else RESET]
