"""Migration 0005: the failures and locks of accounts move to the lockout kept by name, and back."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text

from signserver.store.database import MIGRATIONS, Database
from tests.conftest import empty_database_url

LOCKED_UNTIL = 4_000_000_000  # far in the future


def insert_account(conn, username: str, failed: int, locked_until: int | None) -> None:
    conn.execute(text(
        "INSERT INTO accounts (username, holder_name, kind, organisation, department, title, status, "
        "password_hash, password_changed_at, failed_attempts, locked_until, otp_seed_sealed, "
        "recovery_code_hash, created_at) VALUES (:u, 'Holder', 'personal', '', '', '', 'active', 'h', 0, "
        ":f, :l, :seed, 'r', 0)"), {"u": username, "f": failed, "l": locked_until, "seed": b"\x00"})


def test_lockout_state_moves_to_the_names_and_back(tmp_path):
    database = Database(empty_database_url(tmp_path / "old.db"))
    migrations = AlembicConfig()
    migrations.set_main_option("script_location", str(MIGRATIONS))
    with database.transaction() as conn:
        migrations.attributes["connection"] = conn
        command.upgrade(migrations, "0004")
        insert_account(conn, "three-failures", 3, None)
        insert_account(conn, "locked-one", 5, LOCKED_UNTIL)
        insert_account(conn, "untouched", 0, None)
        command.upgrade(migrations, "0021")  # 0022 drops the rows kept by name (see test_lockout_names.py)

    with database.read() as conn:
        rows = {r.name: (r.failed_attempts, r.locked_until, r.forget_at)
                for r in conn.execute(text("SELECT * FROM name_lockouts"))}
        account_columns = {c["name"] for c in inspect(conn).get_columns("accounts")}
        attempt_columns = {c["name"] for c in inspect(conn).get_columns("auth_attempts")}
    assert set(rows) == {"three-failures", "locked-one"}
    assert rows["three-failures"][:2] == (3, None) and rows["three-failures"][2] > 0
    assert rows["locked-one"] == (5, LOCKED_UNTIL, LOCKED_UNTIL)
    assert not {"failed_attempts", "locked_until"} & account_columns
    assert attempt_columns == {"id", "name", "started_at"}

    with database.transaction() as conn:
        conn.execute(text("INSERT INTO name_lockouts (name, failed_attempts, locked_until, forget_at) "
                          "VALUES ('nobody-has-this', 2, NULL, 1)"))
        migrations.attributes["connection"] = conn
        command.downgrade(migrations, "0004")
        restored = {r.username: (r.failed_attempts, r.locked_until)
                    for r in conn.execute(text("SELECT username, failed_attempts, locked_until FROM accounts"))}
        tables = set(inspect(conn).get_table_names())
    assert restored == {"three-failures": (3, None), "locked-one": (5, LOCKED_UNTIL), "untouched": (0, None)}
    assert "name_lockouts" not in tables
