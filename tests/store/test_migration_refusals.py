"""Databases the migrations cannot or must not start from are refused with a message that says what
to do, never with a traceback, and leave the database as it was (on the test store: SQLite, or
PostgreSQL with SIGNSERVER_TEST_STORE=postgresql); data survives migrations in both directions."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text

from signserver.errors import ConfigurationError
from signserver.store.database import NEWEST_MIGRATION, Database
from signserver.store.schema import metadata
from tests.conftest import empty_database_url

ACCOUNT = {"id": 1, "username": "holder", "holder_name": "Holder", "kind": "personal", "status": "active",
           "password_hash": "h", "password_changed_at": 1, "otp_seed_sealed": b"\0", "recovery_code_hash": "r",
           "created_at": 1}


@pytest.fixture
def database(tmp_path):
    database = Database(empty_database_url(tmp_path / "refusals.db"))
    yield database
    database.dispose()


def version(database: Database) -> list[str]:
    with database.read() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()


def test_a_database_a_newer_version_upgraded_is_refused_and_left_as_it_is(database):
    database.migrate()
    with database.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    with pytest.raises(ConfigurationError) as refused:
        database.migrate()
    message = str(refused.value)
    assert "0999" in message and NEWEST_MIGRATION in message and "newer version" in message
    assert version(database) == ["0999"]


def test_a_database_with_the_tables_but_no_migration_version_is_refused_and_left_as_it_is(database):
    with database.transaction() as conn:
        metadata.create_all(conn)
        conn.execute(insert(metadata.tables["accounts"]).values(ACCOUNT))
    with pytest.raises(ConfigurationError, match="no migration version"):
        database.migrate()
    with database.read() as conn:
        assert conn.execute(select(metadata.tables["accounts"].c.username)).scalars().all() == ["holder"]


def test_an_upgrade_a_migration_refuses_is_said_and_kept_whole_and_runs_again_once_the_data_is_fixed(database):
    _upgrade_to(database, "0017")
    certificates = metadata.tables["certificates"]
    with database.transaction() as conn:
        conn.execute(insert(metadata.tables["accounts"]).values(ACCOUNT))
        for serial, predecessor in (("01", None), ("02", "01"), ("03", "01")):
            conn.execute(insert(certificates).values(
                serial=serial, profile="p", account_id=1, subject="CN=Holder", not_before=1, not_after=2,
                status="valid", predecessor_serial=predecessor, issued_at=1, der=b"\0"))

    with pytest.raises(ConfigurationError) as refused:
        database.migrate()
    assert "renewed twice" in str(refused.value) and ": 01" in str(refused.value)
    assert version(database) == ["0017"]

    with database.transaction() as conn:
        conn.execute(certificates.update().where(certificates.c.serial == "03").values(status="revoked"))
    database.migrate()
    assert version(database) == [NEWEST_MIGRATION]


def test_a_downgrade_and_the_upgrade_after_it_keep_the_rows_that_refer_to_rebuilt_tables(database):
    database.migrate()
    with database.transaction() as conn:
        conn.execute(insert(metadata.tables["accounts"]).values(ACCOUNT))
        conn.execute(insert(metadata.tables["account_emails"]).values(account_id=1, position=0, address="a@b.mo"))
        conn.execute(insert(metadata.tables["credentials"]).values(
            id="credential", account_id=1, key_id="k", key_algorithm="rsa-2048", status="active", created_at=1))
    database.downgrade("0002")  # through 0009 and 0007, which rebuild accounts on SQLite
    assert version(database) == ["0002"]
    assert _kept(database) == (1, 1, 1)
    database.migrate()
    assert _kept(database) == (1, 1, 1)


def test_a_downgrade_to_a_revision_that_is_none_is_refused(database):
    database.migrate()
    with pytest.raises(ConfigurationError, match="0999"):
        database.downgrade("0999")
    assert version(database) == [NEWEST_MIGRATION]


def _kept(database: Database) -> tuple[int, int, int]:
    with database.read() as conn:
        return tuple(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
                     for table in ("accounts", "account_emails", "credentials"))


def _upgrade_to(database: Database, revision: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from signserver.store.database import MIGRATIONS

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def test_a_database_of_the_first_revision_with_data_is_upgraded_to_the_newest_keeping_it(database):
    _upgrade_to(database, "0001")
    with database.transaction() as conn:
        conn.execute(text(
            "INSERT INTO accounts (id, username, holder_name, kind, status, password_hash, password_changed_at, "
            "failed_attempts, locked_until, otp_seed_sealed, recovery_code_hash, created_at) VALUES "
            "(1, 'holder', 'Holder', 'personal', 'active', 'h', 1, 3, NULL, :seed, 'r', 1)"), {"seed": b"\0"})
        conn.execute(text("INSERT INTO account_emails VALUES (1, 0, 'a@b.mo')"))
        conn.execute(text("INSERT INTO applications (id, name, otp_required, all_accounts, status, created_at) "
                          "VALUES (1, 'asp', :t, :t, 'active', 1)"), {"t": True})
        conn.execute(text("INSERT INTO credentials (id, account_id, key_id, key_algorithm, status, created_at) "
                          "VALUES ('credential', 1, 'k', 'ec-p256', 'active', 1)"))
        conn.execute(text("INSERT INTO activation_tokens (token_hash, credential_id, account_id, application_id, "
                          "hash_algorithm, expires_at, created_at) VALUES (:h, 'credential', 1, 1, 'sha256', 9, 1)"),
                     {"h": "ab" * 32})
        conn.execute(text("INSERT INTO activation_token_digests (token_hash, digest) VALUES (:h, :d)"),
                     {"h": "ab" * 32, "d": "cd" * 32})
        conn.execute(text("INSERT INTO audit_log VALUES (1, 1, 'e', 'a', 's', '{}', :z, :h)"),
                     {"z": "0" * 64, "h": "ef" * 32})
        conn.execute(text("UPDATE audit_head SET seq = 1, hash = :h"), {"h": "ef" * 32})
        conn.execute(text("INSERT INTO audit_seals VALUES (1, :h, 1, 'key', :s)"), {"h": "ef" * 32, "s": b"sig"})

    database.migrate()

    with database.read() as conn:
        # Migration 0022 drops the runs of failures (kept by name until then; they last 30 minutes).
        assert conn.execute(text("SELECT COUNT(*) FROM name_lockouts")).scalar() == 0
        assert conn.execute(text("SELECT key_algorithm FROM accounts")).scalars().all() == ["ec-p256"]
        assert conn.execute(text("SELECT key_store FROM credentials")).scalars().all() == ["token"]
        assert conn.execute(text("SELECT number, seq, format FROM audit_seals")).all() == [(1, 1, 1)]
        assert conn.execute(text("SELECT seq, hash FROM audit_log")).all() == [(1, "ef" * 32)]
        assert conn.execute(text("SELECT digest FROM activation_token_digests")).scalars().all() == ["cd" * 32]
        assert conn.execute(text("SELECT COUNT(*) FROM account_emails")).scalar() == 1
        assert conn.execute(text("SELECT one_call_signing FROM applications")).scalar() in (True, 1)
