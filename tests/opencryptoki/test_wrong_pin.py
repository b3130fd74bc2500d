"""A wrong PIN given to `serve --workers 3` and to two CLI runs never locks openCryptoki's user PIN
(it locks after 3 wrong tries, counted by the token across processes), and the right PIN still works."""

from __future__ import annotations

import subprocess

import pytest

from signserver.config import env_name
from signserver.hsm.pin_guard import COUNT_LOW_SETTING
from tests.conftest import SIGNSERVER, cli_env
from tests.opencryptoki.conftest import WRONG_TRIES, clear_wrong_tries, flags

WRONG_PIN = "13572468"  # 8 digits: a PIN the token accepts the form of, never the one set
ALLOW_ONE_LOGIN = {env_name(COUNT_LOW_SETTING): "true"}


@pytest.fixture
def unblocked_afterwards(config, state_dir):
    """Whatever the outcome, leave the token usable for the tests after this one: the security
    officer sets the user PIN again (C_InitPIN), which clears a lock."""
    right = config.hsm.user_pin(environ={})
    assert right.reveal() != WRONG_PIN
    clear_wrong_tries(config, state_dir)  # left by an earlier test
    yield right
    clear_wrong_tries(config, state_dir)


def test_a_wrong_pin_given_to_three_workers_and_two_commands_never_locks_the_token(
        config, state_dir, tmp_path, unblocked_afterwards):
    env = cli_env(state_dir, SIGNSERVER_HSM_USER_PIN=WRONG_PIN, SIGNSERVER_SERVER_LISTEN="127.0.0.1:0",
                  SIGNSERVER_HTTP_LISTEN="127.0.0.1:0", SIGNSERVER_CSC_LISTEN="127.0.0.1:0",
                  SIGNSERVER_DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen([str(SIGNSERVER), "serve", "--workers", "3"], env=env, stdout=output,
                                  stderr=subprocess.STDOUT)
        try:
            code = server.wait(timeout=60)  # a server that cannot log in stops
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait(30)
            code = None
    assert code not in (None, 0), f"serve with a wrong PIN kept running:\n{log.read_text()[-2000:]}"
    after_serve = flags(config)
    for _ in range(2):
        health = subprocess.run([str(SIGNSERVER), "hsm", "health"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert health.returncode != 0
        assert WRONG_PIN not in health.stdout + health.stderr
    after_commands = flags(config)

    assert "user PIN locked" not in after_serve + after_commands, (after_serve, after_commands)
    assert "user PIN final try" not in after_serve + after_commands, (after_serve, after_commands)

    # The configured PIN changes back to the right one and, since the token reports a wrong try,
    # an administrator allows one login: it works, and clears the report.
    right = subprocess.run([str(SIGNSERVER), "hsm", "health"], env=cli_env(state_dir, **ALLOW_ONE_LOGIN),
                           capture_output=True, text=True, timeout=120)
    assert right.returncode == 0, right.stdout + right.stderr
    assert not WRONG_TRIES & set(flags(config))
