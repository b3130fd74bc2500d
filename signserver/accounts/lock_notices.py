"""LockNotices: the "account locked" e-mail, queued by the background work from a notice that the
locking failure writes alike for every name.

The failure that locks a name writes one row of one shape whether or not an account has the name
(the name's keyed hash, the id of the account that has it or none, the lock's end): reading the
account and queueing its e-mail there, for an account only, made the locking attempt slower when
the name was an account's, which told that it exists. The background work, ahead of the outbox's
sender in the same round, turns each notice into the e-mail when an account still has that name,
and drops the others.

A notice is committed with the failure, so a crash loses none; it is taken by a guarded delete in
the transaction that queues its e-mail, so that the e-mail is queued once even when another node's
round (before the background lease moved) reads the same notice.
"""

from __future__ import annotations

import datetime

from sqlalchemy import Connection, delete, insert, select

from signserver.accounts.model import Account
from signserver.accounts.name_keys import NameKeys
from signserver.accounts.repository import get_account
from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.notify.outbox import format_time, queue_email
from signserver.store.database import Database
from signserver.store.schema import accounts, lock_notices

NOTICE_BATCH = 100  # notices taken per transaction


class LockNotices:
    def __init__(self, database: Database, names: NameKeys, clock: Clock):
        self._database = database
        self._names = names
        self._clock = clock

    @staticmethod
    def record(conn: Connection, name_key: str, account_id: int | None, locked_until: datetime.datetime,
               now: datetime.datetime) -> None:
        """In the failure's transaction: the name (``name_key``: NameKeys.key_of) locked until
        ``locked_until``; ``account_id``: the account that has the name, None if none has. The
        same statement either way."""
        conn.execute(insert(lock_notices).values(name_key=name_key, account_id=account_id,
                                                 locked_until=epoch_seconds(locked_until),
                                                 created_at=epoch_seconds(now)))

    def queue_due(self) -> int:
        """Queue the "account locked" e-mail of every notice whose account still has the name,
        drop the others, and delete them all; returns how many notices became e-mail.

        Raises: StoreUnavailable; DataCorrupted, HsmError (the lockout's key, opened on first use).
        """
        with self._database.read() as conn:
            if conn.execute(select(lock_notices.c.id).limit(1)).first() is None:
                return 0  # the usual round: the lockout's key is not needed
        key_of = self._names.hasher()  # before the transaction: its first use reads the key in its own
        queued = 0
        while True:
            with self._database.transaction() as conn:
                notices = conn.execute(select(lock_notices).order_by(lock_notices.c.id).limit(NOTICE_BATCH)).all()
                for notice in notices:
                    # Taken once: on PostgreSQL another node's delete of the same row waits for
                    # this commit and then deletes nothing.
                    if conn.execute(delete(lock_notices).where(lock_notices.c.id == notice.id)).rowcount != 1:
                        continue
                    username = self._holder(conn, notice, key_of)
                    if username is None:
                        continue  # no account had the name, or it has gone since: nobody to tell
                    _queue_locked_email(conn, notice, get_account(conn, username, self._clock.now()))
                    queued += 1
            if len(notices) < NOTICE_BATCH:
                return queued

    @staticmethod
    def queue_before_lifting(conn: Connection, account: Account, name_key: str) -> int:
        """In the transaction that lifts the lock on ``account`` (``name_key``: its name's), before
        that queues its own e-mail: queue the "account locked" e-mail of the account's notices the
        background work has not taken yet, and delete them. The holder then hears of the lock
        before its end, never after. Returns how many notices became e-mail."""
        notices = conn.execute(select(lock_notices).where(
            lock_notices.c.account_id == account.id, lock_notices.c.name_key == name_key)
            .order_by(lock_notices.c.id)).all()
        queued = 0
        for notice in notices:
            # Taken once, as by queue_due: another node's round may be taking it now.
            if conn.execute(delete(lock_notices).where(lock_notices.c.id == notice.id)).rowcount == 1:
                _queue_locked_email(conn, notice, account)
                queued += 1
        return queued

    @staticmethod
    def _holder(conn: Connection, notice, key_of) -> str | None:
        """The name of the notice's account if that account still has the notice's name (an id
        that a later account took does not match)."""
        if notice.account_id is None:
            return None
        username = conn.execute(select(accounts.c.username).where(accounts.c.id == notice.account_id)).scalar()
        return username if username is not None and key_of(username) == notice.name_key else None


def _queue_locked_email(conn: Connection, notice, account: Account) -> None:
    """The "account locked" e-mail of ``notice``, dated when the lock began."""
    queue_email(conn, from_epoch(notice.created_at), account.emails, "account_locked",
                holder_name=account.holder_name, username=account.username,
                until=format_time(from_epoch(notice.locked_until)))
