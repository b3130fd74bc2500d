"""Operator accounts against the RA's real store (SQLite, or PostgreSQL with
SIGNSERVER_TEST_STORE=postgresql): the secret key file, adding and signing in with a password and
a TOTP code, one refusal for every wrong factor, each code once, the lock after five failures
(of any name, known or not, after the same work), disabling and a new password (which end the
operator's sessions on the pages), ra.operators; and `signserver ra operator ...`. No secret in
the audit trail."""

from __future__ import annotations

import datetime
import json
import stat
import threading
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from sqlalchemy import select, update

from signserver.clock import SystemClock
from signserver.ra import cli
from signserver.ra.errors import (OperatorAccountRefused, OperatorAuthenticationFailed, OperatorDisabled,
                                  OperatorLocked, SettingsError)
from signserver.ra.operator_accounts import LOCK_SECONDS, OperatorAccounts, password_hasher
from signserver.ra.secret_key import load_secret_key
from signserver.ra.settings import load_settings
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase
from signserver.ra.store.schema import operator_accounts, operator_lockouts
from signserver.ra.web.sessions import SessionStore, WebSession
from tests.conftest import empty_database_url, operator_hasher
from tests.ra.running import ra_in_process

PASSWORD = "Counter-pass-7"
ADMIN = "admin-on-duty"


def seed_of(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


def code(uri: str, clock, steps: int = 0) -> str:
    """The code an authenticator app shows now, or ``steps`` 30-second steps from now."""
    return pyotp.TOTP(seed_of(uri)).at(clock.now() + datetime.timedelta(seconds=30 * steps))


@pytest.fixture
def key(tmp_path) -> bytes:
    return load_secret_key(tmp_path / "ra-secret.key")


@pytest.fixture
def accounts(ra_database, ra_clock, key) -> OperatorAccounts:
    return OperatorAccounts(ra_database, ra_clock, key, hasher=operator_hasher())


def later(clock, seconds: int = 30) -> None:
    clock.advance(seconds=seconds)


def trail(database) -> list[dict]:
    with database.transaction() as conn:
        assert repository.verify_trail(conn) is None
        return repository.audit_entries(conn)


# --- the secret key -------------------------------------------------------------------------


def test_the_secret_key_is_made_once_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "state" / "ra-secret.key"
    first = load_secret_key(path)
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_secret_key(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["ra-secret.key"]  # no temporary file left


def test_processes_starting_at_once_end_with_one_key(tmp_path):
    path = tmp_path / "ra-secret.key"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_secret_key(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and set(keys) == {path.read_bytes()}


@pytest.mark.parametrize("content, mode, says", [
    (b"x" * 31, 0o600, "holds 31 bytes"),
    (b"x" * 33, 0o600, "more than 32"),
    (b"x" * 32, 0o644, "chmod 600"),
    (b"x" * 32, 0o620, "chmod 600"),
])
def test_a_key_file_that_is_not_right_is_refused_with_the_fix(tmp_path, content, mode, says):
    path = tmp_path / "ra-secret.key"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(SettingsError, match=says):
        load_secret_key(path)
    assert path.read_bytes() == content  # never repaired: what it sealed would be lost


def test_a_key_file_that_is_a_folder_or_a_link_is_refused(tmp_path):
    (tmp_path / "folder.key").mkdir()
    with pytest.raises(SettingsError):
        load_secret_key(tmp_path / "folder.key")
    target = tmp_path / "elsewhere.key"
    target.write_bytes(b"x" * 32)
    target.chmod(0o600)
    (tmp_path / "link.key").symlink_to(target)
    with pytest.raises(SettingsError, match="cannot read"):
        load_secret_key(tmp_path / "link.key")


# --- adding and signing in ------------------------------------------------------------------


def test_an_operator_signs_in_with_the_password_and_a_code_of_the_uri(accounts, ra_clock, ra_database):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp" and "counter-7" in parsed.path
    assert accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock)) == "counter-7"

    with ra_database.transaction() as conn:
        row = conn.execute(select(operator_accounts)).one()
    assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    assert seed_of(uri).encode() not in row.otp_seed_sealed and row.created_by == ADMIN
    entries = trail(ra_database)
    assert [(e["actor"], e["action"]) for e in entries] == [(ADMIN, "operator_added"),
                                                             ("counter-7", "operator_signed_in")]
    assert all(secret not in json.dumps(entries) for secret in (PASSWORD, seed_of(uri), uri))


def test_each_code_is_accepted_once(accounts, ra_clock):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    first = code(uri, ra_clock)
    accounts.authenticate("counter-7", PASSWORD, first)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", PASSWORD, first)
    later(ra_clock)
    assert accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock)) == "counter-7"
    # The code of the step before is within the drift allowed, but older than the one used.
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock, -1))


def test_a_code_of_the_step_beside_is_accepted_for_a_clock_slightly_off(accounts, ra_clock):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    assert accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock, 1))
    later(ra_clock, 120)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock, -2))


def test_every_wrong_factor_gets_one_answer(accounts, ra_clock):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    accounts.add("counter-8", PASSWORD, ADMIN)  # fewer than five failures each
    right = code(uri, ra_clock)
    wrong_code = f"{(int(right) + 1) % 1_000_000:06d}"
    messages = set()
    for name, password, otp in [("nobody", PASSWORD, right), ("counter-7", "Wrong-pass-7", right),
                                ("counter-7", PASSWORD, wrong_code), ("counter-7", PASSWORD, "１２３４５６"),
                                ("counter-8", PASSWORD, ""), ("bad name\n", PASSWORD, right),
                                ("counter-8", "x" * 5000, right), ("counter-8", PASSWORD, right)]:
        with pytest.raises(OperatorAuthenticationFailed) as refused:
            accounts.authenticate(name, password, otp)
        assert type(refused.value) is OperatorAuthenticationFailed
        messages.add(str(refused.value))
    assert len(messages) == 1


def test_five_failures_lock_for_30_minutes_and_a_success_before_resets(accounts, ra_clock, ra_database):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    for _ in range(4):
        with pytest.raises(OperatorAuthenticationFailed):
            accounts.authenticate("counter-7", "Wrong-pass-7", code(uri, ra_clock))
    accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock))  # the run of failures ends
    for _ in range(4):
        with pytest.raises(OperatorAuthenticationFailed):
            accounts.authenticate("counter-7", "Wrong-pass-7", "000000")
    with pytest.raises(OperatorLocked) as locked:
        accounts.authenticate("counter-7", "Wrong-pass-7", "000000")
    end = ra_clock.now() + datetime.timedelta(seconds=LOCK_SECONDS)
    assert locked.value.locked_until == end
    [listed] = accounts.list()
    assert listed.status == "locked" and listed.locked_until == end

    later(ra_clock)
    with pytest.raises(OperatorLocked):  # even with the right factors
        accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock))
    ra_clock.advance(seconds=LOCK_SECONDS)
    assert accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock)) == "counter-7"
    assert accounts.list()[0].status == "active"
    actions = [e["action"] for e in trail(ra_database)]
    assert actions.count("operator_locked") == 1 and actions.count("operator_sign_in_refused") == 8


def test_attempts_at_once_cannot_outrun_the_limit(accounts, ra_clock, ra_database):
    accounts.add("counter-7", PASSWORD, ADMIN)
    outcomes: list[type] = []

    def attempt():
        try:
            accounts.authenticate("counter-7", "Wrong-pass-7", "000000")
        except (OperatorAuthenticationFailed, OperatorLocked) as exc:
            outcomes.append(type(exc))

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 12 and OperatorLocked in outcomes
    # At most five attempts were evaluated (each answered as a wrong guess, or the fifth with
    # the lock): the others met the lock without being evaluated.
    assert outcomes.count(OperatorAuthenticationFailed) <= 5
    # Each evaluated attempt leaves one entry; one refused before its evaluation says so.
    evaluated = [e for e in trail(ra_database) if e["action"] in ("operator_sign_in_refused", "operator_locked")
                 and "unevaluated" not in e["detail"]]
    assert 1 <= len(evaluated) <= 5
    assert accounts.list()[0].status == "locked"


def refusals(accounts, name: str, password: str, otp: str, times: int) -> list[tuple[type, object]]:
    """The answers to ``times`` sign-ins: the error's type and, for a lock, its end."""
    answers = []
    for _ in range(times):
        try:
            accounts.authenticate(name, password, otp)
            answers.append((str, None))
        except (OperatorAuthenticationFailed, OperatorLocked) as exc:
            answers.append((type(exc), getattr(exc, "locked_until", None)))
    return answers


@pytest.mark.parametrize("unknown", ["nobody-7", "counter-7 ", "x" * 300, "outside-ra-operators"])
def test_an_unknown_name_locks_after_as_many_failures_as_a_known_one(ra_database, ra_clock, key, unknown):
    accounts = OperatorAccounts(ra_database, ra_clock, key, operators=("counter-7", "counter-8"),
                                hasher=operator_hasher())
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    known = refusals(accounts, "counter-7", "Wrong-pass-7", "000000", 6)
    stranger = refusals(accounts, unknown, "Wrong-pass-7", "000000", 6)
    end = ra_clock.now() + datetime.timedelta(seconds=LOCK_SECONDS)
    assert known == stranger == [(OperatorAuthenticationFailed, None)] * 4 + [(OperatorLocked, end)] * 2
    # With the right factors too: the lock answers before anything is told.
    assert refusals(accounts, "counter-7", PASSWORD, code(uri, ra_clock), 1) == [(OperatorLocked, end)]
    ra_clock.advance(seconds=LOCK_SECONDS)
    assert refusals(accounts, unknown, "Wrong-pass-7", "000000", 1) == [(OperatorAuthenticationFailed, None)]
    assert accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock)) == "counter-7"


def test_every_path_verifies_one_password_hash(ra_database, ra_clock, key):
    verified: list[str] = []
    real = operator_hasher()

    class CountingHasher:  # the real hasher, counting its verifications
        def __getattr__(self, attribute):
            return getattr(real, attribute)

        def verify(self, password_hash, password):
            verified.append(password_hash)
            return real.verify(password_hash, password)

    accounts = OperatorAccounts(ra_database, ra_clock, key, hasher=CountingHasher())
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    accounts.add("counter-8", PASSWORD, ADMIN)
    accounts.disable("counter-8", ADMIN)
    verified.clear()
    attempts = [("nobody", "Wrong-pass-7"), ("counter-7", "Wrong-pass-7"), ("counter-8", PASSWORD)]
    attempts += [("counter-7", "Wrong-pass-7")] * 4 + [("nobody", "Wrong-pass-7")] * 5  # both locked then
    for name, password in attempts:
        with pytest.raises((OperatorAuthenticationFailed, OperatorLocked)):
            accounts.authenticate(name, password, code(uri, ra_clock))
        assert len(verified) == 1, name
        verified.clear()


def argon2_costs(password_hash: str) -> tuple[int, int]:
    """The memory (KiB) and passes an argon2id hash was made with."""
    parameters = dict(item.split("=") for item in password_hash.split("$")[3].split(","))
    return int(parameters["m"]), int(parameters["t"])


def stored_costs(ra_database, name: str) -> tuple[int, int]:
    with ra_database.transaction() as conn:
        return argon2_costs(conn.execute(select(operator_accounts.c.password_hash)
                                         .where(operator_accounts.c.name == name)).scalar_one())


def test_passwords_are_hashed_at_the_configured_costs_and_rehashed_at_the_next_sign_in(ra_database, ra_clock,
                                                                                        tmp_path):
    (tmp_path / "signserver.toml").write_text("[ra]\noperator_argon2_memory_kib = 2048\n"
                                              "operator_argon2_time_cost = 3\n", encoding="utf-8")
    settings = load_settings(tmp_path / "signserver.toml", environ={})
    configured = OperatorAccounts.from_settings(settings, ra_database, ra_clock)
    uri = configured.add("counter-7", PASSWORD, ADMIN)
    assert stored_costs(ra_database, "counter-7") == (2048, 3)

    # The defaults change: the password still signs in, and is hashed again at the new costs.
    defaults = OperatorAccounts(ra_database, ra_clock, load_secret_key(settings.secret_key_file))
    later(ra_clock)
    assert defaults.authenticate("counter-7", PASSWORD, code(uri, ra_clock)) == "counter-7"
    assert stored_costs(ra_database, "counter-7") == (19_456, 2)  # OWASP's
    assert argon2_costs(password_hasher().hash("x")) == (19_456, 2)


def test_the_lockout_keeps_no_name_and_forgets_a_run(accounts, ra_clock, ra_database):
    for name in ("nobody-7", "Typed-pass-by-mistake-7"):
        with pytest.raises(OperatorAuthenticationFailed):
            accounts.authenticate(name, "Wrong-pass-7", "000000")
    with ra_database.transaction() as conn:
        rows = conn.execute(select(operator_lockouts)).all()
    assert len(rows) == 2 and not any("nobody" in str(row) or "Typed" in str(row) for row in rows)
    ra_clock.advance(seconds=LOCK_SECONDS)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("another-7", "Wrong-pass-7", "000000")
    with ra_database.transaction() as conn:
        assert len(conn.execute(select(operator_lockouts)).all()) == 1  # the old runs are gone


def test_only_an_allowed_name_without_a_disabled_account_is_active(ra_database, ra_clock, key):
    accounts = OperatorAccounts(ra_database, ra_clock, key, operators=("counter-7", "counter-8", "by-certificate"),
                                hasher=operator_hasher())
    accounts.add("counter-7", PASSWORD, ADMIN)
    accounts.add("counter-8", PASSWORD, ADMIN)
    accounts.disable("counter-8", ADMIN)
    assert accounts.is_active("counter-7")
    assert accounts.is_active("by-certificate")  # signed in with an RA client certificate: no account
    assert not accounts.is_active("counter-8")
    assert not accounts.is_active("counter-9")  # not among ra.operators


@pytest.fixture
def sessions(ra_database, ra_clock, ra_settings) -> SessionStore:
    return SessionStore(ra_database, ra_clock, ra_settings)


def operator_session(sessions: SessionStore, name: str) -> WebSession:
    session = sessions.new()
    session.kind, session.subject, session.signed_in_at = "operator", name, sessions.now()
    session.wanted = True
    sessions.save(session)
    return session


def test_disabling_or_a_new_password_ends_the_operators_sessions(ra_database, ra_clock, key, sessions):
    accounts = OperatorAccounts(ra_database, ra_clock, key, sessions=sessions, hasher=operator_hasher())
    for name in ("counter-7", "counter-8", "counter-9"):
        accounts.add(name, PASSWORD, ADMIN)
    seven, eight, nine = (operator_session(sessions, name) for name in ("counter-7", "counter-8", "counter-9"))
    accounts.disable("counter-7", ADMIN)
    accounts.reset_password("counter-8", "Another-pass-8", ADMIN)
    assert sessions.load(seven.session_id).kind == "anonymous"
    assert sessions.load(eight.session_id).kind == "anonymous"
    assert sessions.load(nine.session_id).subject == "counter-9"


def test_a_disabled_operator_is_told_so_only_with_the_right_factors(accounts, ra_clock, ra_database):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    accounts.disable("counter-7", ADMIN)
    accounts.disable("counter-7", ADMIN)  # changes nothing more
    with pytest.raises(OperatorDisabled):
        accounts.authenticate("counter-7", PASSWORD, code(uri, ra_clock))
    with pytest.raises(OperatorAuthenticationFailed) as refused:
        accounts.authenticate("counter-7", "Wrong-pass-7", code(uri, ra_clock))
    assert type(refused.value) is OperatorAuthenticationFailed
    assert accounts.list()[0].status == "disabled"
    with pytest.raises(OperatorAccountRefused, match="disabled"):
        accounts.reset_password("counter-7", PASSWORD, ADMIN)
    with pytest.raises(OperatorAccountRefused, match="no operator"):
        accounts.disable("nobody", ADMIN)
    assert [e["action"] for e in trail(ra_database)] == ["operator_added", "operator_disabled"]


def test_a_reset_gives_a_new_password_and_seed_and_ends_a_lock(accounts, ra_clock, ra_database):
    old = accounts.add("counter-7", PASSWORD, ADMIN)
    for _ in range(5):
        with pytest.raises((OperatorAuthenticationFailed, OperatorLocked)):
            accounts.authenticate("counter-7", "Wrong-pass-7", "000000")
    new = accounts.reset_password("counter-7", "Another-pass-8", ADMIN)
    assert seed_of(new) != seed_of(old)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", "Another-pass-8", code(old, ra_clock))
    later(ra_clock)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", PASSWORD, code(new, ra_clock))
    later(ra_clock)
    assert accounts.authenticate("counter-7", "Another-pass-8", code(new, ra_clock)) == "counter-7"
    assert "operator_password_reset" in [e["action"] for e in trail(ra_database)]
    with pytest.raises(OperatorAccountRefused, match="no operator"):
        accounts.reset_password("nobody", PASSWORD, ADMIN)


@pytest.mark.parametrize("name, password, says", [
    ("counter-7", "short-1", "8 characters"),
    ("counter-7", "onlyletters", "non-letter"),
    ("counter-7", "12345678", "letter"),
    ("", PASSWORD, "an operator name"),
    ("two words", PASSWORD, "an operator name"),
    ("x" * 129, PASSWORD, "an operator name"),
])
def test_names_and_passwords_that_break_the_rules_are_refused(accounts, name, password, says):
    with pytest.raises(OperatorAccountRefused, match=says) as refused:
        accounts.add(name, password, ADMIN)
    assert password not in str(refused.value)
    assert accounts.list() == []


def test_a_name_is_taken_once(accounts):
    accounts.add("counter-7", PASSWORD, ADMIN)
    with pytest.raises(OperatorAccountRefused, match="already"):
        accounts.add("counter-7", "Another-pass-8", ADMIN)
    assert [a.name for a in accounts.list()] == ["counter-7"]


def test_only_the_names_of_ra_operators_are_added_and_sign_in(ra_database, ra_clock, key):
    open_to_all = OperatorAccounts(ra_database, ra_clock, key, hasher=operator_hasher())
    uri = open_to_all.add("counter-9", PASSWORD, ADMIN)
    listed = OperatorAccounts(ra_database, ra_clock, key, operators=("counter-7",), hasher=operator_hasher())
    with pytest.raises(OperatorAccountRefused, match="ra.operators"):
        listed.add("counter-8", PASSWORD, ADMIN)
    with pytest.raises(OperatorAuthenticationFailed):
        listed.authenticate("counter-9", PASSWORD, code(uri, ra_clock))
    listed.add("counter-7", PASSWORD, ADMIN)


def test_the_seed_opens_only_with_the_key_and_under_its_own_name(accounts, ra_database, ra_clock, tmp_path):
    uri = accounts.add("counter-7", PASSWORD, ADMIN)
    accounts.add("counter-8", PASSWORD, ADMIN)
    with ra_database.transaction() as conn:
        sealed = conn.execute(select(operator_accounts.c.otp_seed_sealed)
                              .where(operator_accounts.c.name == "counter-7")).scalar_one()
        conn.execute(update(operator_accounts).where(operator_accounts.c.name == "counter-8")
                     .values(otp_seed_sealed=sealed))
    with pytest.raises(SettingsError, match="does not open"):
        accounts.authenticate("counter-8", PASSWORD, code(uri, ra_clock))
    other_key = OperatorAccounts(ra_database, ra_clock, load_secret_key(tmp_path / "other.key"),
                                 hasher=operator_hasher())
    with pytest.raises(SettingsError, match="secret key"):
        other_key.authenticate("counter-7", PASSWORD, code(uri, ra_clock))


def test_a_certificate_sign_in_is_recorded(accounts, ra_database):
    accounts.certificate_signed_in("counter-7", "5e1a")
    [entry] = trail(ra_database)
    assert entry["actor"] == "counter-7" and entry["action"] == "operator_signed_in" and "5e1a" in entry["detail"]


# --- `signserver ra operator ...` -----------------------------------------------------------


@pytest.fixture
def ra(tmp_path, capsys):
    config = tmp_path / "signserver.toml"
    config.write_text(f"""
state_dir = "state"
[ra]
database_url = "{empty_database_url(tmp_path / 'ra-cli.sqlite')}"
""", encoding="utf-8")

    run = ra_in_process(config, capsys, ADMIN)
    run.state_dir = tmp_path / "state"
    return run


def test_the_commands_add_list_reset_and_disable_operators(ra):
    exit_code, out, err = ra("operator", "add", "counter-7", "--json", secrets=(PASSWORD,))
    assert exit_code == 0, err
    added = json.loads(out)
    assert added["name"] == "counter-7" and added["otp_uri"].startswith("otpauth://totp/")
    key_file = ra.state_dir / "ra-secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    exit_code, out, _ = ra("operator", "reset-password", "counter-7", secrets=("Another-pass-8",))
    assert exit_code == 0 and "otpauth://totp/" in out and "█" in out  # the URI and its QR code
    assert seed_of(added["otp_uri"]) not in out

    exit_code, out, err = ra("operator", "add", "counter-7", "--json", secrets=(PASSWORD,))
    assert exit_code == 1 and json.loads(out)["error"] == "operator_account_refused" and "already" in err

    exit_code, out, err = ra("operator", "add", "counter-8", secrets=("short",))
    assert exit_code == 1 and "8 characters" in err and "short" not in err + out

    assert ra("operator", "disable", "counter-7")[0] == 0
    exit_code, out, _ = ra("operator", "list", "--json")
    assert exit_code == 0
    [listed] = json.loads(out)
    assert listed["name"] == "counter-7" and listed["status"] == "disabled" and listed["created_by"] == ADMIN
    exit_code, out, _ = ra("operator", "list")
    assert "counter-7  disabled" in out

    exit_code, out, _ = ra("audit", "--json")
    entries = json.loads(out)["entries"]
    assert [(e["actor"], e["action"]) for e in entries] == [
        (ADMIN, "operator_added"), (ADMIN, "operator_password_reset"), (ADMIN, "operator_disabled")]
    assert PASSWORD not in out and "Another-pass-8" not in out


def test_the_commands_end_the_operators_sessions(ra, tmp_path):
    assert ra("operator", "add", "counter-7", secrets=(PASSWORD,))[0] == 0
    assert ra("operator", "add", "counter-8", secrets=(PASSWORD,))[0] == 0
    settings = load_settings(tmp_path / "signserver.toml")
    database = RaDatabase(settings.database)
    try:
        store = SessionStore(database, SystemClock(), settings)
        seven, eight = operator_session(store, "counter-7"), operator_session(store, "counter-8")
        assert ra("operator", "disable", "counter-7")[0] == 0
        assert ra("operator", "reset-password", "counter-8", secrets=("Another-pass-8",))[0] == 0
        assert store.load(seven.session_id).kind == store.load(eight.session_id).kind == "anonymous"
    finally:
        database.close()


def test_a_bad_key_file_stops_the_command_before_the_password_is_asked(ra):
    ra.state_dir.mkdir()
    (ra.state_dir / "ra-secret.key").write_bytes(b"short")
    (ra.state_dir / "ra-secret.key").chmod(0o600)
    exit_code, _, err = ra("operator", "add", "counter-7")
    assert exit_code == cli.EXIT_CONFIG and "restore the RA's key" in err


def test_a_password_longer_than_any_is_refused_even_when_it_begins_with_the_right_one(accounts, ra_clock):
    longest = "a1" * 512
    uri = accounts.add("counter-7", longest, ADMIN)
    with pytest.raises(OperatorAuthenticationFailed):
        accounts.authenticate("counter-7", longest + "x", code(uri, ra_clock))
    with pytest.raises(OperatorAccountRefused, match="at most"):
        accounts.add("counter-8", longest + "x", ADMIN)
    assert accounts.authenticate("counter-7", longest, code(uri, ra_clock)) == "counter-7"
