"""OutboxSender: delivers queued e-mail over SMTP, retrying with backoff for a bounded time.

Several server processes may run a sender: each claims a message for a while before sending, so
a message goes out once even then. A message whose sending the database failed to record ends the
round (the messages after it are not tried, and no attempt of theirs is counted) and is recorded
before the next round sends anything, so it does not go out again; one whose sending a crash left
unrecorded goes out again after its claim, as the same message (same Message-ID and Date), which
mail systems recognise as a copy. A message the server refuses for good (5xx for its mailbox), or
cannot send within GIVE_UP_SECONDS of its event, is given up: its row keeps when
(``given_up_at``) and why, and the log says so.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate

from sqlalchemy import bindparam, exists, func, or_, select, update

from signserver.clock import Clock, epoch_seconds
from signserver.config import SmtpConfig
from signserver.errors import SignServerError
from signserver.monitoring.meter import meter
from signserver.smtp_sending import SendingRound, Watchdog, connect, outbox_message
from signserver.store.database import Database
from signserver.store.schema import outbox

log = logging.getLogger(__name__)

CLAIM_SECONDS = 120
FIRST_RETRY_SECONDS = 10
MAX_RETRY_SECONDS = 3600
# One round's SMTP work, whatever the server does: the sender runs in the background thread,
# between tasks that must keep the background lease (15 s), and well within a claim.
SEND_SECONDS = 10
# A message not sent this long after its event is given up (a notice days late misleads more than
# it tells); mail servers keep theirs about as long before they bounce.
GIVE_UP_SECONDS = 2 * 86_400
BACKLOG_REPORT_SECONDS = 10  # counting the unsent is a scan of the outbox: not every poll


def retry_delay(attempts: int) -> int:
    """10 s, 20 s, 40 s, ... up to an hour."""
    return min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)


_NOW = bindparam("now")
_IS_DUE = (outbox.c.sent_at.is_(None), outbox.c.given_up_at.is_(None), outbox.c.next_attempt_at <= _NOW,
           or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < _NOW))
# A message waits while an earlier one to its address is still to go and not due now (put off after
# a failure, or being sent by another node), so that a holder reads them in the order they were
# written: a lock's e-mail before its unlock's. Those due together go in one round in that order
# (send_claimed holds back the ones behind a refusal).
_EARLIER = outbox.alias("earlier")
_IN_TURN = ~exists().where(_EARLIER.c.recipient == outbox.c.recipient, _EARLIER.c.id < outbox.c.id,
                           _EARLIER.c.sent_at.is_(None), _EARLIER.c.given_up_at.is_(None),
                           or_(_EARLIER.c.next_attempt_at > _NOW, _EARLIER.c.claimed_until >= _NOW))
# Built once: every background round runs them, and building them cost more than running them on
# an empty outbox.
_DUE = select(outbox).where(*_IS_DUE, _IN_TURN).order_by(outbox.c.id).limit(bindparam("most"))
# Still due when claimed: on PostgreSQL another node may have sent the message, or put it off,
# since it was read (the update waits for that node's commit and checks the row as that node left it).
_CLAIM = (update(outbox).where(outbox.c.id == bindparam("message"), *_IS_DUE)
          .values(claimed_until=bindparam("claim_end")))


class OutboxSender(SendingRound):
    _SETTING_ERRORS = (SignServerError,)

    def __init__(self, database: Database, smtp: SmtpConfig, clock: Clock, send_seconds: float = SEND_SECONDS):
        super().__init__()
        self._database = database
        self._smtp = smtp
        self._clock = clock
        self._send_seconds = send_seconds
        self._backlog_reported = -BACKLOG_REPORT_SECONDS  # time.monotonic() of the last report

    def send_due(self, limit: int = 50) -> int:
        """Send the messages that are due, for at most ``send_seconds`` whatever the server does;
        return how many went out. A message the round did not reach is due again at once. What an
        earlier round sent and could not record is recorded first (SendingRound).

        Raises: what the database raises (StoreUnavailable...); never for SMTP or its settings.
        """
        self._record_earlier_sendings()
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            if time.monotonic() - self._backlog_reported >= BACKLOG_REPORT_SECONDS:
                self._backlog_reported = time.monotonic()
                meter().outbox_backlog(conn.execute(select(func.count()).select_from(outbox).where(
                    outbox.c.sent_at.is_(None), outbox.c.given_up_at.is_(None))).scalar_one())
            due = conn.execute(_DUE, {"now": now, "most": limit}).all()
            claimed = []
            for row in due:
                taken = conn.execute(_CLAIM, {"now": now, "message": row.id,
                                              "claim_end": now + CLAIM_SECONDS}).rowcount
                if taken:
                    claimed.append(row)
        if not claimed:
            return 0
        return self.send_claimed(claimed)

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Send until ``stop`` is set (the server's background thread)."""
        while not stop.is_set():
            try:
                self.send_due()
            except Exception:  # the sender must outlive a database hiccup
                log.exception("outbox sender failed; trying again")
            stop.wait(poll_seconds)

    def _connect(self, watchdog: Watchdog) -> smtplib.SMTP:
        """A connection, logged in, whose socket ``watchdog`` shuts at its deadline. The server's
        certificate and host name are checked (the system's trusted CAs) over TLS and STARTTLS.

        Raises: OSError, smtplib.SMTPException, ConfigurationError (the password file).
        """
        smtp = self._smtp

        def login() -> tuple[str, str] | None:
            password = smtp.password()
            return (smtp.username, password.reveal()) if smtp.username and password else None
        return connect(watchdog, smtp.host, smtp.port, smtp.security, ssl.create_default_context, login)

    def _message(self, row) -> EmailMessage:
        """Raises: Unsendable, ValueError (see outbox_message)."""
        return outbox_message(row, self._smtp.sender, row.body)

    def _mark_sent(self, row) -> None:
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == row.id)
                         .values(sent_at=epoch_seconds(self._clock.now()), claimed_until=None, last_error=None))

    def _mark_failed(self, row, exc: Exception, permanent: bool = False) -> None:
        """Count a failed attempt: try again after a backoff, or, refused for good or past
        GIVE_UP_SECONDS, give the message up, saying so in the log and the row."""
        attempts = row.attempts + 1
        now = epoch_seconds(self._clock.now())
        error = str(exc) or type(exc).__name__
        if permanent or now - row.created_at >= GIVE_UP_SECONDS:
            why = "refused for good" if permanent else f"not sent in {GIVE_UP_SECONDS // 3600} hours"
            log.error("gave up on e-mail %d (queued %s, %d attempts): %s: %s", row.id,
                      formatdate(row.created_at, usegmt=True), attempts, why, error)
            values = {"given_up_at": now, "last_error": f"gave up, {why}: {error}"[:500]}
        else:
            delay = retry_delay(attempts)
            log.warning("could not send e-mail %d to the SMTP server %s:%d (%s); retrying in %d s",
                        row.id, self._smtp.host, self._smtp.port, type(exc).__name__, delay)
            values = {"next_attempt_at": now + delay, "last_error": error[:500]}
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(
                attempts=attempts, claimed_until=None, **values))

    def _release(self, rows) -> None:
        """Give back the claims of messages a round did not reach (due again at once)."""
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]), outbox.c.sent_at.is_(None))
                         .values(claimed_until=None))
