"""LockoutPolicy: N consecutive failed authentications lock an account for M minutes.

Exact across threads, server processes and applications: every step is one database transaction
that holds the account's row. An attempt is evaluated only while the failures recorded plus the
attempts still being evaluated stay below N, so however many guesses arrive at once, no more than
N are ever evaluated before the lock; the others wait briefly for a turn (and then find the
account locked, or get their turn). A success clears the failures and any lock.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from signserver.clock import epoch_seconds, from_epoch
from signserver.config import AccountsConfig
from signserver.errors import AccountDisabled, AccountLocked, AuthenticationBusy
from signserver.store.schema import accounts, auth_attempts

STALE_ATTEMPT_SECONDS = 60  # an evaluation takes milliseconds; older rows are from a dead process


@dataclass(frozen=True)
class Attempt:
    """An attempt admitted for evaluation."""

    id: str
    account_id: int


class LockoutPolicy:
    def __init__(self, config: AccountsConfig):
        self.threshold = config.lock_threshold
        self.duration = datetime.timedelta(minutes=config.lock_minutes)

    def begin_attempt(self, conn: Connection, account_id: int, now: datetime.datetime) -> Attempt:
        """Admit one attempt for evaluation.

        Raises:
            AccountLocked: locked now (even correct factors are refused), with the time it ends.
            AccountDisabled: an operator disabled it.
            AuthenticationBusy: as many attempts as the account has failures left are being
                evaluated; try again in a moment.
        """
        t = epoch_seconds(now)
        row = conn.execute(select(accounts.c.status, accounts.c.failed_attempts, accounts.c.locked_until)
                           .where(accounts.c.id == account_id).with_for_update()).one()
        if row.status != "active":
            raise AccountDisabled("the account is disabled; an operator must enable it")
        if row.locked_until is not None and row.locked_until > t:
            raise AccountLocked(from_epoch(row.locked_until))
        failed = row.failed_attempts
        if row.locked_until is not None:  # the lock has run out: a new run of failures begins
            conn.execute(update(accounts).where(accounts.c.id == account_id)
                         .values(failed_attempts=0, locked_until=None))
            failed = 0
        in_flight = conn.execute(select(func.count()).select_from(auth_attempts).where(
            auth_attempts.c.account_id == account_id,
            auth_attempts.c.started_at > t - STALE_ATTEMPT_SECONDS)).scalar()
        if failed + in_flight >= self.threshold:
            raise AuthenticationBusy("too many authentications of this account are under way; try again")
        attempt = Attempt(secrets.token_hex(16), account_id)
        conn.execute(insert(auth_attempts).values(id=attempt.id, account_id=account_id, started_at=t))
        return attempt

    def succeeded(self, conn: Connection, attempt: Attempt) -> None:
        """The factors were right: the run of failures ends and any lock is lifted."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))
        conn.execute(update(accounts).where(accounts.c.id == attempt.account_id)
                     .values(failed_attempts=0, locked_until=None))

    def failed(self, conn: Connection, attempt: Attempt, now: datetime.datetime) -> bool:
        """Record a failure; True when it locked the account."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))
        until = epoch_seconds(now + self.duration)
        count = conn.execute(update(accounts).where(accounts.c.id == attempt.account_id).values(
            failed_attempts=accounts.c.failed_attempts + 1,
        ).returning(accounts.c.failed_attempts)).scalar()
        if count >= self.threshold:
            conn.execute(update(accounts).where(accounts.c.id == attempt.account_id).values(locked_until=until))
            return True
        return False

    def abandon(self, conn: Connection, attempt: Attempt) -> None:
        """The evaluation could not finish (an HSM or database fault): it counts for nothing."""
        conn.execute(delete(auth_attempts).where(auth_attempts.c.id == attempt.id))

    def unlock(self, conn: Connection, account_id: int) -> None:
        """An operator's unlock."""
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(failed_attempts=0, locked_until=None))

    def lock_end(self, now: datetime.datetime) -> datetime.datetime:
        return now + self.duration
