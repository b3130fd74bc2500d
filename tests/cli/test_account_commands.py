"""`signserver account ...` as an operator runs it: what each command prints and writes, and
how it refuses input it cannot use (one line, the right exit status, nothing changed)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests import cli_forkserver
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, database_url

EXIT_ERROR, EXIT_USAGE = 1, 2
HOLDER = "陳大文 Chan Tai Man"


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A database of this module's own, on the shared token."""
    return tmp_path_factory.mktemp("account-commands")


def run(state_dir, db, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=180,
                              env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"),
                                          **env))


def assert_refused(result, status: int, *words: str) -> None:
    """Exit ``status``; one ``signserver...`` line on stderr naming ``words``; no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    if status == EXIT_USAGE:
        assert lines[0].startswith("usage: signserver")
        lines = [line for line in lines if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("signserver"), result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def new_name() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


def create(state_dir, state, name: str, *extra: str):
    return run(state_dir, state, "account", "create", name, "--name", HOLDER, "--email", f"{name}@example.mo",
               "--key-algorithm", "ec-p256", *extra, SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)


def listed(state_dir, state) -> list[str]:
    result = run(state_dir, state, "account", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [a["username"] for a in json.loads(result.stdout)]


# --- the OTP's QR code, shown once --------------------------------------------------------------

def test_create_with_json_writes_the_qr_png_too(state_dir, state, tmp_path):
    name, png = new_name(), tmp_path / "otp.png"
    made = create(state_dir, state, name, "--json", "--qr-png", str(png))
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert answer["otp_uri"].startswith(f"otpauth://totp/signserver:{name}")
    assert png.read_bytes().startswith(b"\x89PNG")  # the seed is shown once: the file asked for is written
    assert png.stat().st_mode & 0o777 == 0o600  # the QR code holds the OTP seed


def test_reset_otp_with_json_writes_the_qr_png_too(state_dir, state, tmp_path):
    name, png = new_name(), tmp_path / "otp.png"
    assert create(state_dir, state, name).returncode == 0
    reset = run(state_dir, state, "account", "reset-otp", name, "--json", "--qr-png", str(png))
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout)["otp_uri"].startswith(f"otpauth://totp/signserver:{name}")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_mode & 0o777 == 0o600


# --- input the command cannot use -----------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--name", "--email", "--organisation"])
def test_create_refuses_an_argument_that_is_not_text(state_dir, state, flag):
    # A byte that is not UTF-8 on the command line (a terminal in another encoding) reaches Python
    # as a lone surrogate, which no database can keep.
    name = new_name()
    values = {"--name": HOLDER, "--email": f"{name}@example.mo", "--organisation": "Example Lda"}
    values[flag] = "Chan \udcff" if flag != "--email" else f"{name}\udcff@example.mo"
    refused = run(state_dir, state, "account", "create", name, *[x for kv in values.items() for x in kv],
                  "--kind", "corporate", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert_refused(refused, EXIT_USAGE, flag)
    assert name not in listed(state_dir, state)


def test_update_refuses_an_argument_that_is_not_text(state_dir, state):
    name = new_name()
    assert create(state_dir, state, name).returncode == 0
    refused = run(state_dir, state, "account", "update", name, "--name", "Chan \udcff")
    assert_refused(refused, EXIT_USAGE, "--name")
    shown = json.loads(run(state_dir, state, "account", "show", name, "--json").stdout)
    assert shown["account"]["holder_name"] == HOLDER


def test_update_with_nothing_to_change_is_refused(state_dir, state):
    name = new_name()
    assert create(state_dir, state, name).returncode == 0
    refused = run(state_dir, state, "account", "update", name)
    assert_refused(refused, EXIT_ERROR, "nothing to change", "--name", "--given-name", "--surname")


def test_create_refuses_a_password_that_is_not_text(state_dir, state):
    name = new_name()
    refused = run(state_dir, state, "account", "create", name, "--name", HOLDER, "--email", f"{name}@example.mo",
                  SIGNSERVER_ACCOUNT_PASSWORD="Secret-\udcff-2026")
    assert_refused(refused, EXIT_ERROR, "not valid UTF-8", "SIGNSERVER_ACCOUNT_PASSWORD")
    assert "\udcff" not in refused.stderr and "Secret-" not in refused.stderr
    assert name not in listed(state_dir, state)


# --- reset-password: the holder's keys are lost, so it is confirmed -------------------------------

EXIT_NOT_CONFIRMED = 1  # as every refused command, `hsm delete` and `hsm init` without --yes included


def run_on_terminal(state_dir, db, *args, answer: str, **env) -> tuple[int, str]:
    """Run the command with a terminal as its standard input, typing ``answer`` at it."""
    import os
    import pty
    import subprocess

    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(SIGNSERVER), *args], stdin=terminal, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"),
                                           **env))
    os.close(terminal)
    os.write(controller, answer.encode() + b"\n")
    output, _ = process.communicate(timeout=180)
    os.close(controller)
    return process.returncode, output


def credential_statuses(state_dir, state, name: str) -> list[str]:
    shown = run(state_dir, state, "account", "show", name, "--json")
    assert shown.returncode == 0, shown.stderr
    return [c["status"] for c in json.loads(shown.stdout)["credentials"]]


def test_reset_password_off_a_terminal_without_yes_is_refused_changing_nothing(state_dir, state):
    name = new_name()
    assert create(state_dir, state, name).returncode == 0
    refused = run(state_dir, state, "account", "reset-password", name, SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2030")
    assert_refused(refused, EXIT_NOT_CONFIRMED, name, "--yes", "keys")
    assert refused.stdout == ""
    assert credential_statuses(state_dir, state, name) == ["active"]

    done = run(state_dir, state, "account", "reset-password", name, "--yes",
               SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2030")
    assert done.returncode == 0, done.stderr
    assert credential_statuses(state_dir, state, name) == ["disabled"]


def test_reset_password_on_a_terminal_asks_for_the_account_name(state_dir, state):
    name = new_name()
    assert create(state_dir, state, name).returncode == 0
    command = ("account", "reset-password", name)
    code, output = run_on_terminal(state_dir, state, *command, answer="y",
                                   SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2031")
    assert code == EXIT_ERROR and "never sign again" in output and "not confirmed" in output, output
    assert credential_statuses(state_dir, state, name) == ["active"]

    code, output = run_on_terminal(state_dir, state, *command, answer=name,
                                   SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2031")
    assert code == 0, output
    assert "New recovery code" in output
    assert credential_statuses(state_dir, state, name) == ["disabled"]


def test_reset_password_ended_at_the_question_is_one_line_and_changes_nothing(state_dir, state):
    name = new_name()
    assert create(state_dir, state, name).returncode == 0
    code, output = run_on_terminal(state_dir, state, "account", "reset-password", name, answer="\x04",  # Ctrl-D
                                   SIGNSERVER_ACCOUNT_PASSWORD="Reset-pass-2032")
    assert code == EXIT_NOT_CONFIRMED, output
    assert "Traceback" not in output and "EOFError" not in output
    assert output.strip().splitlines()[-1] == "signserver: not confirmed: the account is unchanged"
    assert credential_statuses(state_dir, state, name) == ["active"]
