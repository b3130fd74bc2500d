"""The RA's database: engine set-up, migrations, transactions, and the one place where the
driver's errors become RaErrors."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from signserver.ra.errors import StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun explicitly (BEGIN IMMEDIATE)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class RaDatabase:
    """One engine; ``transaction()`` gives a connection whose work commits together or not at all."""

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite and url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():  # holds personal data: readable by its owner only
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.engine: Engine = create_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def migrate(self) -> None:
        """Bring the schema to the newest migration. Raises: StoreUnavailable."""
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.transaction() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Raises: StoreUnavailable: the database cannot be reached or the work failed in it."""
        try:
            with self.engine.connect() as conn, conn.begin():
                if self.is_sqlite:
                    # pysqlite is in autocommit mode (_sqlite_pragmas): begun here, taking the write
                    # lock at once, so read-then-write work (versions, the audit chain) never races.
                    conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
                yield conn
        except (OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"the RA's database is unavailable: {_reason(exc)}") from exc
        except DBAPIError as exc:
            raise StoreUnavailable(f"the RA's database refused the operation: {_reason(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()


def _reason(exc: Exception) -> str:
    # The driver's class name only: its message may quote parameters (personal data).
    return type(getattr(exc, "orig", None) or exc).__name__
