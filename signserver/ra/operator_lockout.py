"""OperatorLockout: five failed sign-ins lock an operator name for 30 minutes, whether or not an
operator account has that name, so that neither the answers nor their cost tell which names exist.

The state is kept by the name's keyed hash (HMAC-SHA-256 under a key derived from the RA's secret
key): the table never holds what was typed in the name field (a password typed there by mistake).
A run of failures is forgotten LOCK_SECONDS after its last failure (when a lock it caused ends),
and its row is deleted then, by the next attempt of any name: the table holds only the names tried
in the last 30 minutes.

Attempts made at once cannot outrun the limit: each is counted as a failure before it is evaluated
(in the transaction that holds the name's row) and taken back when it succeeds or ends in a
refusal that is not a wrong guess; an attempt past the limit locks the name without evaluation.
Every function works in the caller's transaction."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from signserver.ra.store.schema import operator_lockouts

MAX_FAILURES = 5
LOCK_SECONDS = 30 * 60
KEY_INFO = b"signserver RA operator sign-in lockout"


@dataclass(frozen=True)
class Admission:
    """An attempt's admission: ``locked_until`` (epoch seconds) when it is refused without being
    evaluated; ``locked_now`` when this very attempt, past the limit, locked the name."""

    locked_until: int | None
    locked_now: bool = False


@dataclass(frozen=True)
class Failure:
    """A failure recorded: the run's length and, when the name is locked, the lock's end."""

    count: int
    locked_until: int | None


@dataclass(frozen=True)
class LockState:
    failures: int
    locked_until: int | None  # set while locked


class OperatorLockout:
    def __init__(self, secret_key: bytes, max_failures: int = MAX_FAILURES, lock_seconds: int = LOCK_SECONDS):
        # A key of its own: the secret key also seals the OTP seeds (AES-GCM).
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(secret_key)
        self.max_failures = max_failures
        self.lock_seconds = lock_seconds

    def key_of(self, name: str) -> str:
        return hmac.new(self._key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def begin(self, conn: Connection, name: str, now: int) -> Admission:
        """Count an attempt of ``name`` before it is evaluated: refused (with the lock's end) while
        the name is locked, or when as many attempts as the limit are already counted."""
        conn.execute(delete(operator_lockouts).where(operator_lockouts.c.forget_at <= now))
        key = self.key_of(name)
        row = conn.execute(select(operator_lockouts).where(operator_lockouts.c.name_hash == key)
                           .with_for_update()).first()
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return Admission(row.locked_until)
        # The row may have been made and locked meanwhile by attempts that began at once (an
        # absent row is not held by the SELECT ... FOR UPDATE above): the count says.
        counted = self._count(conn, key, now)
        if counted.locked_until is not None and counted.locked_until > now:
            return Admission(counted.locked_until)
        if counted.failures > self.max_failures:
            # As many attempts as the limit are being evaluated, or were and never finished.
            return Admission(self._lock(conn, key, now), locked_now=True)
        return Admission(None)

    def failed(self, conn: Connection, name: str, now: int) -> Failure:
        """The attempt begun was a wrong guess (it is counted already): the name is locked when
        the run reaches the limit."""
        key = self.key_of(name)
        row = conn.execute(select(operator_lockouts).where(operator_lockouts.c.name_hash == key)
                           .with_for_update()).first()
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return Failure(self.max_failures, row.locked_until)  # another attempt locked it meanwhile
        if row is None:  # a success ended the run meanwhile: this failure starts a new one
            count = self._count(conn, key, now).failures
        else:
            count = row.failures
            conn.execute(update(operator_lockouts).where(operator_lockouts.c.name_hash == key)
                         .values(forget_at=now + self.lock_seconds))
        if count >= self.max_failures:
            return Failure(count, self._lock(conn, key, now))
        return Failure(count, None)

    def succeeded(self, conn: Connection, name: str) -> None:
        """The factors were right: the run of failures ends (a reset of the account too)."""
        conn.execute(delete(operator_lockouts).where(operator_lockouts.c.name_hash == self.key_of(name)))

    def abandon(self, conn: Connection, name: str) -> None:
        """The attempt begun ended in something other than a wrong guess: it counts for nothing."""
        c = operator_lockouts.c
        conn.execute(update(operator_lockouts).where(c.name_hash == self.key_of(name), c.failures > 0,
                                                     c.locked_until.is_(None))
                     .values(failures=c.failures - 1))

    def states(self, conn: Connection, names: list[str], now: int) -> dict[str, LockState]:
        """The names' current runs (names without one are absent)."""
        keys = {self.key_of(name): name for name in names}
        if not keys:
            return {}
        c = operator_lockouts.c
        rows = conn.execute(select(operator_lockouts).where(c.name_hash.in_(list(keys)), c.forget_at > now))
        return {keys[row.name_hash]: LockState(row.failures, row.locked_until if row.locked_until is not None
                                               and row.locked_until > now else None) for row in rows}

    def _count(self, conn: Connection, key: str, now: int) -> LockState:
        """One more failure of the name's run (a new run when it has none); the row after it."""
        c = operator_lockouts.c
        unlocked = c.locked_until.is_(None) | (c.locked_until <= now)  # a lock's row is left as it is
        counted = update(operator_lockouts).where(c.name_hash == key, unlocked).values(
            failures=c.failures + 1, forget_at=now + self.lock_seconds)
        for _ in range(3):  # an attempt beginning at once may make the row between two statements
            if conn.execute(counted).rowcount:
                break
            if conn.execute(select(c.name_hash).where(c.name_hash == key, ~unlocked)).first() is not None:
                break  # locked: nothing to count
            try:
                with conn.begin_nested():
                    conn.execute(insert(operator_lockouts).values(name_hash=key, failures=1, locked_until=None,
                                                                  forget_at=now + self.lock_seconds))
                break
            except IntegrityError:  # made meanwhile by another attempt (PostgreSQL): count in it
                continue
        row = conn.execute(select(c.failures, c.locked_until).where(c.name_hash == key)).first()
        return LockState(row.failures, row.locked_until) if row is not None else LockState(0, None)  # reset meanwhile

    def _lock(self, conn: Connection, key: str, now: int) -> int:
        """The lock ends when the run is forgotten: a new run of failures begins then."""
        until = now + self.lock_seconds
        conn.execute(update(operator_lockouts).where(operator_lockouts.c.name_hash == key)
                     .values(locked_until=until, failures=0, forget_at=until))
        return until
