"""The tests' fork server for `signserver` commands answers as `subprocess.run` does: the same
status, output and errors, in the environment and directory given, and a command that overruns
its timeout is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import cli_forkserver
from tests.conftest import ROOT, SIGNSERVER, cli_env


@pytest.mark.parametrize("args", [("--help",), ("no-such-command",), ("hsm", "list"), ("ca", "show", "--json")],
                         ids=["help", "usage-error", "hsm-list", "ca-show"])
def test_a_command_answers_as_in_a_process_started_afresh(args, state_dir, tmp_path):
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=f"sqlite:///{tmp_path / 'signserver.db'}")
    started = subprocess.run([str(SIGNSERVER), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    forked = cli_forkserver.run([str(SIGNSERVER), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (started.returncode, started.stdout, started.stderr)


def test_the_environment_and_directory_are_the_commands_only(state_dir, tmp_path, monkeypatch):
    # A fork server started where SIGNSERVER_CONFIG names a bad configuration file: a command
    # given an environment without it must not see it, and reads files from its own directory.
    (tmp_path / "bad.toml").write_text('[server]\nlisten = "nonsense"\n')
    monkeypatch.setenv("SIGNSERVER_CONFIG", str(tmp_path / "bad.toml"))
    server = cli_forkserver._ForkServer()
    try:
        def hsm_list(**env):
            return server.run([str(SIGNSERVER), "hsm", "list"], input=None, capture_output=True, text=True,
                              env=cli_env(state_dir, **env), cwd=str(tmp_path), timeout=120, check=False)
        assert hsm_list().returncode == 0
        refused = hsm_list(SIGNSERVER_CONFIG="bad.toml")
        assert refused.returncode == 78 and "server.listen" in refused.stderr
    finally:
        server.stop()


def test_a_command_past_its_timeout_is_killed(state_dir, tmp_path):
    # Its configuration is a FIFO nobody writes to: the command waits in its read.
    fifo = tmp_path / "signserver.toml"
    os.mkfifo(fifo)
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        cli_forkserver.run([str(SIGNSERVER), "--config", str(fifo), "hsm", "list"], env=cli_env(state_dir),
                           capture_output=True, timeout=2)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{expired.value.pid}").exists():  # killed, and reaped
        assert time.monotonic() < deadline, "the command still runs after its timeout"
        time.sleep(0.05)


def test_a_fork_server_whose_test_process_died_ends_too(tmp_path):
    # A test process that ends without its atexit hooks (killed, os._exit) leaves nothing behind.
    program = ("from tests import cli_forkserver; server = cli_forkserver._server(); "
               "print(server._process.pid, server._folder, flush=True); import os; os._exit(0)")
    with (tmp_path / "pid").open("w") as out:  # a file, not a pipe: the fork server holds the test's output
        subprocess.run([sys.executable, "-c", program], stdout=out, cwd=ROOT, timeout=120, check=True)
    pid, folder = (tmp_path / "pid").read_text().split()
    server = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while server.exists() and server.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the fork server outlived its test process"
        time.sleep(0.1)
    assert not Path(folder).exists(), "the fork server left its socket's folder behind"


def test_a_command_runs_and_is_waited_for_in_a_test_process_holding_past_1024_descriptors(state_dir, tmp_path):
    # select() takes no descriptor from 1024 up: a test process that holds that many (a leak the
    # suite should show as the leak's own failure) must still run commands, and stop its servers.
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        answered = cli_forkserver.run([str(SIGNSERVER), "--help"], env=cli_env(state_dir), cwd=tmp_path,
                                      capture_output=True, text=True, timeout=120)
        assert answered.returncode == 0 and "usage" in answered.stdout
    finally:
        for fd in held:
            os.close(fd)
