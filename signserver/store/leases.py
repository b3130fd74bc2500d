"""Lease: a named right, kept in the database, that one holder at a time has until it expires.

Several nodes on one database each run a candidate for work that must run once (the background
work: e-mail, audit seals, CRLs, expiry notices, master-key rotation rounds). Each candidate asks
for the lease every round; the one that holds it renews it and works, the others wait. A holder
that dies stops renewing, and another takes the lease once it has expired; a holder that stops
cleanly releases it, and another takes it at its next round.

Acquiring and renewing are one statement, an upsert whose update applies only where the lease has
expired or is the caller's own (``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE``): on
PostgreSQL the update locks the row and re-checks the condition on its newest version, on SQLite
writers take turns, so of candidates racing for a free or expired lease exactly one gets it.

Expiry is written by the holder's clock and read by the others' clocks: nodes' clocks must agree
to well within the lease's length (NTP does).
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
from dataclasses import dataclass

from sqlalchemy import Connection, case, or_, select, update

from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.store.database import Database
from signserver.store.schema import leases
from signserver.store.upsert import insert_on_conflict

DEFAULT_LEASE_SECONDS = 15


@dataclass(frozen=True)
class LeaseTerm:
    """A lease as its row shows it: who holds it, since when (without a break), until when."""

    name: str
    holder: str
    acquired_at: datetime.datetime
    expires_at: datetime.datetime


def holder_id() -> str:
    """An id for a lease holder: host and process, for people reading the table, and a random part,
    so that a process id used again (after a restart, in a container) names another holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """The lease ``name`` as seen by one holder."""

    def __init__(self, database: Database, clock: Clock, name: str, seconds: int = DEFAULT_LEASE_SECONDS,
                 holder: str | None = None):
        if seconds < 1:
            raise ValueError("a lease lasts at least a second")
        self._database = database
        self._clock = clock
        self.name = name
        self.seconds = seconds
        self.holder = holder or holder_id()

    def acquire(self) -> LeaseTerm | None:
        """Take the lease if it is free or expired, or renew it if this holder has it; returns the
        term it now has (``acquired_at`` is unchanged by a renewal), or None when another holds it.

        Raises: StoreUnavailable, StoreRefused: the database cannot be reached or refused it.
        """
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            row = conn.execute(self._upsert(conn, now)).first()
        if row is None:
            return None  # another holds it and its term runs on
        return LeaseTerm(self.name, row.holder, from_epoch(row.acquired_at), from_epoch(row.expires_at))

    def release(self) -> None:
        """Give the lease up, if this holder has it, so that another takes it at once.

        Raises: StoreUnavailable, StoreRefused.
        """
        now = epoch_seconds(self._clock.now())
        with self._database.transaction() as conn:
            conn.execute(update(leases).where(leases.c.name == self.name, leases.c.holder == self.holder)
                         .values(holder="", expires_at=now))

    def current(self) -> LeaseTerm | None:
        """Who holds the lease now (None: nobody, or an expired holder).

        Raises: StoreUnavailable, StoreRefused.
        """
        now = epoch_seconds(self._clock.now())
        with self._database.read() as conn:
            row = conn.execute(select(leases).where(leases.c.name == self.name)).first()
        if row is None or not row.holder or row.expires_at <= now:
            return None
        return LeaseTerm(self.name, row.holder, from_epoch(row.acquired_at), from_epoch(row.expires_at))

    def _upsert(self, conn: Connection, now: int):
        statement = insert_on_conflict(conn, leases).values(name=self.name, holder=self.holder, acquired_at=now,
                                                  expires_at=now + self.seconds)
        mine = leases.c.holder == statement.excluded.holder
        return statement.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={"holder": statement.excluded.holder,
                  "acquired_at": case((mine, leases.c.acquired_at), else_=statement.excluded.acquired_at),
                  "expires_at": statement.excluded.expires_at},
            where=or_(leases.c.expires_at <= now, mine),
        ).returning(leases.c.holder, leases.c.acquired_at, leases.c.expires_at)


class LeaseKeeper:
    """A lease kept by a worker loop across its rounds: taken or renewed at the start of each
    round, and renewed again before each step once a third of the term or less is left, so that a
    round stops at the step where the lease is lost (a step that outlasts the rest of the term may
    overlap the next holder's: the work it guards must stay safe if run twice, as claims are)."""

    def __init__(self, lease: Lease, clock: Clock):
        self.lease = lease
        self._clock = clock
        self._term: LeaseTerm | None = None
        self._tenure: datetime.datetime | None = None  # acquired_at of the last term held
        self.began = False  # the last keep() took the lease anew (nobody else had it in between: no)

    @property
    def held(self) -> bool:
        """Whether this holder had the lease at its last look (without asking the database)."""
        return self._term is not None and self._term.expires_at > self._clock.now()

    def keep(self, renew: bool = True) -> bool:
        """Take or renew the lease (with ``renew`` false, only once a third of the term or less is
        left); True while this holder has it.

        Raises: StoreUnavailable, StoreRefused (the lease then counts as lost: who has it is unknown).
        """
        self.began = False
        if not renew and self.held:
            left = (self._term.expires_at - self._clock.now()).total_seconds()
            if left > self.lease.seconds / 3:
                return True
        self._term = None
        self._term = self.lease.acquire()
        if self._term is None:
            return False
        self.began = self._term.acquired_at != self._tenure
        self._tenure = self._term.acquired_at
        return True

    def confirm(self) -> bool:
        """Renew the lease if this holder had it at its last look; True when it still has it.

        Raises: StoreUnavailable, StoreRefused.
        """
        return self.held and self.keep()

    def release(self) -> None:
        """Give the lease up (see :meth:`Lease.release`). Raises: StoreUnavailable, StoreRefused."""
        self._term = None
        self.lease.release()
