"""The outbox's sender against real SMTP servers on loopback: what it does when the server refuses
a message, never answers, answers slowly, or takes a message whose sending was never recorded (a
crash, or the database refusing the record)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from sqlalchemy import select, update

from signserver.notify.outbox import queue_email
from signserver.errors import StoreRefused
from signserver.notify.sender import CLAIM_SECONDS, GIVE_UP_SECONDS, SEND_SECONDS, retry_delay
from signserver.store.leases import DEFAULT_LEASE_SECONDS
from signserver.store.schema import outbox
from tests.conftest import Inbox
from tests.notify.test_lock_notices import LOCKED, UNLOCKED
from tests.notify.conftest import serve
from tests.refused_writes import writes_refused


class Mailbox(Inbox):
    """Keeps each message with its envelope's recipients; refuses the addresses in ``refused``
    (550, for good) and puts off those in ``busy`` (450, try later); takes ``data_seconds`` over
    each message."""

    def __init__(self, refused: tuple[str, ...] = (), data_seconds: float = 0):
        super().__init__()
        self.refused = refused
        self.busy: set[str] = set()
        self.data_seconds = data_seconds
        self.envelopes: list[list[str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        if address in self.busy:
            return "450 4.2.1 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.data_seconds)
        self.envelopes.append(list(envelope.rcpt_tos))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def mailbox(request, smtp_socket):
    box = Mailbox(**getattr(request, "param", {}))
    controller = serve(box, smtp_socket)
    yield box
    controller.stop()


def queue(service, clock, *recipients: str) -> None:
    with service.database.transaction() as conn:
        queue_email(conn, clock.now(), recipients, "account_unlocked", holder_name="陳大文", username="chan.tai.man",
                    time="2026.11.21 10:26:06 +0800")


def rows(service) -> dict:
    with service.database.read() as conn:
        return {r.recipient: r for r in conn.execute(select(outbox).order_by(outbox.c.id))}


@pytest.mark.parametrize("mailbox", [{"refused": ("gone@example.mo",)}], indirect=True)
def test_a_refused_recipient_holds_back_no_other_message(mailing_service, mailbox, clock, caplog):
    queue(mailing_service, clock, "gone@example.mo", "one@example.mo", "two@example.mo")
    with caplog.at_level(logging.ERROR, logger="signserver.notify.sender"):
        assert mailing_service.outbox.send_due() == 2
    assert sorted(m["To"] for m in mailbox.messages) == ["one@example.mo", "two@example.mo"]
    gone = rows(mailing_service)["gone@example.mo"]
    # A mailbox the server says does not exist (5xx) is not tried again; the log says so.
    assert gone.sent_at is None and gone.attempts == 1 and "gave up" in gone.last_error
    assert any("gave up" in r.getMessage() for r in caplog.records)
    clock.advance(days=1)
    assert mailing_service.outbox.send_due() == 0 and rows(mailing_service)["gone@example.mo"].attempts == 1


def test_a_message_is_given_up_after_its_bound_saying_so(mailing_service, clock, caplog):
    queue(mailing_service, clock, "one@example.mo")  # no SMTP server listens
    with caplog.at_level(logging.WARNING, logger="signserver.notify.sender"):
        for _ in range(200):
            mailing_service.outbox.send_due()
            clock.advance(hours=1)
    row = rows(mailing_service)["one@example.mo"]
    assert row.sent_at is None and row.last_error.startswith("gave up")
    # Tried with backoff for GIVE_UP_SECONDS, then left: not one try a day later.
    tried = row.attempts
    assert 10 < tried < 10 + GIVE_UP_SECONDS // 3600
    clock.advance(days=1)
    mailing_service.outbox.send_due()
    assert rows(mailing_service)["one@example.mo"].attempts == tried
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "gave up" in errors[0].getMessage()


def test_a_message_sent_again_after_a_crash_is_the_same_message(mailing_service, mailbox, clock):
    queue(mailing_service, clock, "one@example.mo")
    assert mailing_service.outbox.send_due() == 1
    # A process that died once the server had taken the message, before it recorded the sending,
    # left it claimed and unsent; another sends it once the claim has run out.
    with mailing_service.database.transaction() as conn:
        conn.execute(update(outbox).values(sent_at=None, claimed_until=rows(mailing_service)["one@example.mo"].sent_at
                                           + 120))
    clock.advance(seconds=121)
    assert mailing_service.outbox.send_due() == 1
    first, again = mailbox.messages
    # Mail systems recognise the copy by its Message-ID.
    assert first["Message-ID"] == again["Message-ID"] and first["Date"] == again["Date"]
    assert first["Message-ID"].endswith("@example.mo>")


def test_a_sending_the_database_fails_to_record_ends_the_round_and_is_not_sent_again(mailing_service, mailbox,
                                                                                    clock, caplog):
    """The server took the second message; the database refused to record it. The round ends
    there: the third, never tried, is due again with no attempt counted. The second is recorded
    before anything else is claimed, not sent again after its claim has run out; while the database
    still refuses, nothing more is sent."""
    queue(mailing_service, clock, "one@example.mo", "two@example.mo", "three@example.mo")
    with writes_refused(mailing_service.database, "UPDATE", "outbox",
                        "NEW.sent_at IS NOT NULL AND NEW.recipient = 'two@example.mo'"):
        with caplog.at_level(logging.WARNING, logger="signserver"), pytest.raises(StoreRefused):
            mailing_service.outbox.send_due()
        assert [m["To"] for m in mailbox.messages] == ["one@example.mo", "two@example.mo"]
        left = rows(mailing_service)
        assert left["one@example.mo"].sent_at is not None and left["two@example.mo"].sent_at is None
        third = left["three@example.mo"]
        assert (third.attempts, third.claimed_until, third.last_error) == (0, None, None)
        assert any("e-mail" in r.getMessage() and "not recorded" in r.getMessage() for r in caplog.records)
        clock.advance(seconds=CLAIM_SECONDS + 1)
        with pytest.raises(StoreRefused):
            mailing_service.outbox.send_due()
        assert len(mailbox.messages) == 2 and rows(mailing_service)["three@example.mo"].attempts == 0
    clock.advance(seconds=CLAIM_SECONDS + 1)
    assert mailing_service.outbox.send_due() == 1
    assert [m["To"] for m in mailbox.messages] == ["one@example.mo", "two@example.mo", "three@example.mo"]
    assert all(r.sent_at is not None and r.attempts == 0 for r in rows(mailing_service).values())


def test_a_server_that_never_answers_holds_the_sender_less_than_the_background_lease(mailing_service, smtp_socket,
                                                                                     clock):
    smtp_socket.listen()  # connections are taken, nothing is said
    queue(mailing_service, clock, "one@example.mo", "two@example.mo")
    started = time.monotonic()
    assert mailing_service.outbox.send_due() == 0
    assert time.monotonic() - started < DEFAULT_LEASE_SECONDS - 2
    assert [(r.attempts, r.sent_at) for r in rows(mailing_service).values()] == [(1, None), (1, None)]


@pytest.mark.parametrize("mailbox", [{"data_seconds": 2}], indirect=True)
def test_a_slow_server_gets_what_fits_in_a_round_and_the_rest_later(mailing_service, mailbox, clock):
    recipients = [f"holder{n}@example.mo" for n in range(12)]
    queue(mailing_service, clock, *recipients)
    started = time.monotonic()
    sent = mailing_service.outbox.send_due()
    assert time.monotonic() - started < SEND_SECONDS + 2 < DEFAULT_LEASE_SECONDS
    assert 1 <= sent < len(recipients)
    left = [r for r in rows(mailing_service).values() if r.sent_at is None]
    # Those the round never reached are due again at once, with no attempt counted.
    assert sum(r.attempts == 0 and r.claimed_until is None for r in left) >= len(left) - 1


@pytest.mark.parametrize("address", ["x@evil.example,victim", "Victim<x@evil.example>"])
def test_an_address_that_is_not_one_mailbox_is_given_up(mailing_service, mailbox, clock, address):
    queue(mailing_service, clock, address, "one@example.mo")
    assert mailing_service.outbox.send_due() == 1
    assert mailbox.envelopes == [["one@example.mo"]]
    row = rows(mailing_service)[address]
    assert row.sent_at is None and "gave up" in row.last_error


def test_an_internationalised_address_reaches_a_server_without_smtputf8(mailing_service, smtp_socket, clock):
    """A domain that is not ASCII goes in its ASCII form (IDNA, RFC 5890), which every server takes;
    a mailbox name that is not ASCII needs SMTPUTF8 (RFC 6531): to a server without it, the message
    is given up at once rather than tried again for two days."""
    box = Mailbox()
    controller = serve(box, smtp_socket, enable_SMTPUTF8=False)
    try:
        queue(mailing_service, clock, "kuan@bücher.mo", "關@example.mo", "one@example.mo")
        assert mailing_service.outbox.send_due() == 2
    finally:
        controller.stop()
    assert sorted(address for envelope in box.envelopes for address in envelope) == [
        "kuan@xn--bcher-kva.mo", "one@example.mo"]
    assert "kuan@xn--bcher-kva.mo" in [m["To"] for m in box.messages]
    kept = rows(mailing_service)
    assert kept["kuan@bücher.mo"].sent_at is not None and kept["one@example.mo"].sent_at is not None
    assert kept["關@example.mo"].sent_at is None and kept["關@example.mo"].given_up_at is not None


def test_a_message_put_off_holds_back_the_later_ones_to_its_address_alone(mailing_service, mailbox, clock):
    """A holder reads a lock's e-mail before its unlock's: a message the server put off (4xx) is
    tried again after a while, and the later messages to the same address wait for it. Messages
    to other addresses do not."""
    def queue_notice(template: str, *recipients: str) -> None:
        with mailing_service.database.transaction() as conn:
            queue_email(conn, clock.now(), recipients, template, holder_name="陳大文", username="chan.tai.man",
                        time="2026.11.21 10:26:06 +0800", until="2026.11.21 10:56:06 +0800")

    mailbox.busy = {"one@example.mo"}
    queue_notice("account_locked", "one@example.mo")
    assert mailing_service.outbox.send_due() == 0  # put off
    mailbox.busy = set()
    queue_notice("account_unlocked", "one@example.mo", "two@example.mo")
    assert mailing_service.outbox.send_due() == 1
    assert [(m["To"], m["Subject"]) for m in mailbox.messages] == [("two@example.mo", UNLOCKED)]
    assert mailing_service.outbox.send_due() == 0  # the lock's e-mail waits out its retry delay, the unlock's behind it

    clock.advance(seconds=retry_delay(1))
    while mailing_service.outbox.send_due():
        pass
    assert [(m["To"], m["Subject"]) for m in mailbox.messages[1:]] == [("one@example.mo", LOCKED),
                                                                     ("one@example.mo", UNLOCKED)]


def test_the_messages_behind_one_refused_in_a_round_wait_for_it_uncounted(mailing_service, mailbox, clock):
    mailbox.busy = {"one@example.mo"}
    for template in ("account_locked", "account_unlocked"):
        with mailing_service.database.transaction() as conn:
            queue_email(conn, clock.now(), ("one@example.mo",), template, holder_name="陳大文",
                        username="chan.tai.man", time="2026.11.21 10:26:06 +0800", until="2026.11.21 10:56:06 +0800")
    assert mailing_service.outbox.send_due() == 0
    with mailing_service.database.read() as conn:
        attempts = [row.attempts for row in conn.execute(select(outbox).order_by(outbox.c.id))]
    assert attempts == [1, 0]  # the second was not tried: it would have gone first had the server taken it

    mailbox.busy = set()
    clock.advance(seconds=retry_delay(1))
    assert mailing_service.outbox.send_due() == 2
    assert [m["Subject"] for m in mailbox.messages] == [LOCKED, UNLOCKED]
