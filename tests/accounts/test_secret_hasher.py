"""SecretHasher's padding of a check against a hash of older (cheaper) parameters."""

from __future__ import annotations

import time

import pytest

from signserver.accounts.passwords import SecretHasher
from signserver.config.sections import AccountsConfig


def _hasher(memory_kib: int, time_cost: int) -> SecretHasher:
    return SecretHasher(AccountsConfig(lock_threshold=5, lock_minutes=30, argon2_memory_kib=memory_kib,
                                       argon2_time_cost=time_cost, argon2_parallelism=1))


@pytest.mark.alone  # CPU time against wall time: other test processes on the cores take the CPU away
def test_a_check_against_older_parameters_keeps_its_thread_busy_as_an_evaluation_at_the_current_ones_does():
    """A sleep would let the CPU idle, and on a virtual machine the next evaluation may then run
    slower (measured: 38.8 against 28.3 ms after a 30 ms sleep), which tells the padded check from a
    real one. The padding is work: its thread's CPU time is most of its duration, as an evaluation's is."""
    older_hash, _ = _hasher(64, 1).hash_with_key("Older-password-1")
    current = _hasher(8 * 1024, 3)
    current.burn("warm-up")  # the median the padding fills up to
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.thread_time()
        assert not current.derive(older_hash, "Wrong-password-1").matched
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        assert cpu > 0.7 * wall, (cpu, wall)
