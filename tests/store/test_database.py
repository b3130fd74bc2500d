"""Database transactions on SQLite: committed or rolled back whole, writers holding the write
lock from their first statement, readers on a snapshot beside them."""

from __future__ import annotations

import sqlite3

import pytest

from signserver.store.database import Database

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def database(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    with database.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE entries (n INTEGER)")
    yield database
    database.engine.dispose()


def count(database: Database) -> int:
    with database.read() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()


def outsider(database: Database) -> sqlite3.Connection:
    """Another connection, as another process would hold, that never waits for a lock."""
    connection = sqlite3.connect(database.url.split("///", 1)[1], timeout=0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout=0")
    return connection


def test_a_transaction_commits_on_success_and_rolls_back_whole_on_error(database):
    with database.transaction() as conn:
        conn.exec_driver_sql("INSERT INTO entries VALUES (1)")
    with pytest.raises(RuntimeError):
        with database.transaction() as conn:
            conn.exec_driver_sql("INSERT INTO entries VALUES (2)")
            raise RuntimeError("fails half-way")
    assert count(database) == 1


def test_a_writer_holds_the_write_lock_from_its_first_statement(database):
    other = outsider(database)
    with database.transaction() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()  # has read, not yet written
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free once committed
    other.execute("ROLLBACK")
    other.close()


def test_a_reader_sees_one_snapshot_and_does_not_stop_writers(database):
    other = outsider(database)
    with database.read() as conn:
        before = conn.exec_driver_sql("SELECT count(*) FROM entries").scalar()
        other.execute("INSERT INTO entries VALUES (1)")  # autocommit: written beside the reader
        assert conn.exec_driver_sql("SELECT count(*) FROM entries").scalar() == before
    assert count(database) == before + 1
    other.close()
