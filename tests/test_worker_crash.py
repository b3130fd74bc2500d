"""A pytest-xdist worker killed in the middle of a test (as the kernel's out-of-memory killer does)
ends the run promptly, failed, naming the test it died in; nothing it started outlives it.

A run of its own, of two workers as `make test` starts them, over two test files written here and
the suite's fixtures: one test starts `signserver serve` through the CLI fork server, forks a
child that would outlive it by minutes (holding, as any process forked without an exec does, the
worker's end of xdist's pipes), and SIGKILLs its own worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

# About the test runner itself.
pytestmark = pytest.mark.one_store

DYING = '''
import os, signal, time
from pathlib import Path
from tests.grpc_api.serve_process import ServeProcess

def test_serves_forks_and_dies(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=1).start()
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    Path({pids!r}).write_text(f"{{server.process.pid}} {{child}}")
    os.kill(os.getpid(), signal.SIGKILL)

def test_never_reached():
    pass
'''

BESIDE = '''
def test_beside():
    pass
'''

RUN_LIMIT_SECONDS = 120  # the run itself takes about 10 s; before, it waited for the forked child's 600 s


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def test_a_killed_worker_ends_the_run_and_what_it_started(tmp_path):
    tests = tmp_path / "inner"
    tests.mkdir()
    pids = tmp_path / "pids"
    (tests / "test_dying.py").write_text(DYING.format(pids=str(pids)))
    (tests / "test_beside.py").write_text(BESIDE)
    (tests / "pytest.ini").write_text("[pytest]\n")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                            "-n", "2", "--dist", "loadfile", "--basetemp", str(tmp_path / "basetemp"), str(tests)],
                           cwd=tests, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        output, _ = run.communicate(timeout=RUN_LIMIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        output, _ = run.communicate()
        raise AssertionError(f"the run did not end within {RUN_LIMIT_SECONDS} s of its worker's death:\n{output}")
    finally:
        left = [int(pid) for pid in pids.read_text().split()] if pids.exists() else []
        survivors = [pid for pid in left if _alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    assert run.returncode == 1, output
    assert "worker 'gw" in output and "crashed while running 'test_dying.py::test_serves_forks_and_dies'" in output, output
    assert "killed by SIGKILL while running test_dying.py::test_serves_forks_and_dies" in output, output
    assert "restarting disabled" in output, output  # not run again by a worker in its place
    assert "1 failed, 1 passed" in output, output
    assert left and not survivors, f"the server and the forked child outlived their worker: {survivors}\n{output}"
    assert elapsed < 60, f"{elapsed:.0f} s\n{output}"
