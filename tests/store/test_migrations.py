"""Every migration, on the test store (SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql):
from an empty database to the newest revision, where the tables are exactly those of schema.py,
then all the way down and up again; and the newest revision the code names without Alembic."""

from __future__ import annotations

import datetime
import logging
import sqlite3
from contextlib import closing

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from signserver.audit.log import AuditLog
from signserver.store.database import MIGRATIONS, NEWEST_MIGRATION, Database
from signserver.store.schema import metadata
from tests.conftest import empty_database_url


def alembic_config(conn) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def differences(conn) -> list:
    """What separates the database's tables from schema.py's (alembic's autogenerate comparison)."""
    return compare_metadata(MigrationContext.configure(conn), metadata)


def test_the_newest_revision_is_schema_py_and_every_migration_goes_down_and_up_again(tmp_path):
    database = Database(empty_database_url(tmp_path / "migrated.db"))
    try:
        database.migrate()
        with database.read() as conn:
            assert differences(conn) == []
            head = ScriptDirectory.from_config(alembic_config(conn)).get_current_head()
            assert MigrationContext.configure(conn).get_current_revision() == head

        with database.transaction() as conn:
            command.downgrade(alembic_config(conn), "base")
        with database.read() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}

        database.migrate()
        with database.read() as conn:
            assert differences(conn) == []
        database.migrate()  # nothing left to do
    finally:
        database.dispose()


def test_the_newest_migration_named_in_the_code_is_alembics_head_and_the_newest_file():
    head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
    newest_file = max(path.name for path in (MIGRATIONS / "versions").glob("[0-9]*.py"))
    assert NEWEST_MIGRATION == head == newest_file.split("_", 1)[0]


def test_a_database_one_migration_behind_is_brought_to_the_newest(tmp_path):
    database = Database(empty_database_url(tmp_path / "behind.db"))
    try:
        assert not database.at_newest_migration()  # no schema at all
        database.migrate()
        assert database.at_newest_migration()
        with database.transaction() as conn:
            command.downgrade(alembic_config(conn), "-1")
        assert not database.at_newest_migration()
        database.migrate()
        with database.read() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == NEWEST_MIGRATION
            assert differences(conn) == []
    finally:
        database.dispose()


@pytest.mark.sqlite_only
def test_on_sqlite_a_digest_row_and_an_audit_record_each_live_in_one_b_tree_and_upgrading_keeps_them(tmp_path,
                                                                                                     caplog):
    database = Database(empty_database_url(tmp_path / "trees.db"))
    try:
        with database.transaction() as conn:
            command.upgrade(alembic_config(conn), "0019")
        _sign_three_times_at_0019(database, tmp_path / "trees.db")
        before = _rows_of_growing_tables(database)
        assert [len(rows) for rows in before] == [3, 3]

        with caplog.at_level(logging.INFO):
            database.migrate()
        assert "copying 3 digest rows and 3 audit records" in caplog.text  # said before a long copy
        assert _rows_of_growing_tables(database) == before
        with database.read() as conn:
            assert differences(conn) == []
            tables = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
            indexes = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
        assert tables["activation_token_digests"].rstrip().endswith("WITHOUT ROWID")
        assert "seq INTEGER NOT NULL" in tables["audit_log"]  # the rowid: no index of its own
        assert not {"sqlite_autoindex_audit_log_1", "sqlite_autoindex_activation_token_digests_1"} & indexes

        with database.transaction() as conn:
            command.downgrade(alembic_config(conn), "0019")
        assert _rows_of_growing_tables(database) == before
        with database.read() as conn:
            indexes = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'")).scalars())
        assert {"sqlite_autoindex_audit_log_1", "sqlite_autoindex_activation_token_digests_1"} <= indexes
    finally:
        database.dispose()


def _sign_three_times_at_0019(database: Database, path) -> None:
    """A token of three digests, two of them spent, and three audit records, as 0019 kept them."""
    # A connection of its own, without foreign keys: the token's credential does not matter here.
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("INSERT INTO activation_tokens (token_hash, credential_id, account_id, application_id, "
                    "hash_algorithm, expires_at, created_at) VALUES (?, 'credential', 1, 1, 'sha256', 99, 1)",
                    ("ab" * 32,))
        raw.executemany("INSERT INTO activation_token_digests (token_hash, digest, used) VALUES (?, ?, ?)",
                        [("ab" * 32, f"{n:02x}" * 32, n < 2) for n in range(3)])
    with database.transaction() as conn:
        AuditLog().append_many(conn, datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone.utc), "signature",
                               "application:asp", "holder", [{"digest": n} for n in range(3)])


def _rows_of_growing_tables(database: Database) -> list[list[tuple]]:
    with database.read() as conn:
        return [[tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
                for table in ("activation_token_digests", "audit_log")]


def test_the_migrated_schema_has_schema_pys_names_and_definitions_of_keys_constraints_and_indexes(tmp_path):
    migrated = Database(empty_database_url(tmp_path / "migrated.db"))
    declared = Database(empty_database_url(tmp_path / "declared.db"))
    try:
        migrated.migrate()
        with declared.transaction() as conn:
            metadata.create_all(conn)
        with migrated.read() as conn:
            found = _keys_constraints_and_indexes(conn)
        with declared.read() as conn:
            expected = _keys_constraints_and_indexes(conn)
        assert found == expected
    finally:
        migrated.dispose()
        declared.dispose()


def _keys_constraints_and_indexes(conn) -> dict[str, list]:
    """Per table of schema.py: its constraints and indexes as the database itself states them,
    names included (what alembic's comparison leaves out: names of keys, partial indexes' conditions,
    column defaults, SQLite's table options)."""
    described = {}
    for table in sorted(metadata.tables):
        if conn.dialect.name == "postgresql":
            described[table] = sorted(tuple(row) for row in conn.execute(text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                "UNION ALL SELECT indexname, indexdef FROM pg_indexes WHERE tablename = CAST(:t AS name) "
                "UNION ALL SELECT column_name, column_default FROM information_schema.columns "
                "WHERE table_name = CAST(:t AS name) AND column_default IS NOT NULL"), {"t": table}))
        else:
            created = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar()
            described[table] = sorted(
                [(" ".join(sql.split()),) for sql in conn.execute(text(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t AND sql IS NOT NULL"),
                    {"t": table}).scalars()]
                + [tuple(row)[1:] for row in conn.execute(text(f"PRAGMA index_list('{table}')"))
                   if not row[1].startswith("sqlite_autoindex")]
                + [tuple(row)[2:] for row in conn.execute(text(f"PRAGMA foreign_key_list('{table}')"))]
                + [tuple(row)[1:6] for row in conn.execute(text(f"PRAGMA table_info('{table}')"))]
                + [("WITHOUT ROWID", created.rstrip().upper().endswith("WITHOUT ROWID"))])
    return described
