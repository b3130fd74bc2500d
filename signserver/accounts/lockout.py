"""LockoutPolicy: N consecutive failed authentications lock a name for M minutes.

The state is kept by the name that was tried, whether an account of that name exists or not, so
that an unknown name locks exactly like a known one and five tries cannot tell them apart; only
as the name's keyed hash (accounts/name_keys.py), which every method here takes: holders type
their password into the account field, and the database never holds what they typed. A run
of failures is forgotten M minutes after its last failure (when a lock it caused ends), and the
row that kept it is deleted then, so the table holds only the names tried in the last M minutes.

Exact across threads, server processes and applications: every step is one database transaction
that holds the name's row. An attempt is evaluated only while the failures recorded plus the
attempts still being evaluated stay below N, so however many guesses arrive at once, no more than
N are ever evaluated before the lock; the others wait briefly for a turn (and then find the name
locked, or get their turn). A success clears the failures and any lock.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from signserver.clock import epoch_seconds, from_epoch
from signserver.config import AccountsConfig
from signserver.errors import AccountLocked, AuthenticationBusy, InvalidArgument
from signserver.monitoring.meter import meter
from signserver.store.schema import auth_attempts, name_lockouts
from signserver.store.upsert import insert_on_conflict

STALE_ATTEMPT_SECONDS = 60  # an evaluation takes milliseconds; older rows are from a dead process
MAX_NAME_LENGTH = 64  # no account name is longer (accounts.manager.USERNAME)


def check_name_tried(name: str) -> None:
    """Refuse a name that no account can have and the lockout cannot keep: saying so tells
    nothing about the accounts that exist.

    Raises: InvalidArgument: longer than MAX_NAME_LENGTH characters, or with control characters.
    """
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgument(f"an account name has at most {MAX_NAME_LENGTH} characters and no control characters")


@dataclass(frozen=True)
class Attempt:
    """An attempt admitted for evaluation."""

    id: str
    name_key: str


@dataclass(frozen=True)
class Failure:
    """A failure just recorded: the run's length, and the lock's end when it locked the name."""

    count: int
    locked_until: datetime.datetime | None


@dataclass(frozen=True)
class LockState:
    """What the lockout knows about a name at a moment."""

    failed_attempts: int
    locked_until: datetime.datetime | None  # set while locked


class LockoutPolicy:
    def __init__(self, config: AccountsConfig):
        self.threshold = config.lock_threshold
        self.duration = datetime.timedelta(minutes=config.lock_minutes)

    def begin_attempt(self, conn: Connection, name_key: str, now: datetime.datetime) -> Attempt:
        """Admit one attempt for the name (known or not; ``name_key``: NameKeys.key_of) for evaluation.

        Raises:
            AccountLocked: locked now (even correct factors are refused), with the time it ends.
            AuthenticationBusy: as many attempts as the name has failures left are being
                evaluated; try again in a moment.
        """
        t = epoch_seconds(now)
        # Runs that are over are forgotten here, on every attempt alike (an index range scan).
        conn.execute(delete(name_lockouts).where(name_lockouts.c.forget_at <= t))
        # The name's row, made if absent and locked in one statement: between a separate insert
        # and SELECT ... FOR UPDATE, a success elsewhere could delete the row (PostgreSQL).
        row = conn.execute(insert_on_conflict(conn, name_lockouts).values(name_key=name_key, failed_attempts=0,
                                                                          forget_at=t + self._seconds)
                           .on_conflict_do_update(index_elements=[name_lockouts.c.name_key],
                                                  set_={"name_key": name_key})
                           .returning(name_lockouts.c.failed_attempts, name_lockouts.c.locked_until)).one()
        if row.locked_until is not None and row.locked_until > t:
            raise AccountLocked(from_epoch(row.locked_until))
        in_flight = conn.execute(select(func.count()).select_from(auth_attempts).where(
            auth_attempts.c.name_key == name_key, auth_attempts.c.started_at > t - STALE_ATTEMPT_SECONDS)).scalar()
        if row.failed_attempts + in_flight >= self.threshold:
            raise AuthenticationBusy("too many authentications of this account are under way; try again")
        attempt = Attempt(secrets.token_hex(16), name_key)
        conn.execute(insert(auth_attempts).values(id=attempt.id, name_key=name_key, started_at=t))
        return attempt

    def succeeded(self, conn: Connection, attempt: Attempt) -> None:
        """The factors were right: the run of failures ends and any lock is lifted."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))
        conn.execute(delete(name_lockouts).where(name_lockouts.c.name_key == attempt.name_key))

    def failed(self, conn: Connection, attempt: Attempt, now: datetime.datetime) -> Failure:
        """Record a failure of the attempt's name; says whether it locked the name."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))
        t = epoch_seconds(now)
        # Another attempt may have forgotten this run meanwhile (it ran out during the evaluation,
        # or a success ended it): the failure then starts a new one. One statement either way.
        count = conn.execute(insert_on_conflict(conn, name_lockouts)
                             .values(name_key=attempt.name_key, failed_attempts=1, forget_at=t + self._seconds)
                             .on_conflict_do_update(index_elements=[name_lockouts.c.name_key], set_={
                                 "failed_attempts": name_lockouts.c.failed_attempts + 1,
                                 "forget_at": t + self._seconds})
                             .returning(name_lockouts.c.failed_attempts)).scalar_one()
        if count >= self.threshold:
            # The lock ends when the run is forgotten: then a new run of failures begins.
            conn.execute(update(name_lockouts).where(name_lockouts.c.name_key == attempt.name_key)
                         .values(locked_until=t + self._seconds))
            if count == self.threshold:  # attempts begun before the lock may fail after it
                meter().account_locked()
            return Failure(count, self.lock_end(now))
        return Failure(count, None)

    def abandon(self, conn: Connection, attempt: Attempt) -> None:
        """The evaluation could not finish (an HSM or database fault), or ended in a refusal that
        is not a wrong guess: it counts for nothing."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))

    def unlock(self, conn: Connection, name_key: str) -> None:
        """An operator's unlock: the run of failures and any lock are forgotten."""
        conn.execute(delete(name_lockouts).where(name_lockouts.c.name_key == name_key))

    def state(self, conn: Connection, name_key: str, now: datetime.datetime) -> LockState:
        """The name's failures in the current run and the end of its lock, if locked now."""
        t = epoch_seconds(now)
        row = conn.execute(select(name_lockouts.c.failed_attempts, name_lockouts.c.locked_until)
                           .where(name_lockouts.c.name_key == name_key, name_lockouts.c.forget_at > t)).first()
        return lock_state(row, t)

    def lock_end(self, now: datetime.datetime) -> datetime.datetime:
        return now + self.duration

    @property
    def _seconds(self) -> int:
        return int(self.duration.total_seconds())


def lock_state(row, t: int) -> LockState:
    """A LockState from a ``name_lockouts`` row (or None: no run) read at epoch second ``t``."""
    if row is None or row.failed_attempts is None:
        return LockState(0, None)
    locked = row.locked_until is not None and row.locked_until > t
    return LockState(row.failed_attempts, from_epoch(row.locked_until) if locked else None)
