"""An argon2id evaluation the process has no memory for (a worker near its RLIMIT_DATA bound,
grpc_api/worker_memory.apply_bound) says nothing of the secret: it is MemoryExhausted
(RESOURCE_EXHAUSTED), never a mismatch. A right password refused for it is not counted toward the
lock, nor audited as a failure, and works once memory is back; only a malformed stored hash still
does not match. The real bound is set in a process of its own."""

from __future__ import annotations

import dataclasses
import errno
import json
import subprocess
import sys

import grpc
import pytest
from argon2.exceptions import HashingError, VerificationError
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.accounts import argon2_memory, otp, passwords
from signserver.accounts.passwords import SecretHasher
from signserver.accounts.repository import account_row
from signserver.argon2_faults import MEMORY, THREADS, fault_of, fault_of_result
from signserver.audit.log import AuditLog
from signserver.errors import AuthenticationFailed, MemoryExhausted, ServerBusy
from signserver.secret import Secret
from tests.conftest import (PASSWORD, ROOT, TEST_COSTS, database_url, enrol, production_environ, service_with,
                            token_environ)
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import Client, code_of

ON_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA counts mappings on Linux")

# In a process of its own: a service at the defaults' argon2id cost (a 19 MiB work area), then a
# bound on the process's data 8 MiB above what it holds, as a worker near its bound has.
NEAR_THE_BOUND = """
import datetime, json, resource, sys
from signserver.accounts import argon2_memory
from signserver.audit.log import AuditLog
from signserver.clock import ManualClock
from signserver.config import load_config
from signserver.errors import SignServerError
from signserver.grpc_api.worker_memory import data_bytes
from signserver.secret import Secret
from signserver.service import SignService
from tests.conftest import PASSWORD, enrol

config = load_config(environ=json.loads(sys.argv[1]))
clock = ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))
service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}), clock=clock)
service.prepare_database()
name = enrol(service)[0].account.username

def check(username, password):
    try:
        service.accounts.check_password(username, Secret(password), "application:test")
        return "ok"
    except SignServerError as error:
        return type(error).__name__

outcomes = {"before": check(name, PASSWORD)}  # and every connection and session is open by now
argon2_memory.work_areas().release_unused()
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + 8 * 1024 * 1024, hard))
outcomes["right"] = [check(name, PASSWORD) for _ in range(6)]
outcomes["wrong"] = check(name, "Wrong-password-1")
outcomes["unknown"] = check("nobody-has-this-name", PASSWORD)
resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
outcomes["failed_attempts"] = service.accounts.get(name).failed_attempts
with service.database.read() as conn:
    outcomes["audited"] = [r.event for r in AuditLog.records(conn) if r.subject == name]
outcomes["after"] = check(name, PASSWORD)
print(json.dumps(outcomes))
"""

# Every argon2id evaluation of the hasher, near the bound.
EVERY_EVALUATION = """
import json, resource
from signserver.accounts import argon2_memory
from signserver.accounts.passwords import SecretHasher
from signserver.accounts.repository import account_row
from signserver.config import AccountsConfig
from signserver.errors import SignServerError
from signserver.grpc_api.worker_memory import data_bytes

costs = AccountsConfig(lock_threshold=5, lock_minutes=30, argon2_memory_kib=19456, argon2_time_cost=2,
                       argon2_parallelism=1)
hasher, fresh = SecretHasher(costs), SecretHasher(costs)  # ``fresh`` has made no stand-in hash yet
keyed, plain = hasher.hash_with_key("Macau-2017-sign")[0], hasher.hash("Macau-2017-sign")
hasher.burn("anything")
argon2_memory.work_areas().release_unused()
soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + 8 * 1024 * 1024, hard))
calls = {
    "derive": lambda: hasher.derive(keyed, "Macau-2017-sign"),
    "derive of argon2's own format": lambda: hasher.derive(plain, "Macau-2017-sign"),
    "verify": lambda: hasher.verify(plain, "Macau-2017-sign"),
    "burn": lambda: hasher.burn("anything"),
    "the first burn": lambda: fresh.burn("anything"),
    "hash_with_key": lambda: hasher.hash_with_key("Another-pass-2"),
    "hash": lambda: hasher.hash("Another-pass-2"),
}
outcomes = {}
for what, call in calls.items():
    try:
        outcomes[what] = repr(call())
    except SignServerError as error:
        outcomes[what] = type(error).__name__
resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
outcomes["derive after"] = hasher.derive(keyed, "Macau-2017-sign").matched
outcomes["the first burn after"] = fresh.burn("anything") is None
print(json.dumps(outcomes))
"""


def run(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@ON_LINUX
def test_a_right_password_refused_near_the_memory_bound_is_not_counted(state_dir, tmp_path):
    environ = {**TEST_COSTS, **production_environ(), "SIGNSERVER_STATE_DIR": str(state_dir),
               **token_environ(state_dir), "SIGNSERVER_DATABASE_URL": database_url(tmp_path / "s.db")}
    outcomes = run(NEAR_THE_BOUND, json.dumps(environ))
    assert outcomes["before"] == "ok"
    # Six in a row, one more than the lock takes: none counts, so none is AccountLocked.
    assert outcomes["right"] == ["MemoryExhausted"] * 6
    assert outcomes["wrong"] == outcomes["unknown"] == "MemoryExhausted"  # a fault tells nothing of the password
    assert outcomes["failed_attempts"] == 0
    assert "auth.failure" not in outcomes["audited"]
    assert outcomes["after"] == "ok"


@ON_LINUX
def test_every_evaluation_near_the_memory_bound_is_memory_exhausted():
    outcomes = run(EVERY_EVALUATION)
    assert outcomes.pop("derive after") is True and outcomes.pop("the first burn after") is True
    assert outcomes == dict.fromkeys(outcomes, "MemoryExhausted"), outcomes


def no_memory(monkeypatch):
    """Every argon2id work area of this process is refused, as mmap refuses it at the bound."""
    def refuse(size):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(argon2_memory.work_areas(), "lend", refuse)


def test_a_refused_work_area_is_memory_exhausted_and_logged(monkeypatch, caplog):
    no_memory(monkeypatch)
    with pytest.raises(MemoryExhausted, match="counts against no account"):
        argon2_memory.argon2id_raw(b"secret", b"sixteen byte salt", time_cost=1, memory_kib=64, parallelism=1,
                                   hash_len=32)
    assert "found no memory for its 64 KiB work area" in caplog.text


def test_argon2s_resource_results_are_faults_and_its_parameter_results_are_not():
    lib = argon2_memory.lib
    assert fault_of_result(lib.ARGON2_MEMORY_ALLOCATION_ERROR) == MEMORY
    assert fault_of_result(lib.ARGON2_THREAD_FAIL) == THREADS
    assert fault_of_result(lib.ARGON2_SALT_TOO_SHORT) is None
    assert fault_of(HashingError("Memory allocation error")) == MEMORY
    assert fault_of(VerificationError("Salt is too short")) is None
    assert isinstance(argon2_memory.resource_fault(MEMORY), MemoryExhausted)
    assert type(argon2_memory.resource_fault(THREADS)) is ServerBusy
    assert argon2_memory.resource_fault(None) is None


def test_a_hashing_error_for_memory_from_anywhere_is_memory_exhausted(config, monkeypatch):
    """However argon2's allocation failure comes (argon2-cffi's own functions say it only by its
    message), it is not a mismatch."""
    def failing(*args, **kwargs):
        raise HashingError("Memory allocation error")

    monkeypatch.setattr(passwords, "argon2id_raw", failing)
    hasher = SecretHasher(config.accounts)
    with pytest.raises(MemoryExhausted):
        hasher.derive(f"$argon2id-kdf$v=19$m=1024,t=1,p=1${'A' * 22}${'A' * 43}", PASSWORD)


@pytest.mark.parametrize("malformed", [
    "$argon2id-kdf$v=19$m=1,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,  # a memory cost libargon2 refuses
    "$argon2id-kdf$v=19$m=1024,t=1,p=1$AAAA$" + "A" * 43,  # a salt too short
    "$argon2id-kdf$v=19$m=1024,t=1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,  # no p
    "$argon2id$v=19$m=1024,t=1,p=1$not-base64",
    "",
])
def test_a_malformed_stored_hash_still_does_not_match(config, malformed):
    assert not SecretHasher(config.accounts).derive(malformed, PASSWORD).matched


def test_five_right_passwords_without_memory_neither_lock_nor_count(fresh_service, monkeypatch):
    name = enrol(fresh_service)[0].account.username
    no_memory(monkeypatch)
    for _ in range(6):
        with pytest.raises(MemoryExhausted):
            fresh_service.accounts.check_password(name, Secret(PASSWORD), "application:test")
    with pytest.raises(MemoryExhausted):  # nor for an unknown name's stand-in evaluation
        fresh_service.accounts.check_password("nobody-has-this-name", Secret(PASSWORD), "application:test")
    assert fresh_service.accounts.get(name).failed_attempts == 0
    monkeypatch.undo()
    assert fresh_service.accounts.check_password(name, Secret(PASSWORD), "application:test").username == name
    with pytest.raises(AuthenticationFailed):  # and a wrong one is still counted
        fresh_service.accounts.check_password(name, Secret("Wrong-password-1"), "application:test")
    assert fresh_service.accounts.get(name).failed_attempts == 1


def test_a_change_of_password_without_memory_is_memory_exhausted_and_not_counted(fresh_service, monkeypatch):
    name = enrol(fresh_service)[0].account.username
    no_memory(monkeypatch)
    for _ in range(5):
        with pytest.raises(MemoryExhausted):
            fresh_service.accounts.change_password(name, Secret(PASSWORD), Secret("Another-pass-2"),
                                                   Secret("Another-pass-2"), None, False, "application:test")
    monkeypatch.undo()
    assert fresh_service.accounts.get(name).failed_attempts == 0
    fresh_service.accounts.change_password(name, Secret(PASSWORD), Secret("Another-pass-2"),
                                           Secret("Another-pass-2"), None, False, "application:test")
    with pytest.raises(AuthenticationFailed):  # the old password is gone
        fresh_service.accounts.check_password(name, Secret(PASSWORD), "application:test")


def test_a_hash_of_older_costs_is_made_again_at_a_later_success_when_memory_lacks(config, tmp_path, clock):
    """The success is recorded (and the OTP spent) before the password is hashed again at the
    current costs: a fault then must not refuse the holder, whose seal key already opened."""
    database = tmp_path / "signserver.db"
    created, seed = enrol(service_with(config, database, clock))
    stronger = dataclasses.replace(config.accounts, argon2_time_cost=config.accounts.argon2_time_cost + 1)
    service = service_with(config, database, clock, accounts=stronger)
    name = created.account.username
    authenticator = service.accounts._authenticator
    hasher = authenticator._hasher
    stored = stored_hash(service, name)
    original = hasher.hash_with_key

    def failing(secret):
        raise MemoryExhausted("no memory")

    hasher.hash_with_key = failing
    holder = authenticator.authenticate_holder(name, Secret(PASSWORD), otp.code_at(seed, clock.now()), True, "test")
    assert holder.password_hash == stored == stored_hash(service, name) and holder.seal_key
    hasher.hash_with_key = original
    clock.advance(seconds=otp.STEP_SECONDS * 2)
    authenticator.authenticate_holder(name, Secret(PASSWORD), otp.code_at(seed, clock.now()), True, "test")
    assert not hasher.needs_rehash(stored_hash(service, name))


def stored_hash(service, name: str) -> str:
    with service.database.read() as conn:
        return account_row(conn, name).password_hash


def test_authorize_without_memory_is_resource_exhausted_and_the_same_code_works_after(config, tmp_path, clock,
                                                                                    monkeypatch):
    service = service_with(config, tmp_path / "signserver.db", clock)
    created, seed = enrol(service)
    name = created.account.username
    _, api_key = service.applications.create("memory-app")
    fields = dict(account=name, password=PASSWORD, otp=otp.code_at(seed, clock.now()),
                  credential_id=created.credential.id, hash_algorithm=1, digests=[bytes(32)])
    with ServerThread(config, service) as server, server.channel() as channel:
        client = Client(channel, api_key)
        no_memory(monkeypatch)
        for _ in range(5):
            refused = code_of(lambda: client.call(client.signing, "Authorize", **fields))
            assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_details_pb2.ErrorInfo()
            status = rpc_status.from_call(refused)
            assert status.details[0].Unpack(info) and info.reason == "MEMORY_EXHAUSTED"
        monkeypatch.undo()
        assert service.accounts.get(name).failed_attempts == 0
        # The OTP was not spent by the refusals: the holder's same code works now.
        assert client.call(client.signing, "Authorize", **fields).activation_token
    with service.database.read() as conn:
        assert "auth.failure" not in [r.event for r in AuditLog.records(conn) if r.subject == name]
