"""The database: engine set-up (SQLite by default, PostgreSQL portable), migrations, transactions."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from signserver.errors import ConfigurationError, StoreUnavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock when the transaction starts: read-then-write transactions (lockout
    # counters, the audit chain) then never race another process, and never fail on upgrade.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine plus the one way to run a transaction against it."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # One connection per use: SQLite connections are cheap, and this stays fork-safe.
            self.engine: Engine = create_engine(url, poolclass=NullPool)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction: committed on success, rolled back on any error.

        Raises: StoreUnavailable: the database cannot be reached or stays locked.
        """
        try:
            with self.engine.begin() as connection:
                yield connection
        except OperationalError as exc:
            raise StoreUnavailable(f"the database does not answer: {exc.orig}") from exc

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent).

        Raises: ConfigurationError: the database cannot be reached.
        """
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise ConfigurationError("database.url", f"cannot open the database: {exc.orig}") from exc

    def dispose(self) -> None:
        """Close pooled connections (call in a forked child before first use)."""
        self.engine.dispose(close=False)
