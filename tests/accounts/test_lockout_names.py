"""The lockout keeps a name only as its keyed hash: what was typed into the account field (a
password, often) is written nowhere in the database, on SQLite (the file's bytes) or PostgreSQL
(every row of every table), and the name still locks after 5 failures and is let go 30 minutes
later."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from signserver.errors import AccountLocked, AuthenticationFailed
from signserver.secret import Secret
from tests.conftest import enrol

TYPED = "Typed-Passw0rd-In-The-Name"  # a password, typed into the account field


def auth(service, username, password="Wrong-password-1"):
    return service.accounts._authenticator.authenticate(username, Secret(password), "123456", True, "test")


def stored_bytes(database) -> bytes:
    """Everything the database holds: on SQLite the bytes of its files (deleted rows included,
    until SQLite reuses their pages), on PostgreSQL the text of every row of every table."""
    if database.engine.dialect.name == "sqlite":
        database.engine.dispose()  # closed: what the write-ahead log held is in the file now
        path = Path(database.engine.url.database)
        return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists())
    with database.read() as conn:
        tables = inspect(conn).get_table_names()
        return "\n".join(repr(row) for table in tables
                         for row in conn.execute(text(f'SELECT * FROM "{table}"')).all()).encode("utf-8")


def test_a_name_tried_is_kept_nowhere_in_the_database_and_still_locks(fresh_service, clock):
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, TYPED)
    with pytest.raises(AccountLocked):
        auth(fresh_service, TYPED)
    assert fresh_service.accounts.lock_state(TYPED).locked_until is not None
    stored = stored_bytes(fresh_service.database)
    assert TYPED.encode("utf-8") not in stored
    assert TYPED.lower().encode("utf-8") not in stored.lower()

    clock.advance(minutes=29)
    with pytest.raises(AccountLocked):
        auth(fresh_service, TYPED)
    clock.advance(minutes=1)
    with pytest.raises(AuthenticationFailed):  # let go: a wrong guess again, counted anew
        auth(fresh_service, TYPED)
    assert fresh_service.accounts.lock_state(TYPED).failed_attempts == 1
    assert TYPED.encode("utf-8") not in stored_bytes(fresh_service.database)


def test_names_lock_apart_as_typed(fresh_service, clock):
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, TYPED)
    with pytest.raises(AuthenticationFailed):  # another name: its own run
        auth(fresh_service, TYPED.lower())
    assert fresh_service.accounts.lock_state(TYPED.lower()).failed_attempts == 1
    assert fresh_service.accounts.lock_state(TYPED).failed_attempts == 5


def test_an_accounts_lock_shows_on_the_account_and_an_unlock_lifts_it(fresh_service, clock):
    created, _ = enrol(fresh_service)
    name = created.account.username
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name)
    account = fresh_service.accounts.get(name)
    assert account.failed_attempts == 5 and account.locked_until is not None
    assert [a.failed_attempts for a in fresh_service.accounts.list() if a.username == name] == [5]
    fresh_service.accounts.reset_password(name, Secret("Another-Passw0rd"), operator="operator:test")
    assert fresh_service.accounts.get(name).locked_until is None
    assert fresh_service.accounts.lock_state(name).failed_attempts == 0


def test_the_upgrade_drops_the_names_the_lockout_kept(tmp_path):
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from signserver.store.database import MIGRATIONS, Database
    from tests.conftest import empty_database_url

    database = Database(empty_database_url(tmp_path / "old.db"))
    migrations = AlembicConfig()
    migrations.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as conn:
        migrations.attributes["connection"] = conn
        command.upgrade(migrations, "0021")
        conn.execute(text("INSERT INTO name_lockouts (name, failed_attempts, locked_until, forget_at) "
                          "VALUES (:n, 2, NULL, 4000000000)"), {"n": TYPED})
        conn.execute(text("INSERT INTO auth_attempts (id, name, started_at) VALUES ('a', :n, 1)"), {"n": TYPED})
    database.migrate()
    with database.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM name_lockouts")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM auth_attempts")).scalar() == 0
    assert TYPED.encode("utf-8") not in stored_bytes(database)
    database.dispose()
