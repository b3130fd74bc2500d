"""The PIN guard's argon2id evaluations (a PIN against the refused ones, a refusal remembered)
that find no memory (a worker near its RLIMIT_DATA bound, grpc_api/worker_memory.apply_bound)
say nothing of the PIN: a PIN refused before is then not taken for a new one and tried on the
token (a wrong try the token counts toward its lock), but refused with MemoryExhausted; a refusal
the guard cannot hash still reaches the caller. The real bound is set in a process of its own, on
real SoftHSM tokens."""

from __future__ import annotations

import json
import subprocess
import sys

import argon2
import pytest
from argon2.exceptions import HashingError, VerificationError
from argon2.low_level import error_to_str, lib

from signserver.errors import MemoryExhausted, ServerBusy
from signserver.hsm import pin_guard
from signserver.hsm.pin_guard import RefusedPins
from signserver.secret import Secret
from tests.conftest import ROOT
from tests.hsm.test_pin_guard import RIGHT, SOFTHSM_TOKENS, WRONG, _softhsm_env, count_low, new_token

ON_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA counts mappings on Linux")

# In a process of its own: the guard's tokens found, one refusal of WRONG remembered for the first
# token (as another process would have), then a bound on the process's data 8 MiB above what it
# holds, below the 64 MiB of the guard's argon2id, as a worker near its bound has.
NEAR_THE_BOUND = """
import json, resource, sys
from pathlib import Path
import pkcs11
from signserver.allocator import return_large_blocks_promptly
from signserver.grpc_api.worker_memory import data_bytes
from signserver.hsm.pin_guard import PinGuard, RefusedPins
from signserver.secret import Secret

module, refused_label, fresh_label, path, wrong = sys.argv[1:]
return_large_blocks_promptly()  # as a worker: argon2id's work area is mapped afresh, not found in the heap
library = pkcs11.lib(module)
tokens = {label: library.get_token(token_label=label) for label in (refused_label, fresh_label)}
refusals = RefusedPins(Path(path))
refusals.remember(tokens[refused_label].serial.decode("ascii").strip(), refused_label, Secret(wrong))
guard = PinGuard(refusals)

def log_in(label):
    try:
        guard.login(tokens[label], Secret(wrong)).close()
        return "logged in"
    except Exception as error:
        return type(error).__name__

soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + 8 * 1024 * 1024, hard))
outcomes = {"refused before": log_in(refused_label), "refused now": log_in(fresh_label)}
resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
outcomes["refused before, with memory"] = log_in(refused_label)
outcomes["remembered"] = refusals.count(fresh_label)
print(json.dumps(outcomes))
"""


@ON_LINUX
@SOFTHSM_TOKENS
def test_a_refused_pin_is_not_tried_on_the_token_when_the_guard_has_no_memory(config, tmp_path):
    refused, fresh = new_token(config), new_token(config)
    result = subprocess.run([sys.executable, "-c", NEAR_THE_BOUND, str(config.hsm.module), refused, fresh,
                             str(tmp_path / "refused-pins.json"), WRONG], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=_softhsm_env(config))
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout.splitlines()[-1])
    # Not known to be a PIN refused before: not tried either, so the token counts nothing.
    assert outcomes["refused before"] == "MemoryExhausted"
    assert not count_low(config, refused), "the PIN refused before reached the token"
    assert outcomes["refused before, with memory"] == "HsmLoginWithheld"
    # A refusal that cannot be hashed to be remembered still reaches the caller.
    assert outcomes["refused now"] == "PinIncorrect" and outcomes["remembered"] == 0
    assert count_low(config, fresh)
    assert "could not be remembered" in result.stderr and WRONG not in result.stderr and RIGHT not in result.stderr


class FaultingHasher(argon2.PasswordHasher):
    """The guard's argon2id hasher, whose evaluations fail as libargon2 reports a resource it
    lacked (``result``): argon2-cffi then raises its own errors with libargon2's message only."""

    def __init__(self, result: int):
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.message = error_to_str(result)

    def hash(self, password, *, salt=None):
        raise HashingError(self.message)

    def verify(self, hash, password):
        raise VerificationError(self.message)


@pytest.mark.parametrize("result, refusal", [(lib.ARGON2_MEMORY_ALLOCATION_ERROR, MemoryExhausted),
                                             (lib.ARGON2_THREAD_FAIL, ServerBusy)])
def test_argon2s_resource_faults_are_the_servers_errors_in_the_guard(tmp_path, monkeypatch, result, refusal):
    refusals = RefusedPins(tmp_path / "refused-pins.json")
    refusals.remember("serial", "label", Secret(WRONG))
    monkeypatch.setattr(pin_guard, "_HASHER", FaultingHasher(result))
    with pytest.raises(refusal, match="try again shortly") as checking:
        refusals.refused("serial", "label", Secret(WRONG))
    with pytest.raises(refusal, match="try again shortly") as remembering:
        refusals.remember("serial", "label", Secret(RIGHT))
    assert type(checking.value) is type(remembering.value) is refusal
    monkeypatch.undo()
    assert refusals.count("label") == 1 and refusals.refused("serial", "label", Secret(WRONG))


def test_a_hash_that_is_not_one_still_does_not_match_in_the_guard(tmp_path):
    path = tmp_path / "refused-pins.json"
    path.write_text(json.dumps({"refused": [{"token_serial": "s", "token_label": "l", "pin_hash": "$argon2id$v=19$"},
                                            {"token_serial": "s", "token_label": "l", "pin_hash": "not a hash"}]}))
    assert RefusedPins(path).refused("s", "l", Secret(WRONG)) is False
