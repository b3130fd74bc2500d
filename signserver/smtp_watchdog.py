"""SMTP sending bounded in time, shared by the core's e-mail sender and the RA's mailer: a
watchdog that shuts a connection's sockets at a deadline (a server that stops answering, or answers
a byte at a time, holds a sending round no longer than that), the SMTP classes it watches, and which
refusals are for good."""

from __future__ import annotations

import smtplib
import socket
import threading
import time


def refused_for_good(exc: Exception) -> bool:
    """The server refused every recipient with a permanent (5xx) reply: the mailbox does not
    exist or never takes this mail. Other refusals (the sender, the content) may be settings being
    fixed, and are retried."""
    return (isinstance(exc, smtplib.SMTPRecipientsRefused) and bool(exc.recipients)
            and all(code >= 500 for code, _ in exc.recipients.values()))


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
