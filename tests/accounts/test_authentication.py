"""Password, OTP and lockout, on a real token and a real database, with a clock the test moves."""

from __future__ import annotations

import dataclasses
import datetime
import threading

import pytest
from sqlalchemy import func, select, text

from signserver.accounts import otp
from signserver.accounts.model import AccountStatus
from signserver.accounts.authentication import UNKNOWN_NAME
from signserver.accounts.repository import account_row
from signserver.audit.log import AuditLog
from signserver.errors import AccountDisabled, AccountLocked, AuthenticationFailed
from signserver.secret import Secret
from tests.conftest import PASSWORD, enrol, production_costs, service_with


def auth(service, username, password=PASSWORD, code=None, otp_required=True):
    return service.accounts._authenticator.authenticate(username, Secret(password), code, otp_required, "test")


def events(service, subject):
    with service.database.transaction() as conn:
        return [r.event for r in AuditLog.records(conn) if r.subject == subject]


def test_password_and_otp_authenticate(fresh_service, clock):
    created, seed = enrol(fresh_service)
    account = auth(fresh_service, created.account.username, code=otp.code_at(seed, clock.now()))
    assert account.username == created.account.username
    assert "auth.success" in events(fresh_service, account.username)


@pytest.mark.parametrize("wrong", ["password", "otp", "account"])
def test_every_wrong_factor_gives_the_same_error(fresh_service, clock, wrong):
    created, seed = enrol(fresh_service)
    username, password, code = created.account.username, PASSWORD, otp.code_at(seed, clock.now())
    if wrong == "password":
        password = "Wrong-password-1"
    elif wrong == "otp":
        code = "000000" if code != "000000" else "111111"
    else:
        username = "nobody-here"
    with pytest.raises(AuthenticationFailed) as caught:
        auth(fresh_service, username, password, code)
    assert str(caught.value) == AuthenticationFailed.GENERIC


def test_otp_code_is_accepted_once(fresh_service, clock):
    created, seed = enrol(fresh_service)
    code = otp.code_at(seed, clock.now())
    auth(fresh_service, created.account.username, code=code)
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, created.account.username, code=code)


def test_one_step_of_drift_either_way_but_not_two(fresh_service, clock):
    created, seed = enrol(fresh_service)
    name, now = created.account.username, clock.now()
    step = datetime.timedelta(seconds=otp.STEP_SECONDS)
    auth(fresh_service, name, code=otp.code_at(seed, now - step))
    auth(fresh_service, name, code=otp.code_at(seed, now + step))  # a later step is still new
    for offset in (-2, 2):
        clock.advance(seconds=otp.STEP_SECONDS * 4)  # a fresh window each time
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name, code=otp.code_at(seed, clock.now() + offset * step))


def test_older_code_after_a_newer_one_is_refused(fresh_service, clock):
    created, seed = enrol(fresh_service)
    step = datetime.timedelta(seconds=otp.STEP_SECONDS)
    auth(fresh_service, created.account.username, code=otp.code_at(seed, clock.now() + step))
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, created.account.username, code=otp.code_at(seed, clock.now()))


def test_no_otp_when_the_application_does_not_require_it(fresh_service):
    created, _ = enrol(fresh_service)
    assert auth(fresh_service, created.account.username, otp_required=False).username == created.account.username


def test_five_failures_lock_for_thirty_minutes(fresh_service, clock):
    created, seed = enrol(fresh_service)
    name = created.account.username
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    assert fresh_service.accounts.get(name).status is AccountStatus.ACTIVE
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    account = fresh_service.accounts.get(name)
    assert account.status is AccountStatus.LOCKED
    assert account.locked_until == clock.now() + datetime.timedelta(minutes=30)

    with pytest.raises(AccountLocked) as caught:
        auth(fresh_service, name, code=otp.code_at(seed, clock.now()))  # right factors, still refused
    assert caught.value.until == account.locked_until
    assert "locked until" in str(caught.value) and "password" not in str(caught.value)

    clock.advance(minutes=29, seconds=59)
    with pytest.raises(AccountLocked):
        auth(fresh_service, name, otp_required=False)
    clock.advance(seconds=1)
    assert auth(fresh_service, name, code=otp.code_at(seed, clock.now())).status is AccountStatus.ACTIVE
    assert "account.locked" in events(fresh_service, name)


def test_success_resets_the_count(fresh_service):
    created, _ = enrol(fresh_service)
    name = created.account.username
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    auth(fresh_service, name, otp_required=False)
    assert fresh_service.accounts.get(name).failed_attempts == 0
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    assert fresh_service.accounts.get(name).status is AccountStatus.ACTIVE


def test_wrong_otp_counts_toward_the_lock(fresh_service):
    created, _ = enrol(fresh_service)
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, created.account.username, code="123456" if _ % 2 else "654321")
    assert fresh_service.accounts.get(created.account.username).status is AccountStatus.LOCKED


def parallel_wrong_attempts(service, name: str, count: int = 20) -> list[str]:
    """``count`` wrong passwords for ``name`` at once; each one's outcome: "wrong" or "locked"."""
    outcomes: list[str] = []
    barrier = threading.Barrier(count)

    def attempt():
        barrier.wait()
        try:
            auth(service, name, "Wrong-password-1", otp_required=False)
            outcomes.append("ok")
        except AuthenticationFailed:
            outcomes.append("wrong")
        except AccountLocked:
            outcomes.append("locked")

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.fixture
def racing_service(config, tmp_path, clock):
    """A service whose password checks take as long as the defaults' (tens of milliseconds), so
    that racing attempts overlap as they would in production."""
    return service_with(production_costs(config), tmp_path / "signserver.db", clock)


def test_parallel_wrong_attempts_evaluate_at_most_five(racing_service):
    created, _ = enrol(racing_service)
    name = created.account.username
    outcomes = parallel_wrong_attempts(racing_service, name)
    assert outcomes.count("wrong") == 5 and outcomes.count("locked") == 15
    assert events(racing_service, name).count("auth.failure") == 5


def test_disabled_accounts_are_refused(fresh_service):
    created, _ = enrol(fresh_service)
    fresh_service.accounts.set_status(created.account.username, enabled=False, operator="test")
    with pytest.raises(AccountDisabled):
        auth(fresh_service, created.account.username, otp_required=False)
    fresh_service.accounts.set_status(created.account.username, enabled=True, operator="test")
    auth(fresh_service, created.account.username, otp_required=False)


def test_otp_seed_is_sealed_in_the_database(fresh_service):
    created, seed = enrol(fresh_service)
    with fresh_service.database.transaction() as conn:
        row = conn.execute(text("SELECT otp_seed_sealed, password_hash, recovery_code_hash FROM accounts "
                                "WHERE username = :u"), {"u": created.account.username}).one()
    assert seed.encode() not in row.otp_seed_sealed
    assert row.password_hash.startswith("$argon2id-kdf$") and PASSWORD not in row.password_hash
    assert row.recovery_code_hash.startswith("$argon2id-kdf$")


# --- no account oracle: unknown names are refused, counted and locked like accounts ---------


def lockout_rows(service) -> dict[str, tuple[int, int | None]]:
    """The lockout's rows, by the names tried (kept as their keyed hashes)."""
    with service.database.transaction() as conn:
        return {r.name_key: (r.failed_attempts, r.locked_until)
                for r in conn.exec_driver_sql("SELECT name_key, failed_attempts, locked_until FROM name_lockouts")}


def name_key(service, name: str) -> str:
    return service.accounts._authenticator.names.key_of(name)


def row_counts(service) -> dict[str, int]:
    """How many rows each table holds."""
    from signserver.store.schema import metadata

    with service.database.transaction() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def test_the_failure_that_locks_writes_the_same_rows_for_an_account_and_an_unknown_name(fresh_service):
    created, _ = enrol(fresh_service, emails=("one@example.mo", "two@example.mo"))
    written = {}
    for name in (created.account.username, "nobody-here"):
        for _ in range(4):
            with pytest.raises(AuthenticationFailed):
                auth(fresh_service, name, "Wrong-password-1", otp_required=False)
        before = row_counts(fresh_service)
        with pytest.raises(AuthenticationFailed):  # the fifth: it locks the name
            auth(fresh_service, name, "Wrong-password-1", otp_required=False)
        after = row_counts(fresh_service)
        written[name] = {table: after[table] - before[table] for table in after if after[table] != before[table]}
    assert written[created.account.username] == written["nobody-here"]
    assert written["nobody-here"]["audit_log"] == 2  # auth.failure and account.locked, as ever
    assert events(fresh_service, created.account.username)[-2:] == ["auth.failure", "account.locked"]


def test_an_unknown_name_locks_like_an_account_and_is_forgotten_when_the_lock_ends(fresh_service, clock):
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, "nobody-here", "Wrong-password-1", code="123456")
    with pytest.raises(AccountLocked) as caught:
        auth(fresh_service, "nobody-here", "Wrong-password-1", code="123456")
    assert caught.value.until == clock.now() + datetime.timedelta(minutes=30)
    assert events(fresh_service, UNKNOWN_NAME) == ["auth.failure"] * 5 + ["account.locked", "auth.refused"]
    assert fresh_service.accounts.lock_state("nobody-here").locked_until == caught.value.until

    clock.advance(minutes=30)
    with pytest.raises(AuthenticationFailed):  # any name's attempt clears the runs that are over
        auth(fresh_service, "somebody-else", "Wrong-password-1", code="123456")
    assert name_key(fresh_service, "nobody-here") not in lockout_rows(fresh_service)
    assert fresh_service.accounts.lock_state("nobody-here").failed_attempts == 0


def test_a_run_of_failures_is_forgotten_thirty_minutes_after_its_last_failure(fresh_service, clock):
    created, _ = enrol(fresh_service)
    name = created.account.username
    for _ in range(4):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    clock.advance(minutes=29)
    assert fresh_service.accounts.get(name).failed_attempts == 4
    clock.advance(minutes=1)
    assert fresh_service.accounts.get(name).failed_attempts == 0  # as for a name nobody has
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, name, "Wrong-password-1", otp_required=False)
    assert fresh_service.accounts.get(name).status is AccountStatus.ACTIVE
    assert lockout_rows(fresh_service)[name_key(fresh_service, name)][0] == 1


def test_a_new_account_does_not_inherit_the_failures_of_its_name(fresh_service):
    for _ in range(5):
        with pytest.raises(AuthenticationFailed):
            auth(fresh_service, "newcomer", "Wrong-password-1", otp_required=False)
    created, _ = enrol(fresh_service, username="newcomer")
    assert created.account.status is AccountStatus.ACTIVE and created.account.failed_attempts == 0
    assert auth(fresh_service, "newcomer", otp_required=False).username == "newcomer"


def test_a_disabled_account_is_told_only_to_whoever_has_its_factors(fresh_service, clock):
    created, seed = enrol(fresh_service)
    name = created.account.username
    fresh_service.accounts.set_status(name, enabled=False, operator="test")
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, name, "Wrong-password-1", code=otp.code_at(seed, clock.now()))
    with pytest.raises(AccountDisabled):
        auth(fresh_service, name, code=otp.code_at(seed, clock.now()))
    assert fresh_service.accounts.get(name).failed_attempts == 1  # the right factors count for nothing


@pytest.mark.parametrize("code", ["١٢٣٤٥٦", "１２３４５６", "¹²³⁴⁵⁶", "12345６"])
def test_an_otp_of_non_ascii_digits_is_a_wrong_code(fresh_service, clock, code):
    created, seed = enrol(fresh_service)
    assert otp.matching_step(seed, code, clock.now()) is None
    with pytest.raises(AuthenticationFailed):
        auth(fresh_service, created.account.username, code=code)
    assert fresh_service.accounts.get(created.account.username).failed_attempts == 1
    assert events(fresh_service, created.account.username)[-1] == "auth.failure"


def test_parallel_wrong_attempts_on_an_unknown_name_evaluate_at_most_five(racing_service):
    outcomes = parallel_wrong_attempts(racing_service, "nobody-here")
    assert outcomes.count("wrong") == 5 and outcomes.count("locked") == 15
    assert events(racing_service, UNKNOWN_NAME).count("auth.failure") == 5


def test_a_password_is_hashed_again_only_after_a_success(config, tmp_path, clock):
    """Hashing a right password again while the OTP is still unchecked would cost one more argon2
    run exactly when the password is right: a wrong OTP could then be told from a wrong password."""
    database = tmp_path / "signserver.db"
    created, seed = enrol(service_with(config, database, clock))
    stronger = dataclasses.replace(config.accounts, argon2_time_cost=config.accounts.argon2_time_cost + 1)
    service = service_with(config, database, clock, accounts=stronger)
    name = created.account.username
    hashes = []
    hasher = service.accounts._authenticator._hasher
    original = hasher.hash_with_key
    hasher.hash_with_key = lambda secret: hashes.append(1) or original(secret)  # counts, and hashes for real
    right_code = otp.code_at(seed, clock.now())
    wrong_code = "000000" if right_code != "000000" else "111111"
    with pytest.raises(AuthenticationFailed):
        auth(service, name, PASSWORD, wrong_code)
    assert hashes == []
    stored = stored_hash(service, name)
    auth(service, name, PASSWORD, right_code)
    assert hashes == [1] and stored_hash(service, name) != stored
    assert not hasher.needs_rehash(stored_hash(service, name))


def stored_hash(service, name: str) -> str:
    with service.database.read() as conn:
        return account_row(conn, name).password_hash
