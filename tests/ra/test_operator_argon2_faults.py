"""An argon2id evaluation of an RA operator's password that finds no memory (the RA near an
RLIMIT_DATA bound) or cannot start its threads says nothing of the password: the sign-in is
refused as the RA refuses what it cannot do now (a 503 page), never as a wrong password, and
counts toward no lock; a right password works once memory is back. The real bound is set in a
process of its own; the page's answer is checked with a hasher that fails as libargon2 does."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import argon2
import pytest
from argon2.exceptions import HashingError, VerificationError
from argon2.low_level import error_to_str, lib

from signserver.clock import ManualClock
from signserver.ra.operator_accounts import OperatorAccounts, OperatorCheckBusy
from signserver.ra.settings import RaSettings
from signserver.ra.store import repository
from signserver.ra.web import operator_sign_in
from signserver.ra.web.app import build_site, framework_routes
from signserver.ra.web.captcha import Captcha
from signserver.ra.web.context import WebContext
from signserver.ra.web.i18n import load_catalogues
from signserver.ra.web.limits import RateLimits
from signserver.ra.web.rendering import Templates
from signserver.ra.web.sessions import SessionStore
from tests.conftest import ROOT, ra_database_url
from tests.ra.running import Served
from tests.ra.test_operator_accounts import PASSWORD, code
from tests.ra.web.test_framework import Client

ON_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA counts mappings on Linux")
START = datetime.datetime(2026, 12, 6, 2, 0, tzinfo=datetime.timezone.utc)

# In a process of its own: an operator account at the defaults' argon2id costs (19 MiB), then a
# bound on the process's data 8 MiB above what it holds.
NEAR_THE_BOUND = """
import datetime, json, resource, sys
from urllib.parse import parse_qs, urlparse
import pyotp
from signserver.allocator import return_large_blocks_promptly
from signserver.clock import ManualClock
from signserver.grpc_api.worker_memory import data_bytes
from signserver.ra.errors import RaError
from signserver.ra.operator_accounts import OperatorAccounts, password_hasher
from signserver.ra.store.database import RaDatabase

url, password = sys.argv[1:]
return_large_blocks_promptly()  # argon2id's 19 MiB mapped afresh at each evaluation, not found in the heap
clock = ManualClock(datetime.datetime(2026, 12, 6, 2, 0, tzinfo=datetime.timezone.utc))
accounts = OperatorAccounts(RaDatabase(url), clock, bytes(32), hasher=password_hasher())
totp = pyotp.TOTP(parse_qs(urlparse(accounts.add("operator-1", password, "admin")).query)["secret"][0])

def sign_in(name, password):
    clock.advance(seconds=30)  # a code of a step of its own each time
    try:
        return accounts.authenticate(name, password, totp.at(clock.now()))
    except RaError as error:
        return type(error).__name__

outcomes = {"before": sign_in("operator-1", password)}
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + 8 * 1024 * 1024, hard))
outcomes["right"] = [sign_in("operator-1", password) for _ in range(6)]
outcomes["wrong"] = sign_in("operator-1", "Wrong-pass-1")
outcomes["unknown"] = sign_in("nobody-has-this-name", password)
resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
listed = accounts.list()[0]
outcomes["failures"], outcomes["locked"] = listed.failures, listed.locked_until is not None
outcomes["after"] = sign_in("operator-1", password)
print(json.dumps(outcomes))
"""


@ON_LINUX
def test_a_right_password_refused_near_the_memory_bound_is_not_counted(tmp_path):
    result = subprocess.run([sys.executable, "-c", NEAR_THE_BOUND, ra_database_url(tmp_path / "ra.sqlite"), PASSWORD],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout.splitlines()[-1])
    assert outcomes["before"] == "operator-1"
    # Six in a row, one more than the lock takes: none counts, so none is OperatorLocked.
    assert outcomes["right"] == ["OperatorCheckBusy"] * 6
    assert outcomes["wrong"] == outcomes["unknown"] == "OperatorCheckBusy"  # a fault tells nothing of the password
    assert outcomes["failures"] == 0 and outcomes["locked"] is False
    assert outcomes["after"] == "operator-1"
    assert "found no memory" in result.stderr and PASSWORD not in result.stderr


class FaultingHasher(argon2.PasswordHasher):
    """A real argon2id hasher whose evaluations fail, while ``failing``, as libargon2 reports a
    resource it lacked (``result``): argon2-cffi then raises its own errors with libargon2's message."""

    def __init__(self, result: int = lib.ARGON2_MEMORY_ALLOCATION_ERROR):
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1, type=argon2.Type.ID)
        self.message = error_to_str(result)
        self.failing = False

    def hash(self, password, *, salt=None):
        if self.failing:
            raise HashingError(self.message)
        return super().hash(password, salt=salt)

    def verify(self, hash, password):
        if self.failing:
            raise VerificationError(self.message)
        return super().verify(hash, password)


@pytest.fixture
def hasher() -> FaultingHasher:
    return FaultingHasher()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def accounts(ra_database, clock, hasher) -> OperatorAccounts:
    return OperatorAccounts(ra_database, clock, bytes(32), hasher=hasher)


@pytest.mark.parametrize("result", [lib.ARGON2_MEMORY_ALLOCATION_ERROR, lib.ARGON2_THREAD_FAIL])
def test_a_sign_in_without_memory_or_threads_is_busy_and_counts_nothing(ra_database, clock, result):
    hasher = FaultingHasher(result)
    accounts = OperatorAccounts(ra_database, clock, bytes(32), hasher=hasher)
    uri = accounts.add("operator-1", PASSWORD, "admin")
    hasher.failing = True
    for _ in range(6):
        clock.advance(seconds=30)
        with pytest.raises(OperatorCheckBusy, match="try again shortly"):
            accounts.authenticate("operator-1", PASSWORD, code(uri, clock))
    assert accounts.list()[0].failures == 0 and accounts.list()[0].locked_until is None
    hasher.failing = False
    assert accounts.authenticate("operator-1", PASSWORD, code(uri, clock)) == "operator-1"


def test_adding_or_resetting_without_memory_is_busy(accounts, hasher, clock):
    uri = accounts.add("operator-1", PASSWORD, "admin")
    hasher.failing = True
    with pytest.raises(OperatorCheckBusy):
        accounts.add("operator-2", PASSWORD, "admin")
    with pytest.raises(OperatorCheckBusy):
        accounts.reset_password("operator-1", "Another-pass-8", "admin")
    hasher.failing = False
    assert [account.name for account in accounts.list()] == ["operator-1"]
    assert accounts.authenticate("operator-1", PASSWORD, code(uri, clock)) == "operator-1"  # the seed unchanged


def test_a_hash_of_older_costs_stays_when_memory_lacks_to_make_it_again(ra_database, clock, hasher):
    """The factors were right and the code is spent: a fault making the new hash must not refuse
    the operator; the hash is made again at a later sign-in."""
    older = argon2.PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1, type=argon2.Type.ID)
    uri = OperatorAccounts(ra_database, clock, bytes(32), hasher=older).add("operator-1", PASSWORD, "admin")
    accounts = OperatorAccounts(ra_database, clock, bytes(32), hasher=hasher)

    def failing_hash(password, *, salt=None):
        raise HashingError(hasher.message)

    original = hasher.hash
    hasher.hash = failing_hash
    assert accounts.authenticate("operator-1", PASSWORD, code(uri, clock)) == "operator-1"
    assert argon2.extract_parameters(stored_hash(ra_database)).time_cost == 2
    hasher.hash = original
    clock.advance(seconds=30)
    assert accounts.authenticate("operator-1", PASSWORD, code(uri, clock)) == "operator-1"
    assert argon2.extract_parameters(stored_hash(ra_database)).time_cost == 1


def stored_hash(database) -> str:
    with database.transaction() as conn:
        return repository.find_operator(conn, "operator-1").password_hash


def test_the_sign_in_page_answers_it_as_unavailable_not_as_a_wrong_password(ra_database, clock, hasher,
                                                                             accounts, tmp_path):
    settings = RaSettings(state_dir=tmp_path, public_url="https://ra.example.mo")
    sessions = SessionStore(ra_database, clock, settings)
    context = WebContext(settings=settings, clock=clock, workflow=None, operations=None, certificates=None,
                         operators=accounts, sessions=sessions, limits=RateLimits(settings),
                         captcha=Captcha(clock, sessions), templates=Templates.create(load_catalogues()))
    uri = accounts.add("operator-1", PASSWORD, "admin")
    hasher.failing = True
    pages = [*framework_routes(), *operator_sign_in.routes()]
    with Served(build_site(context, pages=pages)) as served:
        client = Client(served.url)
        form = {"csrf_token": client.token(operator_sign_in.SIGN_IN), "name": "operator-1", "password": PASSWORD,
                "otp": code(uri, clock)}
        refused = client.post(operator_sign_in.SIGN_IN, data=form, headers={"accept-language": "en"})
        client.close()
    assert refused.status_code == 503, refused.text
    assert "Please try again later" in refused.text and "not right" not in refused.text
    assert accounts.list()[0].failures == 0
