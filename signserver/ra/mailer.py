"""Sends the RA's queued e-mail over SMTP; a message leaves the outbox only once the server took it,
so nothing is lost when the RA stops or the SMTP server is down (it is tried again later), except
one past its use (discard_after: a code that has expired), which is dropped unsent.

A round sends what is due over one connection and lasts at most SEND_SECONDS whatever the server
does (a server that stops answering is cut off), so a silent server never holds the RA's
background passes. A message is claimed before it is sent (its next attempt put CLAIM_SECONDS
ahead), so two RA processes on one database do not both send it. A message whose sending the
database failed to record ends the round and is recorded before the next round sends anything; one
a crash left sent but not recorded goes out again after its claim as the same message (same
Message-ID and Date), which mail systems recognise as a copy. A message the server refuses for good
(5xx for its mailbox), that can never be sent (its recipient is not one mailbox), or not sent
within GIVE_UP_SECONDS of its event, is given up, the log saying so at ERROR: never tried again,
its body (a code, a holder's link) erased, it stays listed for the operators (recipient, subject,
why) for repository.GIVEN_UP_KEPT_SECONDS. Why an attempt failed is kept without any secret of the message,
even where the server's reply quotes it."""

from __future__ import annotations

import datetime
import logging
import os
import re
import smtplib
import ssl
import stat
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from pathlib import Path

from sqlalchemy import update

from signserver.clock import Clock, epoch_seconds
from signserver.ra import messages
from signserver.ra.errors import SettingsError
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase
from signserver.ra.store.schema import outbox
from signserver.smtp_sending import SendingRound, Watchdog, connect, outbox_message

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 3600
CLAIM_SECONDS = 120
# One round's SMTP work, whatever the server does: the round runs in the RA's background thread,
# between the notices and the registry's retries, and well within a claim.
SEND_SECONDS = 10
# A message not sent this long after its event is given up (a notice or a code days late misleads
# more than it tells); mail servers keep theirs about as long before they bounce.
GIVE_UP_SECONDS = 2 * 86_400
MAX_PASSWORD_BYTES = 4096
MAX_LAST_ERROR = 300  # characters of a failure kept in the outbox


def retry_delay(attempts: int) -> datetime.timedelta:
    """10 s, 20 s, 40 s, ... up to an hour."""
    return datetime.timedelta(seconds=min(10 * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS))


def read_smtp_password(path: Path) -> str:
    """The SMTP password alone in ``path`` (surrounding whitespace stripped).

    Raises: SettingsError: the file is missing, unreadable, not a regular file, empty, or may be
    read by others than its owner (the message names the setting, never the content).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SettingsError(f"ra.smtp_password_file: cannot read {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SettingsError(f"ra.smtp_password_file: {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SettingsError(f"ra.smtp_password_file: {path} may be read by others than its owner "
                                f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`")
        raw = handle.read(MAX_PASSWORD_BYTES + 1)
    try:
        password = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SettingsError(f"ra.smtp_password_file: {path} is not UTF-8 text") from None
    if not password or len(raw) > MAX_PASSWORD_BYTES:
        raise SettingsError(f"ra.smtp_password_file: {path} is empty or is not one password")
    return password


class OutboxMailer(SendingRound):
    _SETTING_ERRORS = (SettingsError,)

    def __init__(self, database: RaDatabase, clock: Clock, *, host: str, port: int, sender: str,
                 service_name: str = "", security: str = "none", username: str = "",
                 password_file: Path | None = None, ca: Path | None = None,
                 send_seconds: float = SEND_SECONDS):
        """``sender``: the From address; ``service_name``: the setting ra.service_name, the From
        name and the sign-off of every message ("" for the languages' default names);
        ``security``: "none", "starttls" or "tls"; ``username`` and ``password_file``: a login
        (the file is read again at each connection); ``ca``: the CAs (PEM) trusted for the
        server's certificate, else the system's.

        Raises: SettingsError: an unknown ``security``; the password file or the CAs cannot be
        read (checked here, so that the RA does not start with them broken).
        """
        if security not in ("none", "starttls", "tls"):
            raise SettingsError(f"ra.smtp_security: expected none, starttls or tls, not {security!r}")
        super().__init__()
        self._service_name = service_name
        self._database = database
        self._clock = clock
        self._host = host
        self._port = port
        self._sender = sender
        self._security = security
        self._username = username
        self._password_file = password_file
        self._ca = ca
        self._send_seconds = send_seconds
        if password_file is not None:
            read_smtp_password(password_file)
        if security != "none":
            self._tls_context()

    @classmethod
    def from_settings(cls, database: RaDatabase, clock: Clock, settings) -> "OutboxMailer":
        """The mailer of the RA's settings (ra.smtp_* and ra.service_name).

        Raises: SettingsError (as the constructor).
        """
        return cls(database, clock, host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_sender,
                   service_name=settings.service_name, security=settings.smtp_security,
                   username=settings.smtp_username, password_file=settings.smtp_password_file, ca=settings.smtp_ca)

    def send_due(self, limit: int = 50) -> int:
        """Drop what is past its use, send what is due, for at most ``send_seconds`` whatever the
        server does; returns how many went out. A message the round did not reach is due again at
        once. What an earlier round sent and could not record is recorded first (SendingRound).

        Raises: what the database raises; never for SMTP or its settings (it retries later).
        """
        self._record_earlier_sendings()
        now = self._clock.now()
        with self._database.transaction() as conn:
            discarded = repository.discard_stale_emails(conn, now)
            due = repository.due_emails(conn, now, limit)
            claimed = []
            for row in due:
                # Still as read when claimed: another RA process may have sent it, or put it off.
                taken = conn.execute(update(outbox).where(outbox.c.id == row.id,
                                                          outbox.c.next_attempt_at == row.next_attempt_at)
                                     .values(next_attempt_at=epoch_seconds(now) + CLAIM_SECONDS)).rowcount
                if taken:
                    claimed.append(row)
        if discarded:
            log.info("%d e-mail(s) dropped unsent: of no use any more (an expired code)", discarded)
        if not claimed:
            return 0
        return self.send_claimed(claimed)

    def _tls_context(self) -> ssl.SSLContext:
        """Checks the server's certificate and host name, against ``ca`` or the system's CAs.

        Raises: SettingsError: ``ca`` cannot be read or holds no certificate.
        """
        try:
            return ssl.create_default_context(cafile=str(self._ca) if self._ca is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"ra.smtp_ca: cannot read CA certificates (PEM) from {self._ca}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None

    def _connect(self, watchdog: Watchdog) -> smtplib.SMTP:
        """A connection, logged in when a login is set, whose socket ``watchdog`` shuts at its
        deadline.

        Raises: OSError, smtplib.SMTPException, SettingsError (the password file, the CAs).
        """
        def login() -> tuple[str, str] | None:
            if self._username and self._password_file is not None:
                return self._username, read_smtp_password(self._password_file)
            return None
        return connect(watchdog, self._host, self._port, self._security, self._tls_context, login)

    def _message(self, row) -> EmailMessage:
        """Raises: Unsendable, ValueError (see outbox_message)."""
        return outbox_message(row, formataddr((messages.sender_name(self._service_name), self._sender)),
                              messages.signed_off(row.body, self._service_name))

    def _mark_failed(self, row, exc: Exception, permanent: bool = False) -> None:
        """Count a failed attempt: try again after a backoff, or, refused for good or past
        GIVE_UP_SECONDS, give the message up (kept for the operators without its body), saying so
        at ERROR."""
        attempts = row.attempts + 1
        now = self._clock.now()
        error = without_secrets_of(row.body, failure_text(exc))
        if permanent or epoch_seconds(now) - row.created_at >= GIVE_UP_SECONDS:
            why = "refused for good" if permanent else f"not sent in {GIVE_UP_SECONDS // 3600} hours"
            log.error("gave up on e-mail %d (queued %s, %d attempts), never tried again: %s: %s", row.id,
                      formatdate(row.created_at, usegmt=True), attempts, why, error)
            with self._database.transaction() as conn:
                repository.email_given_up(conn, row.id, attempts, now, error)
            return
        delay = retry_delay(attempts)
        log.warning("could not send e-mail %d to the SMTP server %s:%d (%s); retrying in %d s", row.id,
                    self._host, self._port, type(exc).__name__, delay.total_seconds())
        with self._database.transaction() as conn:
            repository.email_failed(conn, row.id, attempts, now + delay, error)

    def _mark_sent(self, row) -> None:
        with self._database.transaction() as conn:
            repository.email_sent(conn, row.id)

    def _release(self, rows) -> None:
        """Give back the claims of messages a round did not reach (due again at once)."""
        with self._database.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                         .values(next_attempt_at=epoch_seconds(self._clock.now())))


def failure_text(exc: Exception) -> str:
    """Why an attempt failed, for the outbox's last_error: the SMTP server's reply (code and text),
    else the error's class and text. Never the message's body: no SMTP error quotes it, and the
    password of a login is never in one (smtplib puts only the server's reply in it)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{address}: {code} {_reply(reply)}" for address, (code, reply) in exc.recipients.items())
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"{exc.smtp_code} {_reply(exc.smtp_error)}"
    else:
        text = str(exc)
    return f"{type(exc).__name__}: {text}"[:MAX_LAST_ERROR] if text else type(exc).__name__


# A word of a message that may be a secret it carries: a code, a holder token, an OTP URI's seed,
# a recovery code (a run of 6 characters or more with a digit, or of 16 or more of any kind).
_WORD = re.compile(r"[^\s/?&=:;,()（）：；，。]{6,}")
_SECRET_LIKE = re.compile(r"\d|.{16}")
MASK = "[…]"


def without_secrets_of(body: str, text: str) -> str:
    """``text`` (why sending ``body`` failed) with every word of ``body`` that may be a secret
    masked: a content filter's reply may quote the message, and what is kept of a failure is shown
    to the operators and logged."""
    words = {word for word in _WORD.findall(body) if _SECRET_LIKE.search(word)}
    for word in sorted(words, key=len, reverse=True):
        text = text.replace(word, MASK)
    return text


def _reply(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)

