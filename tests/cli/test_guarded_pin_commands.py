"""`signserver hsm change-pin` and `signserver hsm init` on an initialised token log in (or have
the token verify a PIN) through the PIN guard, as every other login does
(signserver/hsm/pin_guard.py): a PIN the token refused is remembered and not tried again, and no
PIN is tried while the token reports wrong tries, unless hsm.login_when_pin_count_low allows it.

SoftHSM never locks a PIN, but reports USER_PIN_COUNT_LOW (SO_PIN_COUNT_LOW) after a wrong try
until the next successful login: the flag a login would clear proves, by behaviour, that a PIN
was not tried.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from signserver.hsm.pin_guard import SO, USER, RefusedPins, refused_pins_file
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, requires_softhsm
from tests.hsm import test_so_pin_guard as so_guard_tests

pytestmark = [requires_softhsm("tokens of its own, made in SoftHSM's free slot, given wrong PINs"),
              pytest.mark.sqlite_only]

SO_RIGHT, SO_WRONG = "so-pin-right-1", "so-pin-wrong-2"
USER_RIGHT, USER_WRONG = "user-pin-right-1", "user-pin-wrong-2"
NEW_PIN = "a-new-user-pin-3"


def new_token(prefix: str) -> str:
    return so_guard_tests.new_token(prefix, SO_RIGHT, USER_RIGHT)


flags = so_guard_tests.token_flags


def signserver(state_dir, state: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(state),
                   "SIGNSERVER_DATABASE_URL": f"sqlite:///{state / 'signserver.db'}", **env}
    return cli_forkserver.run([str(SIGNSERVER), "hsm", *args], env=environment, capture_output=True, text=True,
                              timeout=120)


def slot_of(state_dir, state: Path, label: str) -> int:
    slots = signserver(state_dir, state, "slots", "--json")
    assert slots.returncode == 0, slots.stderr
    return next(s["slot_id"] for s in json.loads(slots.stdout) if s["token_label"] == label)


def test_a_wrong_current_pin_at_change_pin_is_remembered_and_withholds_the_next_login(config, state_dir, tmp_path):
    token = new_token("change-pin")
    path = refused_pins_file(tmp_path)

    def change(current: str, **env: str):
        return signserver(state_dir, tmp_path, "change-pin", "--token", token, SIGNSERVER_HSM_USER_PIN=current,
                          SIGNSERVER_HSM_NEW_PIN=NEW_PIN, **env)

    refused = change(USER_WRONG)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert USER_WRONG not in refused.stderr + refused.stdout
    assert RefusedPins(path).count(token, USER) == 1 and USER_WRONG not in path.read_text()
    assert "user PIN count low" in flags(config, token)

    # The right PIN, while the token reports a wrong try: not tried, as at any other login.
    withheld = change(USER_RIGHT)
    assert withheld.returncode == 1, withheld.stderr
    assert "USER_PIN_COUNT_LOW" in withheld.stderr and "hsm.login_when_pin_count_low" in withheld.stderr
    assert "Traceback" not in withheld.stderr and USER_RIGHT not in withheld.stderr
    assert "user PIN count low" in flags(config, token), "the PIN reached the token (a login clears the flag)"

    # The refused PIN again, even where a login after wrong tries is allowed: not tried.
    again = change(USER_WRONG, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert again.returncode == 1, again.stderr
    assert "refused the configured PIN before" in again.stderr and str(path) in again.stderr
    assert RefusedPins(path).count(token, USER) == 1

    allowed = change(USER_RIGHT, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "user PIN count low" not in flags(config, token)
    assert RefusedPins(path).count(token) == 0
    listed = signserver(state_dir, tmp_path, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=NEW_PIN)
    assert listed.returncode == 0, listed.stderr


def test_a_wrong_current_so_pin_at_init_is_remembered_and_withholds_the_next_try(config, state_dir, tmp_path):
    token = new_token("init-so")
    slot = str(slot_of(state_dir, tmp_path, token))
    path = refused_pins_file(tmp_path)
    new_so, new_user = "so-pin-after-init", "user-pin-after-init"

    def init(current: str, **env: str):
        return signserver(state_dir, tmp_path, "init", "--label", token, "--slot", slot, "--yes",
                          SIGNSERVER_HSM_CURRENT_SO_PIN=current, SIGNSERVER_HSM_SO_PIN=new_so,
                          SIGNSERVER_HSM_USER_PIN=new_user, **env)

    refused = init(SO_WRONG)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert SO_WRONG not in refused.stderr + refused.stdout
    assert RefusedPins(path).count(token, SO) == 1 and SO_WRONG not in path.read_text()
    assert "SO PIN count low" in flags(config, token)

    withheld = init(SO_RIGHT)
    assert withheld.returncode == 1, withheld.stderr
    assert "SO_PIN_COUNT_LOW" in withheld.stderr and "hsm.login_when_pin_count_low" in withheld.stderr
    assert "Traceback" not in withheld.stderr and SO_RIGHT not in withheld.stderr
    assert "SO PIN count low" in flags(config, token), "the SO PIN reached the token"
    listed = signserver(state_dir, tmp_path, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_RIGHT)
    assert listed.returncode == 0, listed.stderr  # not initialised again: the old user PIN still opens it

    again = init(SO_WRONG, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert again.returncode == 1, again.stderr
    assert "refused this SO PIN before" in again.stderr and str(path) in again.stderr
    assert RefusedPins(path).count(token, SO) == 1

    allowed = init(SO_RIGHT, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "SO PIN count low" not in flags(config, token)
    assert RefusedPins(path).count(token) == 0
    listed = signserver(state_dir, tmp_path, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=new_user)
    assert listed.returncode == 0, listed.stderr


def test_init_forgets_the_user_pins_the_token_refused_before_it_was_initialised_again(config, state_dir, tmp_path):
    """Initialising sets the user PIN, as change-pin and unblock-pin do: a PIN refused before may be the new one."""
    token = new_token("init-user")
    slot = str(slot_of(state_dir, tmp_path, token))
    refused = signserver(state_dir, tmp_path, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_WRONG)
    assert refused.returncode == 1, refused.stderr
    assert RefusedPins(refused_pins_file(tmp_path)).count(token, USER) == 1

    init = signserver(state_dir, tmp_path, "init", "--label", token, "--slot", slot, "--yes",
                      SIGNSERVER_HSM_CURRENT_SO_PIN=SO_RIGHT, SIGNSERVER_HSM_SO_PIN=SO_RIGHT,
                      SIGNSERVER_HSM_USER_PIN=USER_WRONG)
    assert init.returncode == 0, init.stderr
    listed = signserver(state_dir, tmp_path, "list", "--token", token, SIGNSERVER_HSM_USER_PIN=USER_WRONG)
    assert listed.returncode == 0, listed.stderr
