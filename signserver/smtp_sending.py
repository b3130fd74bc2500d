"""Sending an outbox's e-mail over SMTP, shared by the core's sender and the RA's mailer: the
sending round over one connection (:class:`SendingRound`), bounded in time by a watchdog that
shuts the connection's sockets at a deadline (a server that stops answering, or answers a byte at
a time, holds a round no longer than that); the connection (:func:`connect`); an outbox row's
message, the same at every attempt (:func:`outbox_message`); and which refusals are for good."""

from __future__ import annotations

import hashlib
import logging
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Callable

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 20  # one reply of the server, at most (and never past the round's end)

# Refusals of one message, after which the connection carries on (smtplib sends RSET).
MESSAGE_REFUSED = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError,
                   smtplib.SMTPNotSupportedError)


def refused_for_good(exc: Exception) -> bool:
    """The server refused every recipient with a permanent (5xx) reply: the mailbox does not
    exist or never takes this mail; or the mailbox's name is not ASCII and the server does not
    take SMTPUTF8 (RFC 6531), which no attempt changes. Other refusals (the sender, the content)
    may be settings being fixed, and are retried."""
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return True
    return (isinstance(exc, smtplib.SMTPRecipientsRefused) and bool(exc.recipients)
            and all(code >= 500 for code, _ in exc.recipients.values()))


def ascii_address(address: str) -> str:
    """``address`` with its domain in IDNA's ASCII form (``kuan@xn--bcher-kva.mo``) when only the
    domain is not ASCII, so that a server without SMTPUTF8 takes it too; else as it is."""
    local, _, domain = address.rpartition("@")
    if domain.isascii() or not local.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:  # not a domain IDNA can write: sent as it is, for the server to judge
        return address


class Watchdog:
    """Shuts the connection's sockets at a deadline, so that a server that stops answering, or
    answers a byte at a time, holds the sender no longer than that."""

    def __init__(self, deadline: float):
        self._deadline = deadline
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self._deadline

    def timeout(self, most: float) -> float:
        """A socket timeout: ``most``, or less to end by the deadline."""
        return max(min(most, self._deadline - time.monotonic()), 0.1)

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, even under TLS: the blocked read in the sender's thread ends
    # at once, and the TLS object it reads through is left to that thread to close.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _Watched:
    """An SMTP client whose sockets its watchdog shuts at the deadline."""

    def __init__(self, watchdog: Watchdog, *args, **kwargs):
        self._watchdog = watchdog
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        self._watchdog.watch(sock)
        return sock


class WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class WatchedSMTPSSL(_Watched, smtplib.SMTP_SSL):
    pass


class _NotRecorded(Exception):
    """Recording an outcome failed (its cause: what the outbox's database raised): the round ends."""


class SendingRound:
    """The round of an outbox over one SMTP connection, for an outbox that keeps its own rows: it
    gives :meth:`send_claimed` the messages it claimed, and implements how to connect, to build a
    message, and to record each outcome. ``_send_seconds`` bounds the round; ``_SETTING_ERRORS``
    are its settings' errors, which fail the round as a connection's would.

    A message the server took but whose sending the database then failed to record is kept here
    and recorded by :meth:`_record_earlier_sendings`, which the outbox calls before it claims
    anything: it is not sent again while this process lives, though its claim runs out. Only a
    process that ends first (its claim then runs out for another) leaves it to be sent twice, as
    the same message (same Message-ID and Date), which mail systems recognise as a copy."""

    _send_seconds: float
    _SETTING_ERRORS: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._sent_unrecorded: list = []  # rows the server took, oldest first, not recorded sent yet

    def _record_earlier_sendings(self) -> None:
        """Record as sent the messages that earlier rounds sent and could not record.

        Raises: what recording raises (the outbox's database); those not recorded are kept, and
        the caller claims nothing: sending more that may not be recorded would only add copies.
        """
        while self._sent_unrecorded:
            self._mark_sent(self._sent_unrecorded[0])
            row = self._sent_unrecorded.pop(0)
            log.info("e-mail %d, sent earlier, is recorded sent now", row.id)

    def send_claimed(self, claimed: list) -> int:
        """Send ``claimed`` (rows with a ``recipient``) in order over one connection, within
        ``_send_seconds``; returns how many were sent. A message the server refuses is recorded
        failed (for good when :func:`refused_for_good`) and the round goes on; a failed connection
        fails every message not yet sent, or, when the round's time ran out during one, that one;
        the messages the round had no time for are released with no attempt counted. When the
        database fails to record an outcome, the round ends there: the messages not tried yet are
        released with no attempt counted (or, when the database refuses that too, due again once
        their claim runs out), and a message sent is kept for :meth:`_record_earlier_sendings`.

        Raises: what recording an outcome raises (the outbox's database).
        """
        sent = 0
        pending = list(claimed)  # claimed and not yet sent or failed
        held_back = []  # behind a message to the same address that failed in this round
        refused_addresses: set[str] = set()
        under_way = False  # pending[0] is being sent
        not_recorded: Exception | None = None
        watchdog = Watchdog(time.monotonic() + self._send_seconds)
        try:
            try:
                with self._connect(watchdog) as client:
                    while pending and not watchdog.expired():
                        row = pending[0]
                        if row.recipient in refused_addresses:
                            # Its address reads its messages in the order they were written: the
                            # one refused goes first, in a later round.
                            held_back.append(pending.pop(0))
                            continue
                        try:
                            message = self._message(row)
                        except ValueError as exc:  # Unsendable among them: it never will be
                            refused_addresses.add(row.recipient)
                            self._record_failed(pending.pop(0), exc, permanent=True)
                            continue
                        under_way = True
                        try:
                            client.send_message(message, to_addrs=[ascii_address(row.recipient)])
                        except MESSAGE_REFUSED as exc:
                            under_way = False
                            refused_addresses.add(row.recipient)
                            self._record_failed(pending.pop(0), exc, permanent=refused_for_good(exc))
                            continue
                        under_way = False
                        pending.pop(0)
                        self._record_sent(row)
                        sent += 1
            except (OSError, smtplib.SMTPException, *self._SETTING_ERRORS) as exc:
                # The server, the way to it or its settings failed: all of them wait their turn;
                # but when the round ran out of time during a message, only that one.
                failed, pending = (pending[:1], pending[1:]) if watchdog.fired and under_way else (pending, [])
                for row in failed:
                    self._record_failed(row, exc)
        except _NotRecorded as stop:
            not_recorded = stop.__cause__
        finally:
            watchdog.cancel()
        try:
            # The round's time ran out before them, the database failed, or they were held back:
            # no attempt counted.
            if pending or held_back:
                self._release(pending + held_back)
        finally:
            if not_recorded is not None:
                # What the caller hears, rather than the release's failure (of the same cause).
                raise not_recorded
        return sent

    def _record_sent(self, row) -> None:
        """Raises: _NotRecorded (the row kept for :meth:`_record_earlier_sendings`)."""
        try:
            self._mark_sent(row)
        except Exception as exc:  # whatever the outbox's database raises; raised again by send_claimed
            self._sent_unrecorded.append(row)
            log.warning("e-mail %d was sent but not recorded sent (%s): it is recorded before any other is sent, "
                        "and this process does not send it again", row.id, type(exc).__name__)
            raise _NotRecorded from exc

    def _record_failed(self, row, exc: Exception, permanent: bool = False) -> None:
        """Raises: _NotRecorded (the attempt is not counted; the message is due again once its
        claim runs out)."""
        try:
            self._mark_failed(row, exc, permanent)
        except Exception as error:  # whatever the outbox's database raises; raised again by send_claimed
            raise _NotRecorded from error

    def _connect(self, watchdog: Watchdog) -> smtplib.SMTP:
        raise NotImplementedError

    def _message(self, row) -> EmailMessage:
        """Raises: ValueError: the message can never be sent as it is."""
        raise NotImplementedError

    def _mark_sent(self, row) -> None:
        raise NotImplementedError

    def _mark_failed(self, row, exc: Exception, permanent: bool = False) -> None:
        raise NotImplementedError

    def _release(self, rows: list) -> None:
        raise NotImplementedError


class Unsendable(ValueError):
    """A message that can never be sent as it is (its recipient is not one mailbox)."""


def outbox_message(row, sender: str, body: str) -> EmailMessage:
    """The message of an outbox row (``id``, ``created_at``, ``recipient``, ``subject``, ``body``),
    the same at every attempt (Date and Message-ID from the row), so that a copy sent again after
    a crash is recognised as one. ``sender``: the From header; ``body``: the text to send.

    Raises: Unsendable: the recipient is not one mailbox. ValueError: a header cannot be made.
    """
    message = EmailMessage()
    message["From"] = sender
    recipient = ascii_address(row.recipient)
    message["To"] = recipient
    # One mailbox, exactly the one recorded: never a list, a display name or a comment that
    # would send the message elsewhere or to more.
    if [a.addr_spec for a in message["To"].addresses] != [recipient]:
        raise Unsendable(f"the recipient {row.recipient[:80]!r} is not one e-mail address")
    message["Subject"] = row.subject
    message["Date"] = formatdate(row.created_at, localtime=False)
    message["Message-ID"] = _message_id(row, sender)
    message.set_content(body)
    return message


def _message_id(row, sender: str) -> str:
    """``<id.created.digest@sender's domain>``: the same at every attempt; the digest of the
    message keeps rows of two databases (a restored copy, a test) apart."""
    try:
        domain = parseaddr(sender)[1].rpartition("@")[2].strip().encode("idna").decode("ascii")
    except UnicodeError:
        domain = ""
    domain = domain or "localhost"
    digest = hashlib.sha256(f"{row.id}\n{row.created_at}\n{row.recipient}\n{row.subject}\n{row.body}"
                            .encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"<{row.id}.{row.created_at}.{digest}@{domain}>"


def connect(watchdog: Watchdog, host: str, port: int, security: str, tls_context: Callable[[], ssl.SSLContext],
            login: Callable[[], tuple[str, str] | None]) -> smtplib.SMTP:
    """A connection to ``host``:``port`` (``security``: "none", "starttls" or "tls"), logged in
    when ``login()`` gives a name and password, whose sockets ``watchdog`` shuts at its deadline.
    ``tls_context()`` checks the server's certificate and host name.

    Raises: OSError, smtplib.SMTPException, and what ``tls_context`` and ``login`` raise.
    """
    timeout = watchdog.timeout(SMTP_TIMEOUT_SECONDS)
    if security == "tls":
        client = WatchedSMTPSSL(watchdog, host, port, timeout=timeout, context=tls_context())
    else:
        client = WatchedSMTP(watchdog, host, port, timeout=timeout)
    try:
        if security == "starttls":
            client.starttls(context=tls_context())
            watchdog.watch(client.sock)
        credentials = login()
        if credentials is not None:
            client.login(*credentials)
    except BaseException:
        client.close()
        raise
    return client
