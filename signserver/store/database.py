"""The database: engine set-up (SQLite by default, PostgreSQL portable), migrations, transactions."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from signserver.errors import ConfigurationError, StoreUnavailable
from signserver.store.writer_lock import WriterLock

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE, POOL_OVERFLOW = 8, 8  # connections kept per process, and opened beyond them at peaks


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers go on while one process writes; the busy timeout makes writers from
    # several processes wait their turn instead of failing at once.
    dbapi_connection.isolation_level = None  # transactions are begun explicitly below
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, and tighten one that others may read.

    The database holds password hashes, sealed OTP seeds and the audit log; SQLite would create it
    with the process's umask (often 0644). It gives its WAL and shared-memory files the database
    file's own mode, so those follow.

    An existing file is changed by its path only, never opened: closing any descriptor of a
    database file drops every POSIX lock this process holds on it, including those of SQLite's
    own connections, which corrupts the database (SQLite's "How To Corrupt", 2.2).
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return  # a new, empty file: no connection can hold a lock on it yet
    except FileExistsError:
        pass
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & 0o700)
                log.warning("%s was readable by other users (mode %o); it is now %o", file, mode, mode & 0o700)
        except FileNotFoundError:
            pass


class Database:
    """An engine plus the one way to run a transaction against it."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._writers: WriterLock | None = None
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _create_private(Path(path))
                self._writers = WriterLock(Path(f"{path}-writer.lock"))
            self.engine: Engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        # A forked child must not share its parent's connections.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction: committed on success, rolled back on any error.

        Raises: StoreUnavailable: the database cannot be reached or stays locked.
        """
        try:
            with self._writer_turn(), self._begun(writing=True) as connection:
                yield connection
        except OperationalError as exc:
            raise StoreUnavailable(f"the database does not answer: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read-only transaction (it runs beside writers).

        Raises: StoreUnavailable: the database cannot be reached.
        """
        try:
            with self._begun(writing=False) as connection:
                yield connection
        except OperationalError as exc:
            raise StoreUnavailable(f"the database does not answer: {exc.orig}") from exc

    def _writer_turn(self):
        return self._writers.held() if self._writers is not None else nullcontext()

    @contextmanager
    def _begun(self, writing: bool) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            if self.is_sqlite:
                # pysqlite is left in autocommit mode (see _sqlite_pragmas) and transactions are
                # begun here, straight at the driver (twice for every signature). A writing one
                # takes the write lock as it starts: read-then-write transactions (lockout
                # counters, the audit chain) then never race another process, nor fail on
                # upgrading a read lock. Reads begin deferred and run beside writers (WAL).
                connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if writing else "BEGIN")
            yield connection

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent).

        Raises: ConfigurationError: the database cannot be reached.
        """
        # Alembic is needed once, at start-up: server workers need not carry it.
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self._writer_turn(), self._begun(writing=True) as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ConfigurationError("database.url", f"cannot open the database: {exc.orig}") from exc

    def dispose(self) -> None:
        """Close pooled connections (call in a forked child before first use)."""
        self.engine.dispose(close=False)
