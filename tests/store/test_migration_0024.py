"""Migration 0024: the OCSP responder's and TSA's keys that renewals replaced get a table of their
own (``superseded_ca_keys``), beside the authorities, which it leaves as they were; going back
down names the keys it no longer remembers, which are still on the token."""

from __future__ import annotations

import logging

from alembic import command
from sqlalchemy import inspect, text

from signserver.store.database import Database
from tests.conftest import empty_database_url
from tests.store.test_migrations import alembic_config


def test_upgrading_keeps_the_authorities_and_going_down_names_the_superseded_keys_left_on_the_token(tmp_path, caplog):
    database = Database(empty_database_url(tmp_path / "superseded.db"))
    try:
        with database.transaction() as conn:
            command.upgrade(alembic_config(conn), "0023")
            conn.execute(text("INSERT INTO authorities (name, key_id, certificate, created_at) "
                              "VALUES ('issuing', 'ab12', NULL, 1)"))
        with database.transaction() as conn:
            command.upgrade(alembic_config(conn), "0024")
        with database.transaction() as conn:
            assert conn.execute(text("SELECT name, key_id FROM authorities")).all() == [("issuing", "ab12")]
            assert conn.execute(text("SELECT count(*) FROM superseded_ca_keys")).scalar() == 0
            conn.execute(text("INSERT INTO superseded_ca_keys (key_id, role, certificate, superseded_at) "
                              "VALUES ('cd34', 'tsa', NULL, 2)"))

        with caplog.at_level(logging.WARNING), database.transaction() as conn:
            command.downgrade(alembic_config(conn), "0023")
        assert "cd34 (tsa)" in caplog.text and "signserver hsm delete" in caplog.text
        with database.read() as conn:
            assert "superseded_ca_keys" not in inspect(conn).get_table_names()
            assert conn.execute(text("SELECT name, key_id FROM authorities")).all() == [("issuing", "ab12")]
    finally:
        database.dispose()
