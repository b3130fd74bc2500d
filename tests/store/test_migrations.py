"""Every migration, on the test store (SQLite, or PostgreSQL with SIGNSERVER_TEST_STORE=postgresql):
from an empty database to the newest revision, where the tables are exactly those of schema.py,
then all the way down and up again; and the newest revision the code names without Alembic."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

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
