"""The e-mail an operator's password reset sends says what happened: the password was reset and
the keys sealed to the old one can no longer sign (not "unlocked with its recovery code", which the
holder did not give)."""

from __future__ import annotations

from sqlalchemy import select

from signserver.secret import Secret
from signserver.store.schema import outbox
from tests.conftest import enrol


def subjects(service, recipients) -> list[str]:
    with service.database.read() as conn:
        return list(conn.execute(select(outbox.c.subject).where(outbox.c.recipient.in_(recipients))).scalars())


def test_a_password_reset_sends_the_password_reset_mail(fresh_service):
    created, _ = enrol(fresh_service)
    fresh_service.accounts.reset_password(created.account.username, Secret("Reset-at-desk-2026"), "operator:test")
    [subject] = subjects(fresh_service, created.account.emails)
    assert "Password reset" in subject and "unlocked" not in subject.lower()


def test_an_unlock_with_the_recovery_code_still_sends_the_unlock_mail(fresh_service):
    created, _ = enrol(fresh_service)
    fresh_service.accounts.unlock_with_recovery_code(created.account.username, Secret(created.recovery_code),
                                                     Secret("Unlocked-at-desk-2026"), "operator:test")
    [subject] = subjects(fresh_service, created.account.emails)
    assert "unlocked" in subject.lower()


def test_an_address_that_is_more_than_one_mailbox_is_refused_at_enrolment(fresh_service):
    """A list or a display name would make the mail server deliver the holder's e-mail elsewhere."""
    import pytest

    from signserver.errors import InvalidArgument

    for address in ("x@evil.example,victim@example.mo", "Victim <x@evil.example>", "x@evil.example;y@example.mo",
                    '"x@evil.example"@example.mo'):
        with pytest.raises(InvalidArgument, match="is not an e-mail address"):
            enrol(fresh_service, emails=(address,))
    created, _ = enrol(fresh_service, emails=("chan.tai.man+sign@example.mo", "名@澳門.中國"))
    assert created.account.emails == ("chan.tai.man+sign@example.mo", "名@澳門.中國")
