"""E-mail through the outbox to a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import errno
import socket
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from signserver.accounts import otp
from signserver.errors import AuthenticationFailed
from signserver.notify.outbox import queue_email
from signserver.secret import Secret
from signserver.store.schema import outbox
from tests.conftest import enrol, Inbox, PASSWORD, service_with
from tests.notify.conftest import serve


def change_password(service, created, seed, clock):
    service.accounts.change_password(created.account.username, Secret(PASSWORD), Secret("Changed-pass-1"),
                                     Secret("Changed-pass-1"), otp.code_at(seed, clock.now()), True, "test")


def test_password_change_and_lock_emails_arrive(mailing_service, smtp_server, clock):
    created, seed = enrol(mailing_service, emails=("one@example.mo", "two@example.mo"))
    change_password(mailing_service, created, seed, clock)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            mailing_service.accounts._authenticator.authenticate(created.account.username, Secret("Wrong-pass-1"),
                                                                 None, False, "test")
    assert mailing_service.lock_notices.queue_due() == 1  # the background round, ahead of the sender
    assert mailing_service.outbox.send_due() == 4
    received = [(m["To"], m["Subject"]) for m in smtp_server.messages]
    assert ("one@example.mo", "簽署服務密碼已更改 / Palavra-passe alterada / Password changed") in received
    assert ("two@example.mo", "簽署服務帳戶已鎖定 / Conta bloqueada / Account locked") in received
    body = smtp_server.messages[0].get_content()
    assert "Weng Sam LUZIA KUAN" in body and "palavra-passe" in body and "2026.11.21 10:26:06 +0800" in body
    assert mailing_service.outbox.send_due() == 0  # each message once


def test_smtp_down_commits_the_change_and_mails_later(mailing_service, smtp_socket, clock):
    created, seed = enrol(mailing_service)
    change_password(mailing_service, created, seed, clock)  # no SMTP server is listening
    assert mailing_service.outbox.send_due() == 0
    with mailing_service.database.transaction() as conn:
        row = conn.execute(select(outbox)).one()
    assert row.sent_at is None and row.attempts == 1 and row.last_error
    mailing_service.accounts._authenticator.authenticate(created.account.username, Secret("Changed-pass-1"),
                                                         None, False, "test")  # the change is committed

    inbox = Inbox()
    controller = serve(inbox, smtp_socket)  # on the port the service was given
    try:
        assert mailing_service.outbox.send_due() == 0  # not due yet: backing off
        clock.advance(seconds=10)
        assert mailing_service.outbox.send_due() == 1
    finally:
        controller.stop()
    assert [m["To"] for m in inbox.messages] == [f"{created.account.username}@example.mo"]


def test_two_nodes_sending_at_once_send_each_message_once(mailing_service, smtp_server, config, clock):
    # Two senders on one database, as two nodes: each message is claimed by one of them only.
    other_node = service_with(config, mailing_service.database.url, clock, smtp=mailing_service.config.smtp)
    recipients = [f"holder{n}@example.mo" for n in range(60)]
    with mailing_service.database.transaction() as conn:
        queue_email(conn, clock.now(), recipients, "account_unlocked", holder_name="Holder", username="holder",
                    time="now")
    start = threading.Barrier(2)

    def drain(service) -> None:
        start.wait()
        while service.outbox.send_due(limit=60):
            pass

    nodes = [threading.Thread(target=drain, args=(s,)) for s in (mailing_service, other_node)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join(120)
    assert Counter(m["To"] for m in smtp_server.messages) == Counter(recipients)


def test_the_smtp_port_is_held_from_the_moment_it_is_chosen(smtp_port):
    # Nobody else (another test process) can be given the port before the test's server listens on it.
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind(("127.0.0.1", smtp_port))
    assert refused.value.errno == errno.EADDRINUSE
    with pytest.raises(ConnectionRefusedError):  # and it refuses connections, as when no server runs
        socket.create_connection(("127.0.0.1", smtp_port), timeout=5).close()
