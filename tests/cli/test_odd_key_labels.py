"""Keys another application put on the token with labels signserver would refuse: a label that is
not UTF-8, or one with control or bidirectional formatting characters. `hsm list` and `hsm
delete` work on them and print them escaped, never raw to a terminal; `hsm keygen` refuses such
labels."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from signserver.hsm.admin import TokenAdministrator
from signserver.secret import Secret
from tests.conftest import SIGNSERVER, cli_env

USER_PIN = Secret("user-pin-for-odd-label-tests")


@pytest.fixture
def token(config) -> str:
    """A token of this test's own (it stays: see tests/cli/test_master_unrecorded.py)."""
    label = f"odd-labels-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, Secret("so-pin-for-odd-label-tests"), USER_PIN)
    return label


def another_applications_key(config, token: str, label: bytes, key_id: str) -> None:
    made = subprocess.run(["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", token, "--login",
                           "--pin", USER_PIN.reveal(), "--keypairgen", "--key-type", "EC:prime256v1",
                           "--label", os.fsdecode(label), "--id", key_id],
                          capture_output=True, text=True, errors="backslashreplace", env=cli_env(config.state_dir),
                          timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr


def hsm(config, token: str, *args: str, label: str | None = None) -> subprocess.CompletedProcess:
    # A label argument that is not UTF-8 reaches the command as the shell would pass it.
    command = [str(SIGNSERVER), "hsm", *args, *([os.fsencode(label)] if label is not None else []), "--token", token]
    return subprocess.run(command, capture_output=True, text=True, errors="backslashreplace", env=cli_env(
        config.state_dir, SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal()), timeout=120)


def test_a_key_whose_label_is_not_utf8_is_listed_and_deleted(config, token):
    another_applications_key(config, token, b"bad\xffname", "0102")
    listed = hsm(config, token, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [key] = [key for key in json.loads(listed.stdout) if key["key_id"] == "0102"]
    assert key["label"] == "bad\ufffdname"
    table = hsm(config, token, "list")
    assert table.returncode == 0 and "bad\ufffdname" in table.stdout, table.stderr

    deleted = hsm(config, token, "delete", "0102", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert all(key["key_id"] != "0102" for key in json.loads(hsm(config, token, "list", "--json").stdout))


@pytest.mark.parametrize("label", ["c1\u009b31mX\u0085next", "rtl\u202egpj.exe"], ids=["C1 controls", "bidi override"])
def test_control_and_formatting_characters_are_printed_escaped_and_refused_in_new_labels(config, token, label):
    another_applications_key(config, token, label.encode(), "0a0b")
    table = hsm(config, token, "list")
    assert table.returncode == 0, table.stderr
    shown = table.stdout
    assert all(character not in shown for character in "\u009b\u0085\u202e")
    assert "\\x9b" in shown or "\\u202e" in shown
    listed = hsm(config, token, "list", "--json")
    assert all(character not in listed.stdout for character in "\u009b\u0085\u202e")
    assert any(key["label"] == label for key in json.loads(listed.stdout))  # the same text, escaped in JSON

    refused = hsm(config, token, "keygen", "--algorithm", "ec-p256", "--label", label=label)
    assert refused.returncode == 1 and "control or formatting characters" in refused.stderr, refused.stderr
