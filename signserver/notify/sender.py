"""OutboxSender: delivers queued e-mail over SMTP, retrying with backoff; never loses a message.

Several server processes may run a sender: each claims a message for a while before sending, so
a message goes out once even then (at least once if a process dies mid-send).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy import func, or_, select, update

from signserver.clock import Clock, epoch_seconds
from signserver.config import SmtpConfig
from signserver.monitoring.meter import meter
from signserver.store.database import Database
from signserver.store.schema import outbox

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120
FIRST_RETRY_SECONDS = 10
MAX_RETRY_SECONDS = 3600
SMTP_TIMEOUT_SECONDS = 20
BACKLOG_REPORT_SECONDS = 10  # counting the unsent is a scan of the outbox: not every poll


def retry_delay(attempts: int) -> int:
    """10 s, 20 s, 40 s, ... up to an hour."""
    return min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)


class OutboxSender:
    def __init__(self, database: Database, smtp: SmtpConfig, clock: Clock):
        self._database = database
        self._smtp = smtp
        self._clock = clock
        self._backlog_reported = -BACKLOG_REPORT_SECONDS  # time.monotonic() of the last report

    def send_due(self, limit: int = 50) -> int:
        """Send the messages that are due; return how many went out. Never raises for SMTP."""
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            if time.monotonic() - self._backlog_reported >= BACKLOG_REPORT_SECONDS:
                self._backlog_reported = time.monotonic()
                meter().outbox_backlog(conn.execute(select(func.count()).select_from(outbox)
                                                    .where(outbox.c.sent_at.is_(None))).scalar_one())
            is_due = (outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now,
                      or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now))
            due = conn.execute(select(outbox).where(*is_due).order_by(outbox.c.id).limit(limit)).all()
            claimed = []
            for row in due:
                # Still due when claimed: on PostgreSQL another node may have sent the message, or
                # put it off, since it was read (the update waits for that node's commit and
                # checks the row as that node left it).
                taken = conn.execute(update(outbox).where(outbox.c.id == row.id, *is_due)
                                     .values(claimed_until=now + CLAIM_SECONDS)).rowcount
                if taken:
                    claimed.append(row)
        if not claimed:
            return 0
        sent = 0
        try:
            with self._connect() as client:
                for row in claimed:
                    client.send_message(self._message(row))
                    self._mark_sent(row.id)
                    sent += 1
        except (OSError, smtplib.SMTPException) as exc:
            for row in claimed[sent:]:
                self._mark_failed(row, exc)
        return sent

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Send until ``stop`` is set (the server's background thread)."""
        while not stop.is_set():
            try:
                self.send_due()
            except Exception:  # the sender must outlive a database hiccup
                log.exception("outbox sender failed; trying again")
            stop.wait(poll_seconds)

    def _connect(self) -> smtplib.SMTP:
        smtp = self._smtp
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT_SECONDS)
            if smtp.security == "starttls":
                client.starttls(context=ssl.create_default_context())
        password = smtp.password()
        if smtp.username and password:
            client.login(smtp.username, password.reveal())
        return client

    def _message(self, row) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._smtp.sender
        message["To"] = row.recipient
        message["Subject"] = row.subject
        message["Date"] = formatdate(row.created_at, localtime=False)
        message["Message-ID"] = make_msgid(idstring=f"outbox-{row.id}")
        message.set_content(row.body)
        return message

    def _mark_sent(self, message_id: int) -> None:
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == message_id)
                         .values(sent_at=epoch_seconds(self._clock.now()), claimed_until=None, last_error=None))

    def _mark_failed(self, row, exc: Exception) -> None:
        attempts = row.attempts + 1
        delay = retry_delay(attempts)
        log.warning("could not send e-mail %d to the SMTP server %s:%d (%s); retrying in %d s",
                    row.id, self._smtp.host, self._smtp.port, type(exc).__name__, delay)
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(
                attempts=attempts, claimed_until=None, last_error=str(exc)[:500],
                next_attempt_at=epoch_seconds(self._clock.now()) + delay))
