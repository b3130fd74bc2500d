"""argon2id in kept work memory: the same output as argon2-cffi's, one area reused by evaluations
in a row (no fresh page faults), returned to the system once idle, and never shared with a forked
child. The memory figures come from a process of their own (a clean heap, and no test's threads
across its fork)."""

from __future__ import annotations

import json
import mmap
import subprocess
import sys
import time
import types

import pytest
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw

from signserver.accounts import argon2_memory
from signserver.accounts.argon2_memory import IDLE_SECONDS, argon2id_raw

pytestmark = pytest.mark.one_store  # touches no store


@pytest.mark.parametrize("time_cost, memory_kib, parallelism, hash_len",
                         [(1, 8, 1, 32), (2, 19_456, 1, 64), (1, 64, 4, 64), (3, 256, 2, 16)])
def test_the_output_is_argon2ids_as_argon2_cffi_computes_it(time_cost, memory_kib, parallelism, hash_len):
    secret, salt = "pässwörd 密碼".encode(), b"sixteen byte salt"
    assert argon2id_raw(secret, salt, time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism,
                        hash_len=hash_len) == hash_secret_raw(secret, salt, time_cost=time_cost,
                                                              memory_cost=memory_kib, parallelism=parallelism,
                                                              hash_len=hash_len, type=Type.ID)


def test_parameters_libargon2_refuses_raise_its_error():
    with pytest.raises(HashingError, match="Salt is too short"):
        argon2id_raw(b"secret", b"short", time_cost=1, memory_kib=64, parallelism=1, hash_len=32)
    with pytest.raises(HashingError, match="Memory cost is too small"):
        argon2id_raw(b"secret", b"sixteen byte salt", time_cost=1, memory_kib=1, parallelism=1, hash_len=32)


IN_A_ROW = """
import json, os, resource, time
from signserver.allocator import return_large_blocks_promptly
from signserver.accounts.argon2_memory import argon2id_raw, work_areas

assert return_large_blocks_promptly()  # as in a worker: large blocks are mapped afresh
def evaluate():
    return argon2id_raw(b"a password", b"sixteen byte salt", time_cost=2, memory_kib=19456, parallelism=1,
                        hash_len=64)
def rss_mb():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))

first = evaluate()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
same = all(evaluate() == first for _ in range(3))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
kept, held = work_areas().kept(), rss_mb()
deadline = time.monotonic() + 30
while work_areas().kept() and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps(dict(same=same, faults=faults, mapped=work_areas().mapped, kept=kept,
                      kept_later=work_areas().kept(), released_mb=held - rss_mb())))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_evaluations_in_a_row_reuse_one_area_which_goes_back_to_the_system_once_idle():
    figures = json.loads(_run(IN_A_ROW))
    assert figures["same"]
    assert figures["mapped"] == 1
    # An area mapped afresh faults in its 4,864 pages at every evaluation.
    assert figures["faults"] < 500
    assert figures["kept"] == 1
    assert figures["kept_later"] == 0  # within the 30 s the script waits; IDLE_SECONDS is 2
    assert figures["released_mb"] > 15  # the 19 MiB went back
    assert IDLE_SECONDS < 30


def test_an_area_counts_as_kept_until_it_is_unmapped(monkeypatch):
    """Whoever sees ``kept()`` fall sees the memory gone: an unmapping that takes its time (a 19 MiB
    area under load) is not counted as done before it is."""
    mapped = []

    class SlowToUnmap(mmap.mmap):
        def __init__(self, *args, **kwargs):
            mapped.append(self)

        def close(self):
            time.sleep(0.3)
            super().close()

    monkeypatch.setattr(argon2_memory, "mmap", types.SimpleNamespace(
        mmap=SlowToUnmap, MAP_PRIVATE=mmap.MAP_PRIVATE, MAP_ANONYMOUS=mmap.MAP_ANONYMOUS))
    areas = argon2_memory.WorkAreas(idle_seconds=0.05)
    address = int(argon2_memory.ffi.cast("uintptr_t", areas.lend(1 << 20)))
    areas.take_back(address, 1 << 20)
    assert areas.kept() == 1
    deadline = time.monotonic() + 10
    while areas.kept() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert areas.kept() == 0
    assert [area.closed for area in mapped] == [True]


FORKED = """
import os
from argon2.low_level import Type, hash_secret_raw
from signserver.accounts.argon2_memory import argon2id_raw, work_areas

def evaluate(secret):
    return argon2id_raw(secret, b"sixteen byte salt", time_cost=1, memory_kib=1024, parallelism=1, hash_len=32)

evaluate(b"the parent's")
assert work_areas().kept() == 1
child = os.fork()
if child == 0:
    fine = (work_areas().kept() == 0 and evaluate(b"the child's") == hash_secret_raw(
        b"the child's", b"sixteen byte salt", time_cost=1, memory_cost=1024, parallelism=1, hash_len=32,
        type=Type.ID) and work_areas().mapped == 2)
    os._exit(0 if fine else 1)
_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the child saw its parent's areas"
assert work_areas().kept() == 1  # the parent's own area is still there for it
print("ok")
"""


def test_a_forked_child_starts_without_its_parents_areas():
    assert _run(FORKED).strip() == "ok"


def _run(script: str) -> str:
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout
