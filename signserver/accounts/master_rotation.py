"""MasterRotation: a new master key, every package moved under it, and the old key destroyed.

A rotation generates the next master key (``signserver-master-N``) on the token and makes it the
active one: new packages are wrapped by it at once, and the one it replaces becomes "retiring".
A retiring master's packages move under the active key twice over: on their next use (Authorize
re-wraps a stale package, see SigningPackages.rewrap_if_stale) and by the re-wrap pass, which the
server's background work runs a batch at a time and an administrator can run to the end. Only
the 40-byte package key is re-wrapped: the private key stays sealed to its holder, so the pass
needs no holder's secret. A retiring master no package needs any more is retired: its row says
so and its key is destroyed on the token. Not before its grace has passed: the rotation (or the
activation) that made it retiring records on its row when the grace it was given ends
(``retire_after``), and every process's retirement honours that, as well as its own grace from
the activation of the active key: a server's background work beside `rotate --grace-seconds 600`
waits the 600 s too.

With several tokens that do not share their storage (a second site, a second node's own token),
a rotation is prepared first (the key made, not yet used), copied to every other token with the
key ceremony (signserver/hsm/ceremony.py), and only then activated: a package re-wrapped under a
key that some token lacks cannot be used through that token.

Whoever makes a master key (a rotation, the server's first start making the first) holds the
database's master-key creation lock from choosing its label to recording it (see
:func:`creating_master_key`): processes on one token and one database take turns, so two never make
two keys under one label. A process that stops with its key made but not recorded leaves a key the
database never recorded, which `signserver hsm master status` lists as unrecorded and
`retire --orphans` destroys; the next rotation takes the label after it.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import math
import os
import threading
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import Connection, func, insert, make_url, select, text, update

from signserver.accounts.packages import SigningPackages
from signserver.audit.log import AuditLog
from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.errors import AlreadyExists, DataCorrupted, InvalidArgument, KeyNotFound, NotFound, StoreUnavailable
from signserver.hsm.master_keys import MASTER_LABEL_PREFIX, MasterKeys, master_label
from signserver.store.database import Database
from signserver.store.schema import master_keys, signing_packages

log = logging.getLogger(__name__)

ACTIVE, PENDING, RETIRING, RETIRED = "active", "pending", "retiring", "retired"

# A package made under the old master a moment before the rotation may be stored a moment after
# it (key generation, then the caller's own transaction): the old key is not retired until this
# long after the rotation, so that such a package is found by a later pass first.
RETIRE_GRACE = datetime.timedelta(seconds=60)

BACKGROUND_ROUND = 100  # packages a background round re-wraps: each holds the PKCS#11 lock a moment
MAX_REPORTED_FAILURES = 20  # key ids kept in a pass's counts; the rest are only counted

Progress = Callable[[int, int, float], None]  # (re-wrapped so far, packages to re-wrap, per second)

# The master-key creation lock (creating_master_key): PostgreSQL's transaction-scoped advisory lock
# of this key (any constant of this application's own, not the migrations'), or on SQLite an flock
# on a file beside the database.
MASTER_KEY_CREATION_LOCK = 0x5167_4D4B
# How long a maker of a master key waits for another's turn to end: that one makes a key on the
# token and records it, waiting for the database's write lock at most its busy timeout (30 s).
CREATION_WAIT_SECONDS = 120.0


@dataclass(frozen=True)
class MasterStatus:
    """A master key as the database knows it, and whether this token holds it."""

    label: str
    state: str  # active | pending | retiring | retired
    check_value: str
    created_at: datetime.datetime
    retired_at: datetime.datetime | None
    packages: int  # packages it wraps (destroyed packages not counted)
    on_token: str  # "yes", "no", or "different key" (same label, another check value)
    retire_after: datetime.datetime | None = None  # a retiring key: when its rotation's grace ends


@dataclass
class RewrapCounts:
    """What one re-wrap pass did."""

    rewrapped: int = 0
    already_moved: int = 0  # re-wrapped meanwhile on their next use
    failed: int = 0  # did not re-wrap (the package is altered, or its master is not on this token)
    failed_key_ids: list[str] = field(default_factory=list)  # the first MAX_REPORTED_FAILURES
    remaining: int = 0  # packages still under a retiring master after the pass


class MasterRotation:
    """Rotates master keys, re-wraps packages under the active one, and retires the old ones."""

    def __init__(self, database: Database, packages: SigningPackages, masters: MasterKeys, audit: AuditLog,
                 clock: Clock, retire_grace: datetime.timedelta = RETIRE_GRACE):
        self._database = database
        self._packages = packages
        self._masters = masters
        self._audit = audit
        self._clock = clock
        self._retire_grace = retire_grace
        self._cursor = ""  # where the bounded (background) pass resumes: a key id
        self._reported: set[str] = set()  # packages whose failure this process already logged

    # --- rotation -------------------------------------------------------------------------

    def rotate(self, operator: str, activate: bool = True) -> str:
        """Generate the next master key on the token and (with ``activate``) make it the active
        one, the active one becoming retiring; without, it waits as "pending" for :meth:`activate`
        (once the key ceremony copied it to the other tokens). Returns its label.

        Raises: ConfigurationError: no master key yet (the server makes the first one).
            KeyNotFound: the key it made was destroyed before it was recorded. StoreUnavailable:
            another process went on making a master key for CREATION_WAIT_SECONDS (nothing made
            here). HsmError.
        """
        # From choosing the label to recording the key, one maker of master keys at a time: two
        # rotations at once would both find the same label free and both make a key under it.
        with creating_master_key(self._database) as creation:
            with creation.reading() as conn:
                self._packages.active_master(conn)  # a rotation replaces a master: there must be one
                labels = list(conn.execute(select(master_keys.c.label)).scalars())
            number = 1 + max((_number(label) for label in labels), default=0)
            while True:
                label = master_label(number)
                try:
                    info = self._masters.create(label)
                    break
                except AlreadyExists:  # left by a rotation that stopped before recording it: never reuse a key
                    number += 1
            now = self._clock.now()
            with creation.recording() as conn:
                lock_master_keys(conn)
                # Recorded only while the key is there: `retire --orphans` destroys keys nobody
                # recorded, under the same lock, and may have taken this one for such a key.
                if not self._masters.present(label):
                    raise KeyNotFound(f"the master key {label} this rotation made is no longer on the token "
                                      "(destroyed as unrecorded meanwhile?): nothing was rotated; rotate again")
                previous = None
                if activate:
                    previous = conn.execute(select(master_keys.c.label)
                                            .where(master_keys.c.state == ACTIVE)).scalar()
                    conn.execute(update(master_keys).where(master_keys.c.state == ACTIVE)
                                 .values(state=RETIRING, retire_after=self._grace_end(now)))
                conn.execute(insert(master_keys).values(label=label, check_value=info.check_value,
                                                        state=ACTIVE if activate else PENDING,
                                                        created_at=epoch_seconds(now)))
                self._audit.append(conn, now, "master_key.rotated" if activate else "master_key.prepared",
                                   operator, label, check_value=info.check_value, replaces=previous)
        log.info("master key %s %s (check value %s)", label, "active" if activate else "prepared", info.check_value)
        return label

    def activate(self, label: str, operator: str) -> None:
        """Make the pending master key ``label`` the active one; the active one becomes retiring.

        Raises: NotFound: no pending master key of that label. KeyNotFound: this token does not
            hold it, or holds another key of its label (copy it with the key ceremony). HsmError.
        """
        with self._database.read() as conn:
            row = conn.execute(select(master_keys).where(master_keys.c.label == label)).first()
        if row is None or row.state != PENDING:
            raise NotFound(f"no pending master key {label!r} (see `signserver hsm master status`)")
        self._check_on_token(label, row.check_value)
        now = self._clock.now()
        with self._database.transaction() as conn:
            previous = conn.execute(select(master_keys.c.label).where(master_keys.c.state == ACTIVE)).scalar()
            if conn.execute(update(master_keys).where(master_keys.c.label == label, master_keys.c.state == PENDING)
                            .values(state=ACTIVE, created_at=epoch_seconds(now))).rowcount != 1:
                raise NotFound(f"the master key {label!r} is no longer pending")
            conn.execute(update(master_keys).where(master_keys.c.state == ACTIVE, master_keys.c.label != label)
                         .values(state=RETIRING, retire_after=self._grace_end(now)))
            self._audit.append(conn, now, "master_key.rotated", operator, label, check_value=row.check_value,
                               replaces=previous)
        log.info("master key %s active", label)

    def _grace_end(self, now: datetime.datetime) -> int:
        """When the grace this rotation was given ends, as recorded on the key it makes retiring:
        rounded up, so that the key is never retired before then."""
        return math.ceil((now + self._retire_grace).timestamp())

    # --- the re-wrap pass -----------------------------------------------------------------

    def rewrap_pass(self, batch: int = 200, progress: Progress | None = None,
                    limit: int | None = None) -> RewrapCounts:
        """Re-wrap the packages of retiring master keys under the active one, ``batch`` at a time.

        Without ``limit`` the pass runs to the end; with it, it re-wraps at most ``limit``
        packages, resuming where the previous bounded pass of this object stopped (the server's
        background work). A package that does not re-wrap is counted, logged once and left under
        its master key, which then stays; the pass goes on.

        Raises: InvalidArgument: batch or limit below 1. ConfigurationError: no active master key.
            StoreUnavailable, HsmError (the token does not answer: the pass stops).
        """
        if batch < 1 or (limit is not None and limit < 1):
            raise InvalidArgument("a re-wrap batch and limit are at least 1")
        counts = RewrapCounts()
        with self._database.read() as conn:
            retiring = list(conn.execute(select(master_keys.c.label).where(master_keys.c.state == RETIRING)).scalars())
            if not retiring:
                return counts
            total = self._needing(conn, retiring)
        cursor = self._cursor if limit is not None else ""
        started, done = time.monotonic(), 0
        while limit is None or done < limit:
            size = batch if limit is None else min(batch, limit - done)
            with self._database.read() as conn:
                key_ids = list(conn.execute(
                    select(signing_packages.c.key_id)
                    .where(signing_packages.c.master_label.in_(retiring), signing_packages.c.key_id > cursor,
                           signing_packages.c.wrapped_package_key.is_not(None))
                    .order_by(signing_packages.c.key_id).limit(size)).scalars())
            if not key_ids:
                cursor = ""  # the end: a later bounded pass starts again from the beginning
                break
            for key_id in key_ids:
                self._rewrap_one(key_id, counts)
            done += len(key_ids)
            cursor = key_ids[-1]
            if progress is not None:
                elapsed = time.monotonic() - started
                progress(counts.rewrapped + counts.already_moved, total, done / elapsed if elapsed > 0 else 0.0)
        if limit is not None:
            self._cursor = cursor
        with self._database.read() as conn:
            counts.remaining = self._needing(conn, retiring)
        if counts.rewrapped:
            log.info("re-wrapped %d packages under the active master key (%d failed, %d remain)",
                     counts.rewrapped, counts.failed, counts.remaining)
        return counts

    def _rewrap_one(self, key_id: str, counts: RewrapCounts) -> None:
        try:
            if self._packages.rewrap_if_stale(key_id):
                counts.rewrapped += 1
            else:
                counts.already_moved += 1
        except (DataCorrupted, KeyNotFound) as exc:
            counts.failed += 1
            if len(counts.failed_key_ids) < MAX_REPORTED_FAILURES:
                counts.failed_key_ids.append(key_id)
            if key_id not in self._reported:
                self._reported.add(key_id)
                log.warning("signing data package %s was not re-wrapped: %s", key_id, exc)

    def background_round(self, limit: int = BACKGROUND_ROUND) -> RewrapCounts:
        """One round of the server's background work: a bounded part of the re-wrap pass, then
        the retirement of master keys no package needs.

        Raises: as :meth:`rewrap_pass` and :meth:`retire_unused`.
        """
        counts = self.rewrap_pass(batch=limit, limit=limit)
        self.retire_unused("server:background")
        return counts

    # --- retirement -----------------------------------------------------------------------

    def retire_unused(self, operator: str) -> list[str]:
        """Retire every retiring master key that no package needs, once the grace after the
        rotation has passed, and destroy it on this token. Returns the labels retired.

        The grace is the later of this object's own, from the active key's activation, and the
        one recorded on the retiring key's row by the rotation that made it retiring (its
        ``retire_after``, which the rotating command's ``--grace-seconds`` set): a process whose
        grace is shorter than the rotation's waits for the rotation's.

        Checked and recorded in one transaction: a master key that a package still names (one
        that failed to re-wrap, or was stored late) is never retired.

        Raises: StoreUnavailable, HsmError.
        """
        now = self._clock.now()
        with self._database.read() as conn:
            active_since = conn.execute(select(master_keys.c.created_at).where(master_keys.c.state == ACTIVE)).scalar()
            retiring = list(conn.execute(select(master_keys.c.label).where(master_keys.c.state == RETIRING)).scalars())
        if not retiring or active_since is None or now - from_epoch(active_since) < self._retire_grace:
            return []
        retired = []
        for label in retiring:
            with self._database.transaction() as conn:
                # The key's row is locked before its packages are counted (PostgreSQL): a package
                # being stored under it (insert_package) is either committed, and counted, or
                # waits for this retirement and is refused.
                row = conn.execute(select(master_keys.c.retire_after).where(master_keys.c.label == label,
                                                                          master_keys.c.state == RETIRING)
                                   .with_for_update()).first()
                if row is None or (row.retire_after is not None and now < from_epoch(row.retire_after)):
                    continue
                if self._needing(conn, [label]):
                    continue
                if conn.execute(update(master_keys).where(master_keys.c.label == label,
                                                          master_keys.c.state == RETIRING)
                                .values(state=RETIRED, retired_at=epoch_seconds(now))).rowcount != 1:
                    continue
                self._audit.append(conn, now, "master_key.retired", operator, label)
            retired.append(label)
            self._destroy_on_token(label)
        return retired

    def grace_left(self) -> datetime.timedelta:
        """How long until the grace of every master key retiring now has passed (the later of this
        object's own after the active key's activation and each key's ``retire_after``); zero when
        it has, or none is retiring. A key a package still needs stays even then.

        Raises: StoreUnavailable.
        """
        with self._database.read() as conn:
            active_since = conn.execute(select(master_keys.c.created_at).where(master_keys.c.state == ACTIVE)).scalar()
            ends = list(conn.execute(select(master_keys.c.retire_after)
                                     .where(master_keys.c.state == RETIRING)).scalars())
        if not ends:
            return datetime.timedelta(0)
        now = self._clock.now()
        ends_at = [from_epoch(end) for end in ends if end is not None]
        if active_since is not None:
            ends_at.append(from_epoch(active_since) + self._retire_grace)
        return max([datetime.timedelta(0), *(end - now for end in ends_at)])

    def destroy_retired(self) -> list[str]:
        """Destroy on this token every retired master key it still holds (a token of another site,
        or a destruction that failed after the key was retired). Returns the labels destroyed.

        Searches the token once per retired key: for administrators, not for request paths.

        Raises: StoreUnavailable, HsmError.
        """
        with self._database.read() as conn:
            retired = list(conn.execute(select(master_keys.c.label).where(master_keys.c.state == RETIRED)).scalars())
        return [label for label in retired if self._destroy_on_token(label)]

    def _destroy_on_token(self, label: str) -> bool:
        try:
            self._masters.destroy(label)
            return True
        except KeyNotFound:
            return False  # not on this token (another site's, or destroyed already)

    # --- status ---------------------------------------------------------------------------

    def status(self) -> list[MasterStatus]:
        """Every master key the database knows, oldest first, with its packages and whether this
        token holds it. Searches the token for keys it does not hold: for administrators.

        Raises: StoreUnavailable, HsmError.
        """
        with self._database.read() as conn:
            rows = conn.execute(select(master_keys).order_by(master_keys.c.created_at, master_keys.c.label)).all()
            counts = dict(conn.execute(
                select(signing_packages.c.master_label, func.count())
                .where(signing_packages.c.wrapped_package_key.is_not(None))
                .group_by(signing_packages.c.master_label)).all())
        return [MasterStatus(label=row.label, state=row.state, check_value=row.check_value,
                             created_at=from_epoch(row.created_at),
                             retired_at=from_epoch(row.retired_at) if row.retired_at is not None else None,
                             packages=counts.get(row.label, 0), on_token=self._on_token(row.label, row.check_value),
                             retire_after=from_epoch(row.retire_after) if row.retire_after is not None else None)
                for row in rows]

    def _on_token(self, label: str, check_value: str) -> str:
        try:
            info = self._masters.describe(label)
        except KeyNotFound:
            return "no"
        return "yes" if info.check_value == check_value else "different key"

    def _check_on_token(self, label: str, check_value: str) -> None:
        on_token = self._on_token(label, check_value)
        if on_token != "yes":
            raise KeyNotFound(
                f"this token {'holds another key labelled' if on_token == 'different key' else 'lacks'} "
                f"{label!r}: copy it here with the key ceremony first")

    @staticmethod
    def _needing(conn, labels: list[str]) -> int:
        return conn.execute(select(func.count()).select_from(signing_packages).where(
            signing_packages.c.master_label.in_(labels),
            signing_packages.c.wrapped_package_key.is_not(None))).scalar()


def lock_master_keys(conn: Connection) -> None:
    """Take the master-key table's lock for the rest of ``conn``'s write transaction, so that
    recording a new key and destroying keys nobody recorded take turns (on SQLite a write
    transaction holds the database's one write lock already).

    Raises: StoreUnavailable: the lock stays held by another.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE master_keys IN SHARE ROW EXCLUSIVE MODE"))


class MasterKeyCreation:
    """A turn at making a master key (see :func:`creating_master_key`): where its maker reads which
    labels are taken, and where it records the key it made. Record last: on PostgreSQL both are the
    turn's own transaction, committed when the turn ends."""

    def __init__(self, database: Database, connection: Connection | None):
        self._database = database
        self._connection = connection  # PostgreSQL's: the transaction holding the lock

    def reading(self) -> AbstractContextManager[Connection]:
        """A connection to read the master keys recorded, as the previous turn left them."""
        return nullcontext(self._connection) if self._connection is not None else self._database.read()

    def recording(self) -> AbstractContextManager[Connection]:
        """A connection in a write transaction to record the key in (take :func:`lock_master_keys`
        in it first)."""
        return nullcontext(self._connection) if self._connection is not None else self._database.transaction()


_IN_PROCESS = threading.Lock()  # the turns of a database that only this process opens (SQLite in memory)


@contextmanager
def creating_master_key(database: Database) -> Iterator[MasterKeyCreation]:
    """Hold the master-key creation lock of ``database``: between choosing a master key's label
    and recording the key made under it, so that no other process (a rotation, a first start making
    the first key) of the same database makes a key meanwhile. A maker that waits for its turn has
    made nothing yet; it then finds the label the previous one recorded, or on the token the key a
    maker that stopped before recording left (which it never reuses).

    PostgreSQL: a transaction-scoped advisory lock, in the transaction the turn reads and records
    in. SQLite: an flock on a file beside the database (``signserver.db-master-keys.lock``),
    reading and recording in transactions of their own, so that the database's write lock is not
    held while the token makes the key. Either is released when the turn ends, or its process does.

    Raises: StoreUnavailable: another maker kept its turn CREATION_WAIT_SECONDS, or the lock's file
        cannot be opened; the database's errors.
    """
    if not database.is_sqlite:
        with database.transaction() as conn:
            _wait_for_turn(lambda: bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                                     {"key": MASTER_KEY_CREATION_LOCK}).scalar()))
            yield MasterKeyCreation(database, conn)
        return
    path = make_url(database.url).database
    if not path or path == ":memory:" or database.read_only:  # no other process writes it
        with _IN_PROCESS:
            yield MasterKeyCreation(database, None)
        return
    lock_file = Path(f"{path}-master-keys.lock")
    try:
        # Opened for each turn: an flock is the open file's, so threads of one process take turns too.
        descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the master-key creation lock {lock_file}: {exc.strerror}") from None
    try:
        _wait_for_turn(lambda: _flocked(descriptor))
        yield MasterKeyCreation(database, None)
    finally:
        os.close(descriptor)  # releases the lock


def _flocked(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_turn(take: Callable[[], bool]) -> None:
    """Try ``take`` until it takes the lock. Raises: StoreUnavailable: not within CREATION_WAIT_SECONDS."""
    deadline = time.monotonic() + CREATION_WAIT_SECONDS
    pause = 0.01
    while not take():
        if time.monotonic() >= deadline:
            raise StoreUnavailable(f"another process has been making a master key for {CREATION_WAIT_SECONDS:.0f} s "
                                   "(a rotation, or a first start making the first key): try again once it ended")
        time.sleep(pause)
        pause = min(2 * pause, 0.2)


def _number(label: str) -> int:
    suffix = label[len(MASTER_LABEL_PREFIX):] if label.startswith(MASTER_LABEL_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else 0
