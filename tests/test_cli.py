"""The `signserver` command, run as an administrator runs it, against the test token."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import SIGNSERVER, cli_env


def run(state_dir, *args, input=None, **env):
    return subprocess.run([str(SIGNSERVER), *args], env=cli_env(state_dir, **env), input=input,
                          capture_output=True, text=True, timeout=120)


def test_version(state_dir):
    result = run(state_dir, "--version")
    assert result.returncode == 0 and result.stdout.startswith("signserver ")


def test_keygen_makes_a_key_pkcs11_tool_sees_as_never_extractable(state_dir, config, keystore):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    result = run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", label, "--json")
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["label"] == label and made["algorithm"] == "ec-p256"

    pin = config.hsm.user_pin(environ={}).reveal()
    listing = subprocess.run(
        ["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", config.hsm.token_label,
         "--login", "--pin", pin, "--list-objects", "--type", "privkey"],
        env=cli_env(state_dir), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    block = listing.stdout.split(f"label:      {label}")[1].split("Object;")[0]
    assert "sensitive" in block and "never extractable" in block
    assert keystore.find_by_label(label).key_id == made["key_id"]  # seen by another process too


def test_list_table_and_json(state_dir):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    assert run(state_dir, "hsm", "keygen", "--algorithm", "rsa-2048", "--label", label).returncode == 0
    table = run(state_dir, "hsm", "list")
    assert table.returncode == 0
    header, rule, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["LABEL", "ID", "ALGORITHM"]
    row = next(r for r in rows if r.startswith(label))
    assert "rsa-2048" in row and "2048" in row
    keys = json.loads(run(state_dir, "hsm", "list", "--json").stdout)
    mine = next(k for k in keys if k["label"] == label)
    assert mine["size"] == 2048 and mine["attributes"]["never_extractable"] is True


def test_delete_needs_confirmation(state_dir):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", label)
    refused = run(state_dir, "hsm", "delete", label, input="")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    deleted = run(state_dir, "hsm", "delete", label, "--yes")
    assert deleted.returncode == 0 and label in deleted.stdout
    gone = run(state_dir, "hsm", "delete", label, "--yes")
    assert gone.returncode == 1 and f"no key labelled {label!r}" in gone.stderr


def test_health(state_dir):
    result = run(state_dir, "hsm", "health")
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout and "ed25519" in result.stdout
    assert json.loads(run(state_dir, "hsm", "health", "--json").stdout)["serving"] is True


def test_slots(state_dir, config):
    slots = json.loads(run(state_dir, "hsm", "slots", "--json").stdout)
    ours = next(s for s in slots if s["token_label"] == config.hsm.token_label)
    assert "initialised" in ours["flags"] and ours["token_model"].startswith("SoftHSM")


def test_public_key_and_csr(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    run(state_dir, "hsm", "keygen", "--algorithm", "ec-p384", "--label", label)
    pem = run(state_dir, "hsm", "public-key", label)
    assert pem.returncode == 0 and pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    out = tmp_path / "req.pem"
    csr = run(state_dir, "hsm", "csr", label, "--subject", "CN=Lei Ka Io,O=Example,C=MO", "--out", str(out))
    assert csr.returncode == 0, csr.stderr
    check = subprocess.run(["openssl", "req", "-in", str(out), "-noout", "-verify", "-subject"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "CN = Lei Ka Io" in check.stdout
    assert "verify OK" in check.stderr
    bad = run(state_dir, "hsm", "csr", label, "--subject", "not a name")
    assert bad.returncode == 1 and "cannot read the subject" in bad.stderr


@pytest.mark.parametrize("args,message", [
    (["hsm", "list", "--module", "/nowhere/lib.so"], "no PKCS#11 module at /nowhere/lib.so"),
    (["hsm", "list", "--token", "no-such-token"], "no token labelled 'no-such-token'"),
    (["hsm", "keygen", "--algorithm", "rsa-1024", "--label", "x"], "unknown key algorithm 'rsa-1024'"),
])
def test_errors_are_one_readable_line(state_dir, args, message):
    result = run(state_dir, *args)
    assert result.returncode in (1, 2), result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_pin_is_reported_without_the_pin(state_dir, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text("definitely-wrong-pin\n")
    pin_file.chmod(0o600)
    other = run(state_dir, "hsm", "slots")  # make sure the token exists before the wrong login
    assert other.returncode == 0
    result = run(state_dir, "hsm", "list", "--token", "cli-wrong-pin", "--pin-file", str(pin_file))
    assert result.returncode == 1  # no such token: the PIN never reached a token
    assert "definitely-wrong-pin" not in result.stderr + result.stdout


def test_no_pin_on_the_command_line(state_dir):
    result = run(state_dir, "hsm", "list", "--pin", "1234")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr


def test_config_error_exit_code(state_dir):
    result = run(state_dir, "hsm", "list", SIGNSERVER_SERVER_LISTEN="nonsense")
    assert result.returncode == 78 and "server.listen" in result.stderr


def test_init_unblock_and_change_pin_on_a_second_token(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    files = {}
    for name, value in [("so", "cli-so-pin"), ("user", "cli-user-pin"), ("new", "cli-new-pin"),
                        ("newer", "cli-newer-pin")]:
        files[name] = tmp_path / name
        files[name].write_text(value)
        files[name].chmod(0o600)
    init = run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", str(files["so"]),
               "--user-pin-file", str(files["user"]))
    assert init.returncode == 0, init.stderr
    unblock = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", str(files["so"]),
                  "--new-pin-file", str(files["new"]))
    assert unblock.returncode == 0, unblock.stderr
    change = run(state_dir, "hsm", "change-pin", "--token", label, "--pin-file", str(files["new"]),
                 "--new-pin-file", str(files["newer"]))
    assert change.returncode == 0, change.stderr
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", str(files["newer"])).returncode == 0
    old = run(state_dir, "hsm", "list", "--token", label, "--pin-file", str(files["new"]))
    assert old.returncode == 1 and "refused the PIN" in old.stderr
