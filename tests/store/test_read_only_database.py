"""A database opened read-only is read as it is and never changed, not even by opening it: on
SQLite its file (header, mode, what lies beside it) stays as it was; on PostgreSQL the server
refuses every write of its sessions. Its own writing methods refuse at once, saying why."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.exc import DBAPIError

from signserver.errors import ConfigurationError, StoreUnavailable
from signserver.store.database import Database
from tests.conftest import ON_POSTGRESQL, database_url

metadata = MetaData()
entries = Table("entries", metadata, Column("n", Integer, nullable=False))

sqlite_only = pytest.mark.sqlite_only


def snapshot(path: Path) -> tuple:
    """The file's SHA-256, its mode, its header's journal bytes (18-19: 01 01 rollback journal,
    02 02 WAL) and what lies beside it in its directory."""
    data = path.read_bytes()
    return (hashlib.sha256(data).hexdigest(), stat.S_IMODE(path.stat().st_mode), data[18:20].hex(),
            sorted(p.name for p in path.parent.iterdir()))


def sqlite_file(path: Path, journal_mode: str) -> Path:
    """A SQLite file with a few rows, in ``journal_mode``, readable by others (as a copy may be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA journal_mode={journal_mode}")
        connection.execute("CREATE TABLE entries (n INTEGER NOT NULL)")
        connection.executemany("INSERT INTO entries VALUES (?)", [(n,) for n in range(10)])
    connection.close()  # WAL: the last connection folds the log into the file and removes it
    os.chmod(path, 0o644)
    return path


def read_all(database: Database) -> list[int]:
    with database.read() as conn:
        return conn.execute(select(entries.c.n)).scalars().all()


@pytest.fixture
def written(tmp_path):
    """A database of the test store with a few rows; its URL."""
    url = database_url(tmp_path / "read-only.db")
    database = Database(url)
    metadata.create_all(database.engine)
    with database.transaction() as conn:
        conn.execute(insert(entries), [{"n": n} for n in range(3)])
    database.engine.dispose()
    return url


def test_reads_work_and_the_writing_methods_refuse(written):
    database = Database(written, read_only=True)
    try:
        assert read_all(database) == [0, 1, 2]
        with pytest.raises(ConfigurationError, match="opened read-only"):
            with database.transaction():
                pass
        with pytest.raises(ConfigurationError, match="opened read-only"):
            with database.statements():
                pass
        with pytest.raises(ConfigurationError, match="opened read-only"):
            database.downgrade("base")
        assert database.checkpoint_in_background(run_here=True) is None
        assert read_all(database) == [0, 1, 2]
    finally:
        database.engine.dispose()


def test_a_write_past_the_refusals_is_refused_by_the_database(written):
    """Not only the methods: a statement sent on the engine's own connection is refused too (on
    PostgreSQL, by the server: its sessions are read-only, read_only_sql_transaction)."""
    database = Database(written, read_only=True)
    try:
        with pytest.raises(DBAPIError) as refused:
            with database.engine.connect() as conn:
                conn.execute(insert(entries).values(n=99))
                conn.commit()
        if ON_POSTGRESQL:
            assert refused.value.orig.sqlstate == "25006", refused.value
        else:
            assert "readonly database" in str(refused.value.orig), refused.value
    finally:
        database.engine.dispose()
    assert read_all(Database(written)) == [0, 1, 2]


@sqlite_only
def test_a_rollback_journal_copy_stays_byte_for_byte_as_it_was(tmp_path):
    path = sqlite_file(tmp_path / "backup" / "copy.db", "DELETE")
    before = snapshot(path)
    assert before[1:3] == (0o644, "0101")
    database = Database(f"sqlite:///{path}", read_only=True)
    assert read_all(database) == list(range(10))
    database.engine.dispose()
    assert snapshot(path) == before  # no WAL, no 0600, no -wal, -shm nor writer lock beside it


@sqlite_only
def test_a_wal_copy_is_read_unchanged_through_the_files_sqlite_makes_beside_it(tmp_path):
    """SQLite reads a database in WAL mode only through its -wal and -shm files (the log and its
    index in shared memory), and makes them when they are not there, even to read: the file itself
    stays as it was, the log stays empty."""
    path = sqlite_file(tmp_path / "backup" / "copy.db", "WAL")
    before = snapshot(path)
    assert before[2:] == ("0202", ["copy.db"])
    database = Database(f"sqlite:///{path}", read_only=True)
    assert read_all(database) == list(range(10))
    database.engine.dispose()
    after = snapshot(path)
    assert after[:3] == before[:3]
    assert after[3] == ["copy.db", "copy.db-shm", "copy.db-wal"]
    assert Path(f"{path}-wal").stat().st_size == 0


@sqlite_only
def test_a_live_wal_database_is_read_beside_its_writer(tmp_path):
    path = tmp_path / "live.db"
    writer = Database(f"sqlite:///{path}")
    metadata.create_all(writer.engine)
    reader = Database(f"sqlite:///{path}", read_only=True)
    try:
        for n in range(3):
            with writer.transaction() as conn:
                conn.execute(insert(entries).values(n=n))
            assert read_all(reader) == list(range(n + 1))  # every commit seen, none waited for
    finally:
        reader.engine.dispose()
        writer.engine.dispose()


@sqlite_only
def test_nothing_is_made_where_there_is_no_database(tmp_path):
    path = tmp_path / "missing" / "signserver.db"
    database = Database(f"sqlite:///{path}", read_only=True)
    with pytest.raises(StoreUnavailable, match=f"no database at {path}"):
        read_all(database)
    with pytest.raises(ConfigurationError, match=f"no database at {path}"):
        database.current_migration()
    assert not path.parent.exists()
