"""The Meter: where the server reports what it does, and a default that records nothing.

Code on the serving path calls ``meter()`` and reports events by meaning (a call finished, the HSM
lock was held, a token was spent); it never names a metrics library. ``signserver serve`` installs
the Prometheus meter in each worker (:mod:`signserver.monitoring.prometheus`); everything else (the
CLI, tests of the domain) runs on the silent default. Reporting never raises and never blocks:
a meter that fails must not fail a signature.
"""

from __future__ import annotations


class Meter:
    """Every report a server makes; this base records nothing."""

    def call_finished(self, front: str, method: str, status: str, seconds: float, reason: str | None = None) -> None:
        """A call of ``front`` ("grpc", "csc") to ``method`` ended with ``status`` after ``seconds``;
        ``reason``, for a refusal, is the stable reason its answer carries (an error class's
        ``reason``, e.g. ACCOUNT_LOCKED: several share one status), None for a call not refused."""

    def refused_later(self, front: str, method: str, reason: str) -> None:
        """A request to ``method`` whose call was answered before its work ended (an asynchronous
        operation's start) was refused when the work ended, with the stable ``reason`` its outcome
        carries: counted once, as a refusal of the call would have been."""

    def hsm_lock_released(self, waited: float, held: float) -> None:
        """The PKCS#11 lock was waited for ``waited`` seconds, then held ``held`` seconds."""

    def blocking_calls_pending(self, pool: str, pending: int, threads: int) -> None:
        """``pending`` calls are running or queued in the pool ``pool`` of ``threads`` threads."""

    def activation_tokens(self, event: str, count: int = 1) -> None:
        """``count`` activation tokens were "issued", "spent" or "expired" (forgotten unspent)."""

    def account_locked(self) -> None:
        """A name reached the limit of wrong attempts and was locked."""

    def hsm_session_reopened(self) -> None:
        """The HSM session was lost and opened again."""

    def crl_age(self, issuer: str, seconds: float) -> None:
        """The newest CRL of ``issuer`` was issued ``seconds`` ago."""

    def outbox_backlog(self, messages: int) -> None:
        """``messages`` e-mails wait in the outbox."""

    def message_logged(self, level: str, logger: str) -> None:
        """A line was logged at ``level`` ("warning", "error", "critical") by the logger ``logger``."""

    def background_lease(self, held: bool) -> None:
        """This process holds (or no longer holds) the lease of the background work."""

    def certificate_expiry(self, certificate: str, not_after: float) -> None:
        """The certificate ``certificate`` ("tls", "root-ca", "issuing-ca", "ocsp", "tsa") this
        process serves with ends at ``not_after`` (seconds since the epoch)."""


_current = Meter()


def meter() -> Meter:
    """The process's meter (the silent default until :func:`install_meter`)."""
    return _current


def install_meter(chosen: Meter) -> None:
    """Make ``chosen`` the process's meter (once per worker, at its start)."""
    global _current
    _current = chosen
