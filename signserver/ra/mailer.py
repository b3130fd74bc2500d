"""Sends the RA's queued e-mail over SMTP; a message leaves the outbox only once the server took it,
so nothing is lost when the RA stops or the SMTP server is down (it is tried again later), except
one past its use (discard_after: a code that has expired), which is dropped unsent."""

from __future__ import annotations

import datetime
import logging
import smtplib
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

from signserver.clock import Clock
from signserver.ra import messages
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 20
MAX_RETRY_SECONDS = 3600


def retry_delay(attempts: int) -> datetime.timedelta:
    """10 s, 20 s, 40 s, ... up to an hour."""
    return datetime.timedelta(seconds=min(10 * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


class OutboxMailer:
    def __init__(self, database: RaDatabase, clock: Clock, *, host: str, port: int, sender: str,
                 service_name: str = ""):
        """``sender``: the From address; ``service_name``: the setting ra.service_name, the From
        name and the sign-off of every message ("" for the languages' default names)."""
        self._service_name = service_name
        self._database = database
        self._clock = clock
        self._host = host
        self._port = port
        self._sender = sender

    def send_due(self, limit: int = 50) -> int:
        """Drop what is past its use, send what is due; returns how many went out. Never raises for
        SMTP (it retries later)."""
        now = self._clock.now()
        with self._database.transaction() as conn:
            discarded = repository.discard_stale_emails(conn, now)
            due = repository.due_emails(conn, now, limit)
        if discarded:
            log.info("%d e-mail(s) dropped unsent: of no use any more (an expired code)", discarded)
        sent = 0
        for row in due:
            message = EmailMessage()
            message["From"] = formataddr((messages.sender_name(self._service_name), self._sender))
            message["To"] = row.recipient
            message["Subject"] = row.subject
            message["Date"] = formatdate(localtime=False)
            message["Message-ID"] = make_msgid(domain="ra.signserver")
            message.set_content(messages.signed_off(row.body, self._service_name))
            try:
                with smtplib.SMTP(self._host, self._port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
                    smtp.send_message(message)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("e-mail %d not sent (%s); trying again later", row.id, type(exc).__name__)
                with self._database.transaction() as conn:
                    repository.email_failed(conn, row.id, row.attempts + 1, now + retry_delay(row.attempts + 1))
                continue
            with self._database.transaction() as conn:
                repository.email_sent(conn, row.id)
            sent += 1
        return sent
