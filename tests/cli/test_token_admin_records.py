"""A token initialised and its PINs changed are appended to the audit log once done (`hsm init`,
`hsm change-pin`, `hsm change-so-pin`, `hsm unblock-pin`): the token's label and serial number,
never a PIN. These commands are never refused for want of a database (a PIN that may have leaked
changes at once; a node's first token comes before its database): with no SQLite file made yet
the command says so and exits 0; a record the database refuses is told loudly and exits 1, the
change made all the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from signserver.store.database import Database
from signserver.store.schema import audit_log
from tests import cli_forkserver
from tests.cli.test_guarded_pin_commands import SO_RIGHT, USER_RIGHT, new_token, slot_of
from tests.conftest import SIGNSERVER, cli_env, requires_softhsm
from tests.refused_writes import writes_refused

pytestmark = [requires_softhsm("tokens of its own, made in SoftHSM's free slot, their PINs changed"),
              pytest.mark.sqlite_only]  # each command's database is a SQLite file of the test's own

NEW_USER, NEW_SO, UNBLOCKED_USER = "user-pin-changed-4", "so-pin-changed-5", "user-pin-set-by-so-6"
INIT_SO, INIT_USER = "so-pin-after-init-7", "user-pin-after-init-8"
EVERY_PIN = (SO_RIGHT, USER_RIGHT, NEW_USER, NEW_SO, UNBLOCKED_USER, INIT_SO, INIT_USER)


def hsm(state_dir, state: Path, *args: str, **env: str):
    environment = {**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(state),
                   "SIGNSERVER_DATABASE_URL": f"sqlite:///{state / 'signserver.db'}", **env}
    return cli_forkserver.run([str(SIGNSERVER), "hsm", *args], env=environment, capture_output=True, text=True,
                              timeout=120)


def made_database(state: Path) -> Database:
    database = Database(f"sqlite:///{state / 'signserver.db'}")
    database.migrate()
    return database


def hsm_records(database: Database) -> list[tuple[str, str, str, dict]]:
    with database.read() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.event.like("hsm.%")).order_by(audit_log.c.seq)).all()
    return [(r.event, r.actor, r.subject, json.loads(r.detail)) for r in rows]


def opens_with(state_dir, state: Path, token: str, user_pin: str) -> bool:
    """Whether the token's user PIN is ``user_pin`` now (a login with it lists the keys)."""
    return hsm(state_dir, state, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=user_pin).returncode == 0


def serial_of(state_dir, state: Path, token: str) -> str:
    slots = hsm(state_dir, state, "slots", "--json")
    assert slots.returncode == 0, slots.stderr
    return next(s["token_serial"] for s in json.loads(slots.stdout) if s["token_label"] == token)


def test_pin_changes_and_an_initialisation_are_recorded_once_made(state_dir, tmp_path):
    token = new_token("recorded-pins")
    database = made_database(tmp_path)
    serial = serial_of(state_dir, tmp_path, token)

    changed = hsm(state_dir, tmp_path, "change-pin", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_RIGHT,
                  SIGNSERVER_HSM_NEW_PIN=NEW_USER)
    so_changed = hsm(state_dir, tmp_path, "change-so-pin", "--token", token, SIGNSERVER_HSM_SO_PIN=SO_RIGHT,
                     SIGNSERVER_HSM_NEW_PIN=NEW_SO)
    unblocked = hsm(state_dir, tmp_path, "unblock-pin", "--token", token, SIGNSERVER_HSM_SO_PIN=NEW_SO,
                    SIGNSERVER_HSM_NEW_PIN=UNBLOCKED_USER)
    outcomes = [changed, so_changed, unblocked]
    assert [o.returncode for o in outcomes] == [0, 0, 0], [o.stderr for o in outcomes]
    assert opens_with(state_dir, tmp_path, token, UNBLOCKED_USER)
    slot = slot_of(state_dir, tmp_path, token)
    initialised = hsm(state_dir, tmp_path, "init", "--label", token, "--slot", str(slot), "--yes",
                      SIGNSERVER_HSM_CURRENT_SO_PIN=NEW_SO, SIGNSERVER_HSM_SO_PIN=INIT_SO,
                      SIGNSERVER_HSM_USER_PIN=INIT_USER)
    assert initialised.returncode == 0, initialised.stderr
    outcomes.append(initialised)

    new_serial = serial_of(state_dir, tmp_path, token)
    assert hsm_records(database) == [
        ("hsm.user_pin_changed", "operator:cli", token, {"token": token, "serial": serial}),
        ("hsm.so_pin_changed", "operator:cli", token, {"token": token, "serial": serial}),
        ("hsm.user_pin_unblocked", "operator:cli", token, {"token": token, "serial": serial}),
        ("hsm.token_initialised", "operator:cli", token,
         {"token": token, "serial": new_serial, "slot": slot, "reinitialised": True})]
    with database.read() as conn:
        logged = " ".join(r.detail for r in conn.execute(select(audit_log.c.detail)).all())
    said = " ".join(o.stdout + o.stderr for o in outcomes)
    for pin in EVERY_PIN:
        assert pin not in logged and pin not in said


def test_a_pin_change_before_the_database_exists_is_made_and_said(state_dir, tmp_path):
    token = new_token("no-database")
    changed = hsm(state_dir, tmp_path, "change-pin", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_RIGHT,
                  SIGNSERVER_HSM_NEW_PIN=NEW_USER)
    assert changed.returncode == 0, changed.stderr
    assert f"no database at {tmp_path / 'signserver.db'} yet" in changed.stderr
    assert "hsm.user_pin_changed" in changed.stderr and "WARNING" not in changed.stderr
    assert not (tmp_path / "signserver.db").exists()  # none is made for it: the server makes it
    assert opens_with(state_dir, tmp_path, token, NEW_USER)


def test_a_pin_change_whose_record_is_refused_is_told_exits_1_and_stays_made(state_dir, tmp_path):
    token = new_token("unrecorded-pin")
    database = made_database(tmp_path)
    with writes_refused(database, "INSERT", "audit_log"):
        changed = hsm(state_dir, tmp_path, "change-pin", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_RIGHT,
                      SIGNSERVER_HSM_NEW_PIN=NEW_USER)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "WARNING" in changed.stderr and "hsm.user_pin_changed" in changed.stderr
    assert f"changed the user PIN of token {token!r}" in changed.stdout  # what it did is still said
    assert "Traceback" not in changed.stderr and NEW_USER not in changed.stderr + changed.stdout
    assert opens_with(state_dir, tmp_path, token, NEW_USER)  # a token's change cannot be taken back
    assert hsm_records(database) == []
