"""Ctrl-C, SIGTERM or a hang-up during a call to the token takes effect once the call has ended,
never inside it.

python-pkcs11 (0.10.1) packs a template into an array it allocates without clearing, and, when
packing an attribute raises (as a KeyboardInterrupt does, landing in the Python code that packs
it), frees the unset entries too: the process aborts ("free(): invalid pointer") or goes on with
its memory corrupt. A command interrupted at that moment (`hsm master receive-begin`, under load)
aborted with its transport key left on the token. A process ended while it logs in to a SoftHSM
token leaves the token unreadable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import cli_env, requires_softhsm
from tests.hsm.test_new_objects import stop

pytestmark = pytest.mark.one_store  # the token's calls; no store

# In a process of its own: on the code before, it aborts.
INTERRUPTED_SEARCH = """
import os, signal
from pkcs11 import Attribute, ObjectClass
from signserver.config import load_config
from signserver.hsm.session import TokenSession

class CtrlCAsItIsPacked:
    '''A key ID whose packing into the search's template is where a Ctrl-C lands.'''
    def __bytes__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return b"\\x01" * 16

config = load_config()
session = TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin())
ended = []
try:
    session.run(lambda s: ended.append(list(s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                                           Attribute.ID: CtrlCAsItIsPacked()}))), "search")
except KeyboardInterrupt:
    print("interrupted after the search:", ended == [[]], flush=True)
# Memory freed twice or at random shows in the calls after, if not at once.
for _ in range(100):
    session.run(lambda s: list(s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: "none"})),
                "search again")
print("searched again", flush=True)
"""


def test_a_ctrl_c_while_a_template_is_packed_interrupts_once_the_call_has_ended(state_dir, config):
    # SIGINT's default disposition, as from a terminal: a suite run in the background ignores SIGINT,
    # and a child inherits that.
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_SEARCH], capture_output=True, text=True, timeout=120,
                         env=cli_env(state_dir), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (run.returncode, run.stdout) == (0, "interrupted after the search: True\nsearched again\n"), \
        (run.returncode, run.stdout, run.stderr)


# A held SIGTERM or SIGHUP, sent as the search's template is packed: the search ends, then the
# signal's default action ends the process; nothing after the block runs.
ENDED_SEARCH = """
import os, signal, sys
from pkcs11 import Attribute, ObjectClass
from signserver.config import load_config
from signserver.hsm.session import TokenSession

signum = int(sys.argv[1])

class SignalAsItIsPacked:
    def __bytes__(self):
        os.kill(os.getpid(), signum)
        return b"\\x01" * 16

def search(s):
    found = list(s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: SignalAsItIsPacked()}))
    print("the search ended:", found == [], flush=True)
    if sys.argv[2] == "fails":
        raise ValueError("the block's own error")

config = load_config()
session = TokenSession(config.hsm.module, config.hsm.token_label, config.hsm.user_pin())
try:
    session.run(search, "search")
finally:
    print("not ended", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("block", ["returns", "fails"])
def test_a_stop_during_a_call_to_the_token_ends_the_process_once_the_call_has_ended(state_dir, signum, block):
    run = subprocess.run([sys.executable, "-c", ENDED_SEARCH, str(int(signum)), block], capture_output=True,
                         text=True, timeout=120, env=cli_env(state_dir),
                         preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGTERM, signal.SIGHUP)])
    assert (run.returncode, run.stdout) == (-signum, "the search ended: True\n"), (run.returncode, run.stdout,
                                                                                   run.stderr)


# For each line read, forks a process that logs in and out without pause, as processes started
# again and again would, and says its pid; then says how it ended. Forked, not started: a process
# of its own costs 0.3 s of imports, and the stops are many.
STOPPED_LOGINS = """
import os, signal, sys
from pathlib import Path
from signserver.hsm.session import TokenSession
from signserver.secret import Secret

for _ in sys.stdin:
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        session = TokenSession(Path(sys.argv[1]), "stopped", Secret(sys.argv[2]))
        session.run(lambda s: None, "log in")
        session.close()
        print(os.getpid(), flush=True)
        while True:
            session.run(lambda s: None, "log in")
            session.close()
    _, status = os.waitpid(child, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""
STOPS = 30


@requires_softhsm("its token file, rewritten at every login")
def test_a_process_stopped_as_it_logs_in_leaves_the_token_readable(config, tmp_path):
    """SoftHSM 2.6.1 empties a token's file and writes it again at every login. On the code before,
    a SIGTERM sent at a random moment to a process logging in again and again left that file
    empty, the token unreadable, in about a third of the tries."""
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "stopped", "--so-pin", "so-pin-0",
                    "--pin", "user-pin-0"], check=True, capture_output=True, env=env)
    token_file, = tokens.glob("*/token.object")
    forker = subprocess.Popen([sys.executable, "-c", STOPPED_LOGINS, str(config.hsm.module), "user-pin-0"], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for tried in range(STOPS):
            forker.stdin.write("log in\n")
            forker.stdin.flush()
            pid = forker.stdout.readline()
            assert pid.strip().isdigit(), f"stop {tried}: the process could not log in ({pid!r})"
            time.sleep(random.uniform(0.005, 0.05))
            os.kill(int(pid), signal.SIGTERM)
            assert forker.stdout.readline() == f"{-signal.SIGTERM}\n"
            assert token_file.stat().st_size > 0, f"stop {tried} left the token's file empty"
    finally:
        forker.stdin.close()  # its loop ends; killed if it does not (a child it waits for, stuck)
        stop(forker)
        forker.stdout.close()
    listed = subprocess.run(["softhsm2-util", "--show-slots"], capture_output=True, text=True, env=env, check=True)
    assert "Label:            stopped" in listed.stdout
