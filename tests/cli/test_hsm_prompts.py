"""The `signserver hsm` commands' prompts on a terminal: an administrator who ends the input
(Ctrl-D) at a PIN prompt or a confirmation gets one line and exit code 1, never a traceback, and
nothing changes."""

from __future__ import annotations

import os
import pty
import subprocess
import time

import pytest

from tests.cli.test_guarded_pin_commands import USER_RIGHT, flags, new_token, slot_of
from tests.conftest import SIGNSERVER, cli_env, requires_softhsm
from tests.readable import readable

pytestmark = [requires_softhsm("tokens of its own, made in SoftHSM's free slot"), pytest.mark.sqlite_only]


def on_terminal(state_dir, state, args: tuple[str, ...], env: dict[str, str],
                stderr: int) -> tuple[subprocess.Popen, int]:
    """``signserver hsm ARGS`` started with a terminal as its standard input; the process and the
    terminal's controlling end, to type on."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(SIGNSERVER), "hsm", *args], stdin=terminal, stdout=subprocess.PIPE,
                               stderr=stderr, start_new_session=True,
                               env={**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(state), **env})
    os.close(terminal)
    return process, controller


def end_input_on_terminal(state_dir, state, *args: str, **env: str) -> tuple[int, str]:
    """Run ``signserver hsm ARGS`` with a terminal as its standard input and end the input there
    (Ctrl-D) once it asks something (getpass flushes what was typed before it asks)."""
    process, controller = on_terminal(state_dir, state, args, env, subprocess.STDOUT)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if readable(process.stdout, 0.2):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                output += chunk
            if output.rstrip().endswith(b":"):  # a question waits
                time.sleep(0.2)
                os.write(controller, b"\x04")
                output += b"\n"
        process.wait(timeout=10)
    finally:
        process.kill()
        process.stdout.close()
        os.close(controller)
    return process.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("command", ["change-pin", "change-so-pin", "unblock-pin"])
def test_input_ended_at_a_pin_prompt_is_one_line(config, state_dir, tmp_path, command):
    token = new_token("prompt")
    code, output = end_input_on_terminal(state_dir, tmp_path, command, "--token", token)
    assert code == 1, output
    assert "Traceback" not in output and "EOFError" not in output
    assert "signserver: " in output and "PIN" in output.split("signserver: ", 1)[1]
    assert "count low" not in flags(config, token)


def test_input_ended_at_the_reinitialisation_question_changes_nothing(config, state_dir, tmp_path):
    token = new_token("prompt-init")
    code, output = end_input_on_terminal(state_dir, tmp_path, "init", "--label", token, "--slot",
                                         str(slot_of(state_dir, tmp_path, token)))
    assert code == 1, output
    assert "Traceback" not in output and "not confirmed" in output
    listed = subprocess.run([str(SIGNSERVER), "hsm", "list", "--token", token], capture_output=True, text=True,
                            env={**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(tmp_path),
                                 "SIGNSERVER_HSM_USER_PIN": USER_RIGHT}, timeout=120)
    assert listed.returncode == 0, listed.stderr


def answer_on_terminal(state_dir, state, answer: bytes, *args: str, **env: str) -> tuple[int, str, str]:
    """Run ``signserver hsm ARGS`` with a terminal as its standard input, and type ``answer`` once
    it asks its question (on standard error). Returns the exit code, standard output and error."""
    process, controller = on_terminal(state_dir, state, args, env, subprocess.PIPE)
    asked = b""
    try:
        deadline = time.monotonic() + 60
        while b"[y/N]" not in asked and time.monotonic() < deadline:
            if readable(process.stderr, 0.2):
                chunk = os.read(process.stderr.fileno(), 4096)
                if not chunk:
                    break
                asked += chunk
        os.write(controller, answer)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        os.close(controller)
    return process.returncode, out.decode(errors="replace"), (asked + err).decode(errors="replace")


def test_a_declined_deletion_with_json_prints_nothing_but_json_on_standard_output(state_dir, tmp_path):
    token = new_token("prompt-delete")
    environment = {**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(tmp_path), "SIGNSERVER_HSM_USER_PIN": USER_RIGHT}
    made = subprocess.run([str(SIGNSERVER), "hsm", "keygen", "--algorithm", "ec-p256", "--label", "kept",
                           "--token", token], capture_output=True, text=True, env=environment, timeout=120)
    assert made.returncode == 0, made.stderr
    code, out, err = answer_on_terminal(state_dir, tmp_path, b"n\n", "delete", "kept", "--token", token, "--json",
                                        SIGNSERVER_HSM_USER_PIN=USER_RIGHT)
    assert code == 1 and out == "" and "nothing deleted" in err, (out, err)
