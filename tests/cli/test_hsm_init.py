"""`signserver hsm init --generate-pins`: the token is initialised only where the generated PINs
can be kept, and a refused initialisation keeps none."""

from __future__ import annotations

import json
import uuid

import pytest

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env


def run(state_dir, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], env=cli_env(state_dir, **env), capture_output=True,
                              text=True, timeout=120)


def labels(state_dir) -> list[str]:
    slots = run(state_dir, "hsm", "slots", "--json")
    assert slots.returncode == 0, slots.stderr
    return [slot["token_label"] for slot in json.loads(slots.stdout)]


@pytest.mark.parametrize("unwritable", ["so", "user"])
def test_generated_pins_that_cannot_be_kept_leave_the_token_uninitialised(state_dir, tmp_path, unwritable):
    label = f"gen-{uuid.uuid4().hex[:8]}"
    (tmp_path / "a-file").write_text("")
    files = {"so": tmp_path / "so-pin", "user": tmp_path / "user-pin"}
    files[unwritable] = tmp_path / "a-file" / f"{unwritable}-pin"  # its folder is a file

    refused = run(state_dir, "hsm", "init", "--label", label, "--generate-pins", "--so-pin-file", str(files["so"]),
                  "--user-pin-file", str(files["user"]))

    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr and str(files[unwritable]) in refused.stderr
    assert label not in labels(state_dir)  # never a token whose PINs nobody has
    assert not any(path.exists() for path in files.values())


@pytest.fixture
def token(config) -> str:
    from signserver.hsm.admin import TokenAdministrator
    from signserver.secret import Secret

    label = f"pins-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, Secret("so-pin-of-pins"), Secret("user-pin-of-pins"))
    return label  # kept: see tests/hsm/test_ceremony.py's tokens


@pytest.mark.parametrize("command, env", [
    ("change-pin", {"SIGNSERVER_HSM_USER_PIN": "user-pin-of-pins"}),
    ("change-so-pin", {"SIGNSERVER_HSM_SO_PIN": "so-pin-of-pins"}),
    ("unblock-pin", {"SIGNSERVER_HSM_SO_PIN": "so-pin-of-pins"})])
def test_pin_commands_answer_in_json(state_dir, token, command, env):
    changed = run(state_dir, "hsm", command, "--token", token, "--json", SIGNSERVER_HSM_NEW_PIN="a-new-pin-1234",
                  **env)
    assert changed.returncode == 0, changed.stderr
    answer = json.loads(changed.stdout)
    assert answer["token"] == token and answer["pin"] == ("SO PIN" if command == "change-so-pin" else "user PIN")
    assert "a-new-pin-1234" not in changed.stdout + changed.stderr
