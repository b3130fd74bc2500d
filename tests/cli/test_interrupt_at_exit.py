"""A Ctrl-C that lands once a command has ended, while the interpreter runs its exit handlers,
ends nothing and prints no traceback: the command's status stands."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.one_store  # touches no store

# An exit handler that interrupts the process as a Ctrl-C would, and gives the interrupt time to land.
INTERRUPTED_AT_EXIT = textwrap.dedent("""
    import atexit, os, signal, sys, time
    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5)))
    sys.argv = ["signserver", *sys.argv[1:]]
    from signserver.cli.main import command
    command()
""")


@pytest.mark.parametrize(("arguments", "status"), [
    (["--version"], 0),  # argparse ends main() with SystemExit
    (["--config", "/nonexistent/signserver.toml", "hsm", "list"], 78),  # main() returns its status
], ids=["version", "configuration-error"])
def test_a_ctrl_c_as_the_command_exits_prints_no_traceback(tmp_path, arguments, status):
    ended = subprocess.run([sys.executable, "-c", INTERRUPTED_AT_EXIT, *arguments], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert "Traceback" not in ended.stderr and "KeyboardInterrupt" not in ended.stderr, ended.stderr
    assert ended.returncode == status, (ended.returncode, ended.stdout, ended.stderr)
