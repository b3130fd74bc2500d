"""The RA's migrations from an older schema with rows in it (SQLite, or PostgreSQL with
SIGNSERVER_TEST_STORE=postgresql): the spent single-use ids keep being spent across the rename of
their table, the outbox's messages gain an empty last error, renewals have no application signing
under way, and each goes down again."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.autogenerate import compare_metadata
from sqlalchemy import inspect, text

from signserver.ra.store import repository
from signserver.ra.store.database import MIGRATIONS
from signserver.ra.store.schema import metadata
from tests.ra.conftest import KUAN, START, opened_renewal


def _alembic(conn) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def test_the_spent_single_use_ids_move_to_their_renamed_table(ra_database):
    with ra_database.transaction() as conn:
        command.downgrade(_alembic(conn), "ra0006")
    with ra_database.transaction() as conn:
        assert "ra_web_spent_captchas" in inspect(conn).get_table_names()
        conn.execute(text("INSERT INTO ra_web_spent_captchas (challenge, expires_at) VALUES "
                          "('captcha-1', 1000), ('form-2', 2000)"))
    ra_database.migrate()
    with ra_database.transaction() as conn:
        names = inspect(conn).get_table_names()
        assert "ra_web_spent_captchas" not in names and "ra_web_spent_single_use_ids" in names
        rows = conn.execute(text("SELECT single_use_id, expires_at FROM ra_web_spent_single_use_ids "
                                 "ORDER BY single_use_id")).all()
        assert [tuple(r) for r in rows] == [("captcha-1", 1000), ("form-2", 2000)]
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": "ra_alembic_version"}),
                                metadata) == []
        command.downgrade(_alembic(conn), "ra0006")
    with ra_database.transaction() as conn:
        rows = conn.execute(text("SELECT challenge FROM ra_web_spent_captchas ORDER BY challenge")).all()
        assert [r[0] for r in rows] == ["captcha-1", "form-2"]
    ra_database.migrate()


def test_the_outbox_s_messages_gain_an_empty_last_error(ra_database):
    with ra_database.transaction() as conn:
        command.downgrade(_alembic(conn), "ra0007")
    with ra_database.transaction() as conn:
        assert "last_error" not in [c["name"] for c in inspect(conn).get_columns("ra_outbox")]
        conn.execute(text("INSERT INTO ra_outbox (created_at, recipient, subject, body, attempts, next_attempt_at) "
                          "VALUES (1, 'kuan@example.mo', 'Subject', 'Body', 2, 5)"))
    ra_database.migrate()
    with ra_database.transaction() as conn:
        row = conn.execute(text("SELECT recipient, attempts, last_error FROM ra_outbox")).one()
        assert tuple(row) == ("kuan@example.mo", 2, "")


def test_the_outbox_s_older_messages_name_no_renewal_and_are_not_dismissed(ra_database):
    with ra_database.transaction() as conn:
        command.downgrade(_alembic(conn), "ra0009")
    with ra_database.transaction() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("ra_outbox")]
        assert "renewal_id" not in columns and "dismissed_at" not in columns
        conn.execute(text("INSERT INTO ra_outbox (created_at, recipient, subject, body, attempts, next_attempt_at, "
                          "last_error, given_up_at) VALUES (1, 'kuan@example.mo', 'Subject', '', 2, 5, '550', 9)"))
    ra_database.migrate()
    with ra_database.transaction() as conn:
        row = conn.execute(text("SELECT recipient, given_up_at, renewal_id, dismissed_at, dismissed_by "
                                "FROM ra_outbox")).one()
        assert tuple(row) == ("kuan@example.mo", 9, None, None, None)
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": "ra_alembic_version"}),
                                metadata) == []
        command.downgrade(_alembic(conn), "ra0009")
    with ra_database.transaction() as conn:
        assert "renewal_id" not in [c["name"] for c in inspect(conn).get_columns("ra_outbox")]
        conn.execute(text("DELETE FROM ra_outbox"))
    ra_database.migrate()


def test_renewals_made_before_have_no_application_signing_under_way(ra_database):
    renewal = opened_renewal(ra_database, KUAN, START)
    with ra_database.transaction() as conn:
        command.downgrade(_alembic(conn), "ra0010")
    with ra_database.transaction() as conn:
        assert "application_signing_until" not in [c["name"] for c in inspect(conn).get_columns("ra_renewals")]
    ra_database.migrate()
    with ra_database.transaction() as conn:
        again = repository.get_renewal(conn, renewal.id)
        assert again.application_signing_until is None and again.version == renewal.version
        assert compare_metadata(MigrationContext.configure(conn, opts={"version_table": "ra_alembic_version"}),
                                metadata) == []
