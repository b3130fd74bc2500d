"""LockoutPolicy: N consecutive failed authentications lock an account for M minutes.

Counted in the database with single atomic statements, so the count is exact across threads,
server processes and applications. An attempt is counted *before* its factors are checked (and
forgiven on success): once N attempts are under way the next one is refused unchecked, so no more
than N wrong guesses are ever evaluated before the lock.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import Connection, and_, case, or_, select, update

from signserver.clock import epoch_seconds, from_epoch
from signserver.config import AccountsConfig
from signserver.errors import AccountDisabled, AccountLocked
from signserver.store.schema import accounts


@dataclass(frozen=True)
class Attempt:
    """A counted attempt: which one it is in the current run of failures."""

    account_id: int
    number: int
    locks_on_failure: bool


class LockoutPolicy:
    def __init__(self, config: AccountsConfig):
        self.threshold = config.lock_threshold
        self.duration = datetime.timedelta(minutes=config.lock_minutes)

    def begin_attempt(self, conn: Connection, account_id: int, now: datetime.datetime) -> Attempt:
        """Count one attempt, or refuse it if the account is locked or disabled.

        Raises:
            AccountLocked: the account is locked now (even correct factors are refused).
            AccountDisabled: an operator disabled it.
        """
        t = epoch_seconds(now)
        lock_expired = and_(accounts.c.locked_until.is_not(None), accounts.c.locked_until <= t)
        number = case((lock_expired, 1), else_=accounts.c.failed_attempts + 1)
        # A run of failures older than an expired lock starts again from one.
        row = conn.execute(update(accounts)
            .where(accounts.c.id == account_id, accounts.c.status == "active",
                   or_(accounts.c.locked_until.is_(None), accounts.c.locked_until <= t))
            .values(failed_attempts=number,
                    locked_until=case((number >= self.threshold, t + int(self.duration.total_seconds())),
                                      (lock_expired, None), else_=accounts.c.locked_until))
            .returning(accounts.c.failed_attempts)).first()
        if row is None:
            current = conn.execute(select(accounts.c.status, accounts.c.locked_until)
                                   .where(accounts.c.id == account_id)).one()
            if current.status != "active":
                raise AccountDisabled("the account is disabled; an operator must enable it")
            raise AccountLocked(from_epoch(current.locked_until))
        return Attempt(account_id, row.failed_attempts, row.failed_attempts >= self.threshold)

    def succeeded(self, conn: Connection, attempt: Attempt) -> None:
        """The factors were right: the run of failures ends and any lock it caused is lifted."""
        conn.execute(update(accounts).where(accounts.c.id == attempt.account_id)
                     .values(failed_attempts=0, locked_until=None))

    def unlock(self, conn: Connection, account_id: int) -> None:
        """An operator's unlock."""
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(failed_attempts=0, locked_until=None))

    def lock_end(self, now: datetime.datetime) -> datetime.datetime:
        return now + self.duration
