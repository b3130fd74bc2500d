"""No PIN lockout caused by the server: what is checked before each login, and the refusals
remembered across processes.

SoftHSM never locks a PIN and keeps no counter, but it reports USER_PIN_COUNT_LOW after a wrong
try until the next successful login: a PIN that would succeed and the flag that a login would
clear prove, by behaviour, that a PIN was not tried.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pkcs11 import TokenFlag

from signserver.errors import ConfigurationError, HsmLoginFailed, HsmLoginWithheld, HsmPinLocked
from signserver.hsm.pin_guard import PinGuard, RefusedPins, login_refusal, refused_pins_file
from signserver.hsm.session import TokenSession
from signserver.secret import Secret
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, requires_softhsm

RIGHT = "pin-right-1"
WRONG = "pin-wrong-2"
OTHER = "pin-other-3"
# These make tokens of their own with softhsm2-util and try wrong PINs on them.
SOFTHSM_TOKENS = requires_softhsm("tokens of its own, made in SoftHSM's free slot, given wrong PINs")


def new_token(config, pin: str = RIGHT) -> str:
    """A fresh SoftHSM token of this test's own, labelled uniquely, with user PIN ``pin``."""
    label = f"pins-{uuid.uuid4().hex[:8]}"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "so-pin-0",
                    "--pin", pin], check=True, capture_output=True, env=_softhsm_env(config))
    return label


def _softhsm_env(config) -> dict[str, str]:
    return {**cli_env(config.state_dir), "SOFTHSM2_CONF": str(config.hsm.softhsm2_conf)}


def set_token_pin(config, label: str, old: str, new: str) -> None:
    """Change the token's user PIN from another process, as an administrator's tool would."""
    subprocess.run(["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", label, "--login",
                    "--pin", old, "--change-pin", "--new-pin", new], check=True, capture_output=True,
                   env=_softhsm_env(config))


def count_low(config, label: str) -> bool:
    """Whether the token reports a wrong try since its last successful login (read by pkcs11-tool)."""
    listing = subprocess.run(["pkcs11-tool", "--module", str(config.hsm.module), "-L"], check=True,
                             capture_output=True, text=True, env=_softhsm_env(config)).stdout
    block = listing.split(f"token label        : {label}\n")[1].split("Slot ")[0]
    return "user PIN count low" in block


def signserver(config, state: Path, label: str, pin: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A `signserver hsm list` (or ``args``) on token ``label`` with ``pin`` configured, in a process of its own."""
    environment = {**_softhsm_env(config), "SIGNSERVER_STATE_DIR": str(state), "SIGNSERVER_HSM_TOKEN_LABEL": label,
                   "SIGNSERVER_HSM_USER_PIN": pin, **env}
    return cli_forkserver.run([str(SIGNSERVER), *(args or ("hsm", "list"))], env=environment, capture_output=True,
                              text=True, timeout=120)


def wrong_try(config, label: str) -> None:
    """Someone else's wrong PIN, from another process: SoftHSM then reports count low."""
    tried = subprocess.run(["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", label, "--login",
                            "--pin", WRONG, "-O"], capture_output=True, text=True, env=_softhsm_env(config))
    assert "CKR_PIN_INCORRECT" in tried.stdout + tried.stderr


# --- the token's flags ----------------------------------------------------------------------

def test_a_locked_pin_is_reported_with_the_command_that_unblocks_it():
    for allowed in (False, True):
        refusal = login_refusal(TokenFlag.USER_PIN_LOCKED | TokenFlag.LOGIN_REQUIRED, "tok", allowed)
        assert isinstance(refusal, HsmPinLocked)
        assert "signserver hsm unblock-pin" in str(refusal) and "'tok'" in str(refusal)


@pytest.mark.parametrize("flag, words", [(TokenFlag.USER_PIN_COUNT_LOW, "USER_PIN_COUNT_LOW"),
                                         (TokenFlag.USER_PIN_FINAL_TRY, "USER_PIN_FINAL_TRY"),
                                         (TokenFlag.USER_PIN_COUNT_LOW | TokenFlag.USER_PIN_FINAL_TRY,
                                          "USER_PIN_FINAL_TRY")])
def test_no_login_while_the_token_reports_wrong_tries_unless_allowed(flag, words):
    refusal = login_refusal(flag | TokenFlag.LOGIN_REQUIRED | TokenFlag.TOKEN_INITIALIZED, "tok", False)
    assert isinstance(refusal, HsmLoginWithheld)
    message = str(refusal)
    assert words in message and "could lock the token" in message
    assert "hsm.login_when_pin_count_low" in message and "SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW" in message
    assert login_refusal(flag, "tok", True) is None


def test_a_token_without_wrong_tries_is_logged_in_to():
    assert login_refusal(TokenFlag.LOGIN_REQUIRED | TokenFlag.TOKEN_INITIALIZED | TokenFlag.RNG, "tok", False) is None


@SOFTHSM_TOKENS
def test_wrong_tries_reported_by_the_token_stop_every_new_process_until_allowed(config, tmp_path):
    label = new_token(config)
    wrong_try(config, label)
    assert count_low(config, label)

    refused = signserver(config, tmp_path, label, RIGHT)
    assert refused.returncode == 1, refused.stderr
    assert "USER_PIN_COUNT_LOW" in refused.stderr and "hsm.login_when_pin_count_low" in refused.stderr
    assert "Traceback" not in refused.stderr and RIGHT not in refused.stderr
    assert count_low(config, label), "the PIN reached the token (a successful login clears the flag)"

    allowed = signserver(config, tmp_path, label, RIGHT, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert allowed.returncode == 0, allowed.stderr
    assert not count_low(config, label)


@SOFTHSM_TOKENS
def test_a_process_that_logged_in_reopens_its_session_after_wrong_tries_elsewhere(config, tmp_path):
    label = new_token(config)
    session = TokenSession(config.hsm.module, label, Secret(RIGHT), PinGuard(RefusedPins(tmp_path / "r.json")))
    session.run(lambda s: s.generate_random(8), "log in")
    wrong_try(config, label)
    assert count_low(config, label)
    session.close()
    assert len(session.run(lambda s: s.generate_random(8), "sign")) == 1  # its PIN was accepted: not a guess
    assert not count_low(config, label)


# --- refusals remembered across processes ----------------------------------------------------

@SOFTHSM_TOKENS
def test_a_refusal_is_remembered_by_another_process_even_once_the_token_takes_that_pin(config, tmp_path):
    label = new_token(config)
    first = signserver(config, tmp_path, label, WRONG)
    assert first.returncode == 1 and "refused the PIN" in first.stderr, first.stderr
    path = refused_pins_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert WRONG not in path.read_text() and RefusedPins(path).count(label) == 1

    set_token_pin(config, label, RIGHT, WRONG)  # the token would now accept the refused PIN
    assert not count_low(config, label)
    second = signserver(config, tmp_path, label, WRONG)
    assert second.returncode == 1
    assert "refused the configured PIN before" in second.stderr and str(path) in second.stderr
    assert "Traceback" not in second.stderr and WRONG not in second.stderr
    assert RefusedPins(path).count(label) == 1

    path.unlink()  # what the message tells an administrator to do once the token's PIN is that value
    assert signserver(config, tmp_path, label, WRONG).returncode == 0


@SOFTHSM_TOKENS
def test_a_changed_configured_pin_is_tried_and_its_success_forgets_the_refusal(config, tmp_path):
    label, other = new_token(config), new_token(config)
    assert signserver(config, tmp_path, label, WRONG).returncode == 1
    assert signserver(config, tmp_path, other, WRONG).returncode == 1
    path = refused_pins_file(tmp_path)

    set_token_pin(config, label, RIGHT, OTHER)
    changed = signserver(config, tmp_path, label, OTHER)
    assert changed.returncode == 0, changed.stderr
    assert RefusedPins(path).count(label) == 0 and RefusedPins(path).count(other) == 1  # one token's only
    assert not count_low(config, label)


@SOFTHSM_TOKENS
def test_the_refusal_is_the_token_s_own_not_the_label_s(config, tmp_path):
    label = new_token(config)
    guard = PinGuard(RefusedPins(tmp_path / "r.json"))
    with pytest.raises(HsmLoginFailed, match="refused the PIN"):
        TokenSession(config.hsm.module, label, Secret(WRONG), guard).run(lambda s: None, "log in")
    RefusedPins(tmp_path / "r.json").remember("another-serial", "another-label", Secret(RIGHT))
    entries = json.loads((tmp_path / "r.json").read_text())["refused"]
    assert {e["token_label"] for e in entries} == {label, "another-label"}
    assert all(RIGHT not in e["pin_hash"] and WRONG not in e["pin_hash"] for e in entries)
    session = TokenSession(config.hsm.module, label, Secret(RIGHT), PinGuard(RefusedPins(tmp_path / "r.json"),
                                                                             login_when_pin_count_low=True))
    session.run(lambda s: None, "log in")  # refused elsewhere, not by this token: tried
    assert RefusedPins(tmp_path / "r.json").count("another-label") == 1
    session.close()


@SOFTHSM_TOKENS
def test_processes_started_together_with_a_wrong_pin_reach_the_token_once(config, tmp_path):
    label = new_token(config)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: signserver(config, tmp_path, label, WRONG), range(4)))
    assert all(r.returncode == 1 for r in results)
    assert RefusedPins(refused_pins_file(tmp_path)).count(label) == 1  # one try: the others waited, then knew
    assert sum("refused the configured PIN before" in r.stderr for r in results) == 3


@SOFTHSM_TOKENS
def test_a_refusal_that_cannot_be_written_down_still_stops_this_process_trying_again(config, tmp_path):
    """A refusals file that cannot be written (disk full, say) must not hide the token's refusal:
    the process that saw it never tries that PIN again, even where a login after wrong tries is
    allowed."""
    label = new_token(config)
    path = refused_pins_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.with_suffix(".tmp").mkdir()  # where the file is written first: now it cannot be
    guard = PinGuard(RefusedPins(path), login_when_pin_count_low=True)
    session = TokenSession(config.hsm.module, label, Secret(WRONG), guard=guard)
    with pytest.raises(HsmLoginFailed) as first:
        session.run(lambda s: s.generate_random(8), "reach the token")
    assert not isinstance(first.value, HsmLoginWithheld)
    set_token_pin(config, label, RIGHT, WRONG)  # a second try would now succeed: it must not be made
    with pytest.raises(HsmLoginFailed, match="refused the configured PIN earlier"):
        session.run(lambda s: s.generate_random(8), "reach the token")


@SOFTHSM_TOKENS
def test_setting_the_user_pin_with_unblock_pin_forgets_the_refusals(config, tmp_path):
    """The security officer sets the user PIN to what is configured: the server then logs in
    without anyone removing the refusals file by hand."""
    label = new_token(config)
    assert signserver(config, tmp_path, label, WRONG).returncode == 1
    assert RefusedPins(refused_pins_file(tmp_path)).count(label) == 1
    so_pin, new_pin = tmp_path / "so", tmp_path / "new"
    so_pin.write_text("so-pin-0\n")
    new_pin.write_text(WRONG + "\n")
    so_pin.chmod(0o600), new_pin.chmod(0o600)
    unblocked = signserver(config, tmp_path, label, WRONG, "hsm", "unblock-pin", "--token", label,
                           "--so-pin-file", str(so_pin), "--new-pin-file", str(new_pin))
    assert unblocked.returncode == 0, unblocked.stderr
    assert RefusedPins(refused_pins_file(tmp_path)).count(label) == 0
    assert signserver(config, tmp_path, label, WRONG).returncode == 0


@pytest.mark.parametrize("text", ['{"refused": null}', '{"refused": 5}', '{"refused": {"pin_hash": "x"}}'])
def test_a_refusals_file_of_another_shape_is_named_with_what_to_do(tmp_path, text):
    path = tmp_path / "refused-pins.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=r"refused PINs in .*remove the file"):
        RefusedPins(path).refused("serial", "label", Secret(RIGHT))


def test_a_hand_edited_refusal_of_another_shape_is_left_out(tmp_path):
    path = tmp_path / "refused-pins.json"
    path.write_text(json.dumps({"refused": [{"token_serial": "s", "token_label": "l", "pin_hash": 5}, "text"]}))
    refusals = RefusedPins(path)
    assert refusals.refused("s", "l", Secret(RIGHT)) is False
    refusals.remember("s", "l", Secret(RIGHT))
    assert refusals.refused("s", "l", Secret(RIGHT)) is True
