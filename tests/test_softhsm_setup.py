"""softhsm-setup: a token under the state directory, PINs in 0600 files, idempotent."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from tests.conftest import ROOT, SIGNSERVER

# About the token's set-up script: it opens no database.
pytestmark = pytest.mark.one_store

SCRIPT = ROOT / "softhsm-setup" / "softhsm-setup"


def run_setup(state, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNSERVER", "SOFTHSM2_CONF"))}
    environment.update(SIGNSERVER=str(SIGNSERVER), **env)
    return subprocess.run([str(SCRIPT), str(state)], env=environment, capture_output=True, text=True, timeout=120)


def test_fresh_setup_then_nothing_to_do(tmp_path):
    state = tmp_path / "state"
    first = run_setup(state, SIGNSERVER_HSM_TOKEN_LABEL="setup-test")
    assert first.returncode == 0, first.stderr
    assert "initialised" in first.stdout

    conf = (state / "softhsm" / "softhsm2.conf").read_text()
    assert f"directories.tokendir = {state.resolve()}/softhsm/tokens" in conf
    assert any((state / "softhsm" / "tokens").iterdir()), "the token lives under the state directory"
    for name in ("so-pin", "user-pin"):
        path = state / "hsm" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) == 32
    assert (state / "hsm" / "so-pin").read_text() != (state / "hsm" / "user-pin").read_text()
    pins = {name: (state / "hsm" / name).read_text() for name in ("so-pin", "user-pin")}

    second = run_setup(state, SIGNSERVER_HSM_TOKEN_LABEL="setup-test")
    assert second.returncode == 0, second.stderr
    assert "is ready" in second.stdout and "initialised" not in second.stdout
    assert pins == {name: (state / "hsm" / name).read_text() for name in ("so-pin", "user-pin")}


def test_pins_from_the_environment_are_used(tmp_path):
    state = tmp_path / "state"
    result = run_setup(state, SIGNSERVER_HSM_USER_PIN="chosen-user-pin", SIGNSERVER_HSM_SO_PIN="chosen-so-pin")
    assert result.returncode == 0, result.stderr
    assert (state / "hsm" / "user-pin").read_text().strip() == "chosen-user-pin"
    assert "chosen-user-pin" not in result.stdout + result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
    listed = subprocess.run([str(SIGNSERVER), "hsm", "list"], capture_output=True, text=True,
                            env={**env, "SIGNSERVER_STATE_DIR": str(state),
                                 "SOFTHSM2_CONF": str(state / "softhsm" / "softhsm2.conf")})
    assert listed.returncode == 0, listed.stderr
    assert "no keys on the token" in listed.stdout


def test_pins_outside_softhsms_lengths_are_refused_before_anything_is_written(tmp_path):
    state = tmp_path / "state"
    result = run_setup(state, SIGNSERVER_HSM_USER_PIN="abc", SIGNSERVER_HSM_SO_PIN="chosen-so-pin")
    assert result.returncode == 1
    assert "SIGNSERVER_HSM_USER_PIN has 3 characters; SoftHSM takes PINs of 4 to 255" in result.stderr
    assert "abc" not in result.stderr.replace("SIGNSERVER", "")
    assert not (state / "hsm" / "so-pin").exists() and not (state / "hsm" / "user-pin").exists()
    long = run_setup(state, SIGNSERVER_HSM_SO_PIN="x" * 256)
    assert long.returncode == 1 and "256 characters" in long.stderr
