"""Memory freed after password checks goes back to the system (a worker stays small)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.one_store  # touches no store

SCRIPT = """
import sys, threading
from argon2 import PasswordHasher
from signserver.allocator import return_large_blocks_promptly

def rss_mb():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))

if sys.argv[1] == "fixed":
    assert return_large_blocks_promptly()
hasher = PasswordHasher(memory_cost=19 * 1024, time_cost=2, parallelism=1)
hasher.hash("warm up")
before = rss_mb()

def check(): [hasher.hash("a password") for _ in range(3)]

threads = [threading.Thread(target=check) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(rss_mb() - before)
"""


def growth_mb(mode: str) -> float:
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_password_checks_in_threads_leave_no_resident_memory_behind():
    # Four threads each hashing with 19 MiB: glibc's default keeps most of it resident.
    assert growth_mb("fixed") < 20
