"""`signserver serve --workers N` checks the PIN once, before any worker starts."""

from __future__ import annotations

import subprocess

from signserver.hsm.pin_guard import RefusedPins, refused_pins_file
from tests import cli_forkserver
from tests.conftest import SIGNSERVER
from tests.hsm.test_pin_guard import RIGHT, WRONG, _softhsm_env, count_low, new_token, wrong_try


def serve(config, state, label: str, pin: str, workers: int = 3) -> subprocess.CompletedProcess:
    env = {**_softhsm_env(config), "SIGNSERVER_STATE_DIR": str(state), "SIGNSERVER_HSM_TOKEN_LABEL": label,
           "SIGNSERVER_HSM_USER_PIN": pin, "SIGNSERVER_SERVER_LISTEN": "127.0.0.1:0",
           "SIGNSERVER_HTTP_LISTEN": "127.0.0.1:0", "SIGNSERVER_CSC_LISTEN": "127.0.0.1:0"}
    return cli_forkserver.run([str(SIGNSERVER), "serve", "--workers", str(workers)], env=env, capture_output=True,
                              text=True, timeout=180)


def test_a_wrong_pin_stops_serve_with_one_clear_error_and_one_try(config, tmp_path):
    label = new_token(config)
    result = serve(config, tmp_path, label, WRONG)
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and WRONG not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("signserver: ")]
    assert len(errors) == 1 and "refused the PIN" in errors[0] and repr(label) in errors[0]
    assert "worker" not in output and "bootstrap" not in output  # no child was started
    assert RefusedPins(refused_pins_file(tmp_path)).count(label) == 1

    again = serve(config, tmp_path, label, WRONG)
    assert again.returncode == 1 and "refused the configured PIN before" in again.stderr
    assert RefusedPins(refused_pins_file(tmp_path)).count(label) == 1


def test_serve_does_not_log_in_while_the_token_reports_wrong_tries(config, tmp_path):
    label = new_token(config)
    wrong_try(config, label)
    result = serve(config, tmp_path, label, RIGHT)
    assert result.returncode == 1 and "USER_PIN_COUNT_LOW" in result.stderr, result.stderr
    assert "worker" not in result.stdout + result.stderr
    assert count_low(config, label), "the PIN reached the token (a successful login clears the flag)"
