"""The security officer's PIN is guarded as the user PIN is (signserver/hsm/pin_guard.py): a wrong
SO PIN given to the key ceremony's export, `hsm unblock-pin` or `hsm change-so-pin` is remembered
and not tried again, no SO login is tried while the token reports wrong SO tries, and a locked SO
PIN is said as such.

SoftHSM never locks a PIN, but reports SO_PIN_COUNT_LOW after a wrong SO try until the next
successful SO login: the flag a login would clear proves, by behaviour, that a PIN was not tried.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from pkcs11 import TokenFlag

from signserver.errors import HsmLoginWithheld, HsmPinLocked
from signserver.hsm.master_keys import master_label
from signserver.hsm.pin_guard import SO, RefusedPins, login_refusal, refused_pins_file
from signserver.secret import Secret
from signserver.service import SignService
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env, requires_softhsm

pytestmark = [requires_softhsm("tokens of its own, given wrong SO PINs"), pytest.mark.sqlite_only]

SO_RIGHT, SO_WRONG = "so-pin-right-1", "so-pin-wrong-2"
USER = "user-pin-of-so-tests"
DESTINATION_SO, DESTINATION_USER = "so-pin-of-the-destination", "user-pin-of-the-destination"


def new_token(prefix: str, so_pin: str = SO_RIGHT, user_pin: str = USER) -> str:
    label = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", so_pin,
                    "--pin", user_pin], check=True, capture_output=True)
    return label


def token_flags(config, label: str) -> str:
    """The token's flags as pkcs11-tool lists them."""
    listing = subprocess.run(["pkcs11-tool", "--module", str(config.hsm.module), "-L"], check=True,
                             capture_output=True, text=True, env=cli_env(config.state_dir)).stdout
    return listing.split(f"token label        : {label}\n")[1].split("Slot ")[0]


def so_count_low(config, label: str) -> bool:
    """Whether the token reports a wrong SO PIN since its last SO login (read by pkcs11-tool)."""
    return "SO PIN count low" in token_flags(config, label)


def signserver(state_dir, state: Path, token: str, user_pin: str, *args: str, **env: str):
    environment = {**cli_env(state_dir), "SIGNSERVER_STATE_DIR": str(state), "SIGNSERVER_HSM_USER_PIN": user_pin,
                   "SIGNSERVER_DATABASE_URL": f"sqlite:///{state / 'signserver.db'}", **env}
    return cli_forkserver.run([str(SIGNSERVER), "hsm", *args, "--token", token], env=environment,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture
def ceremony(config, state_dir, tmp_path):
    """A source token with its first master key, and a destination's transport key to export to."""
    source, destination = new_token("so-source"), new_token("so-destination", DESTINATION_SO, DESTINATION_USER)
    state = tmp_path / "source"
    state.mkdir()
    own = replace(config, state_dir=state, database_url=f"sqlite:///{state / 'signserver.db'}",
                  hsm=replace(config.hsm, token_label=source))
    service = SignService.from_config(own, user_pin=Secret(USER))
    try:
        service.prepare_database()
        service.packages.ensure_master()
    finally:
        service.close()
    transport = tmp_path / "transport.pem"
    begun = signserver(state_dir, tmp_path / "destination", destination, DESTINATION_USER, "master", "receive-begin",
                       "--out", str(transport))
    assert begun.returncode == 0, begun.stderr
    return source, state, transport


def export(state_dir, ceremony, out: Path, so_pin: str, **env: str):
    source, state, transport = ceremony
    return signserver(state_dir, state, source, USER, "master", "export", master_label(1), "--transport",
                      str(transport), "--out", str(out), SIGNSERVER_HSM_SO_PIN=so_pin, **env)


def test_a_wrong_so_pin_at_export_is_remembered_and_withholds_the_next_so_login(config, state_dir, ceremony,
                                                                                tmp_path):
    source, state, _ = ceremony
    path = refused_pins_file(state)

    first = export(state_dir, ceremony, tmp_path / "1.wrapped", SO_WRONG)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert SO_WRONG not in first.stderr and not (tmp_path / "1.wrapped").exists()
    assert RefusedPins(path).count(source) == 1 and SO_WRONG not in path.read_text()
    assert so_count_low(config, source)

    # The right SO PIN, while the token reports a wrong SO try: not tried, as for the user PIN.
    withheld = export(state_dir, ceremony, tmp_path / "2.wrapped", SO_RIGHT)
    assert withheld.returncode == 1, withheld.stderr
    assert "SO_PIN_COUNT_LOW" in withheld.stderr and "hsm.login_when_pin_count_low" in withheld.stderr
    assert "Traceback" not in withheld.stderr and SO_RIGHT not in withheld.stderr
    assert so_count_low(config, source), "the SO PIN reached the token (a successful login clears the flag)"

    # The refused SO PIN again, even where a login after wrong tries is allowed: not tried.
    again = export(state_dir, ceremony, tmp_path / "3.wrapped", SO_WRONG, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert again.returncode == 1, again.stderr
    assert "refused this SO PIN before" in again.stderr and str(path) in again.stderr
    assert RefusedPins(path).count(source) == 1

    allowed = export(state_dir, ceremony, tmp_path / "4.wrapped", SO_RIGHT, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "4.wrapped").exists()
    assert not so_count_low(config, source)
    assert RefusedPins(path).count(source) == 0  # the token took another SO PIN: its refusals are forgotten


def test_a_wrong_so_pin_at_unblock_pin_is_remembered_as_at_export(config, state_dir, tmp_path):
    token = new_token("so-unblock")
    new_pin = tmp_path / "new"
    new_pin.write_text("a-new-user-pin\n")
    new_pin.chmod(0o600)

    def unblock(so_pin: str, **env: str):
        return signserver(state_dir, tmp_path, token, USER, "unblock-pin", "--new-pin-file", str(new_pin),
                          SIGNSERVER_HSM_SO_PIN=so_pin, **env)

    refused = unblock(SO_WRONG)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert RefusedPins(refused_pins_file(tmp_path)).count(token) == 1
    again = unblock(SO_WRONG, SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert again.returncode == 1 and "refused this SO PIN before" in again.stderr, again.stderr
    assert "SO_PIN_COUNT_LOW" in unblock(SO_RIGHT).stderr
    assert so_count_low(config, token)


def test_a_locked_so_pin_is_said_as_such():
    for allowed in (False, True):
        refusal = login_refusal(TokenFlag.SO_PIN_LOCKED | TokenFlag.LOGIN_REQUIRED | TokenFlag.TOKEN_INITIALIZED,
                                "tok", allowed, SO)
        assert isinstance(refusal, HsmPinLocked)
        assert "SO PIN" in str(refusal) and "'tok'" in str(refusal)


def test_an_uninitialised_token_has_no_so_pin_to_be_locked():
    # SoftHSM's free slot, which takes any SO PIN at C_InitToken, reports these flags.
    free_slot = TokenFlag.RNG | TokenFlag.LOGIN_REQUIRED | TokenFlag.SO_PIN_LOCKED | TokenFlag.SO_PIN_TO_BE_CHANGED
    assert login_refusal(free_slot, "", False, SO) is None


@pytest.mark.parametrize("flag, words", [(TokenFlag.SO_PIN_COUNT_LOW, "SO_PIN_COUNT_LOW"),
                                         (TokenFlag.SO_PIN_FINAL_TRY, "SO_PIN_FINAL_TRY")])
def test_no_so_login_while_the_token_reports_wrong_so_tries_unless_allowed(flag, words):
    refusal = login_refusal(flag | TokenFlag.LOGIN_REQUIRED, "tok", False, SO)
    assert isinstance(refusal, HsmLoginWithheld) and words in str(refusal)
    assert login_refusal(flag, "tok", True, SO) is None
    # The user's flags do not stop an SO login, nor the SO's a user's.
    assert login_refusal(TokenFlag.USER_PIN_COUNT_LOW | TokenFlag.USER_PIN_LOCKED, "tok", False, SO) is None
    assert login_refusal(flag, "tok", False) is None
