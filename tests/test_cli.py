"""The `signserver` command, run as an administrator runs it, against the test token."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env


def run(state_dir, *args, input=None, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], env=cli_env(state_dir, **env), input=input,
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


# What a byte that is not UTF-8 on the command line (a terminal in another encoding) reaches Python as.
NOT_TEXT = "\udcff"


@pytest.mark.parametrize("args", [
    ("hsm", "keygen", "--algorithm", "ec-p256", "--label", NOT_TEXT),
    ("hsm", "delete", NOT_TEXT, "--yes"),
    ("hsm", "public-key", NOT_TEXT),
    ("hsm", "csr", NOT_TEXT, "--subject", "CN=x"),
    ("hsm", "import-cert", NOT_TEXT, "certificate.pem"),
    ("hsm", "init", "--label", NOT_TEXT),
    ("hsm", "list", "--token", NOT_TEXT),
    ("hsm", "master", "export", NOT_TEXT, "--transport", "transport.pem", "--out", "keys.wrapped"),
    ("hsm", "master", "activate", NOT_TEXT),
], ids=lambda args: " ".join(a for a in args if a != NOT_TEXT))
def test_a_label_or_key_reference_that_is_not_text_is_a_usage_error(state_dir, args):
    """Refused before anything reaches PKCS#11: python-pkcs11 died of a segmentation fault (exit
    139, no message) on such a label."""
    result = run(state_dir, *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not valid UTF-8 text" in errors[0], result.stderr


def test_a_user_pin_in_the_environment_that_is_not_text_is_refused_in_one_line(state_dir):
    result = run(state_dir, "hsm", "list", SIGNSERVER_HSM_USER_PIN="\udcff\udcfe1234")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        "signserver: the user PIN in $SIGNSERVER_HSM_USER_PIN is not valid UTF-8 text (check the encoding it was "
        "written in)"]


def test_a_pin_file_that_cannot_be_used_is_reported_with_its_problem(state_dir, tmp_path):
    missing = run(state_dir, "hsm", "list", "--pin-file", str(tmp_path / "missing"))
    assert missing.returncode == 1 and missing.stderr.strip() == \
        f"signserver: cannot read the user PIN: no file at {tmp_path / 'missing'}"
    shared = tmp_path / "shared"
    shared.write_text("cli-so-pin\n")
    shared.chmod(0o644)
    for args, what in [(("hsm", "change-pin", "--new-pin-file", str(shared)), "new user PIN"),
                       (("hsm", "unblock-pin", "--so-pin-file", str(shared)), "SO PIN")]:
        refused = run(state_dir, *args)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.strip() == \
            f"signserver: cannot read the {what}: {shared} is readable by other users; chmod 600 it"


def test_the_state_directorys_so_pin_file_is_named_as_itself(state_dir, tmp_path):
    """`hsm master export` falls back on the state directory's hsm/so-pin: a problem with that file
    names the state directory, not the user PIN's setting."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    (tmp_path / "hsm").mkdir()
    so_pin = tmp_path / "hsm" / "so-pin"
    so_pin.write_text("cli-so-pin\n")
    so_pin.chmod(0o644)
    transport = tmp_path / "transport.pem"
    transport.write_bytes(rsa.generate_private_key(65537, 3072).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    refused = run(state_dir, "hsm", "master", "export", "--transport", str(transport), "--out",
                  str(tmp_path / "keys.wrapped"), SIGNSERVER_STATE_DIR=str(tmp_path))
    assert refused.returncode == 78, refused.stderr
    assert refused.stderr.strip() == (f"signserver: configuration state_dir: cannot read the SO PIN: {so_pin} is "
                                      "readable by other users; chmod 600 it")
    assert not (tmp_path / "keys.wrapped").exists()


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


def pin_files(tmp_path, **pins):
    files = {}
    for name, value in pins.items():
        files[name] = tmp_path / name
        files[name].write_text(value)
        files[name].chmod(0o600)
    return {name: str(path) for name, path in files.items()}


def test_a_pin_file_on_the_command_line_wins_over_the_environment(state_dir, tmp_path):
    """What the administrator names on the command line is what is used: a PIN left in the
    environment (of a shell, of a script) is not tried instead, which would count a wrong PIN."""
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", new="cli-new-pin")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    listed = run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["user"],
                 SIGNSERVER_HSM_USER_PIN="a-pin-left-in-the-shell")
    assert listed.returncode == 0, listed.stderr
    changed = run(state_dir, "hsm", "change-pin", "--token", label, "--pin-file", f["user"],
                  "--new-pin-file", f["new"], SIGNSERVER_HSM_USER_PIN="a-pin-left-in-the-shell",
                  SIGNSERVER_HSM_NEW_PIN="another-left-there")
    assert changed.returncode == 0, changed.stderr
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["new"]).returncode == 0
    unblocked = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so"],
                    "--new-pin-file", f["user"], SIGNSERVER_HSM_SO_PIN="an-so-pin-left-there")
    assert unblocked.returncode == 0, unblocked.stderr


def slot_of(state_dir, label) -> int:
    slots = json.loads(run(state_dir, "hsm", "slots", "--json").stdout)
    return next(s["slot_id"] for s in slots if s["token_label"] == label)


def test_init_of_an_initialised_token_needs_yes_and_the_current_so_pin(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", so2="cli-so-pin-2", user2="cli-user-pin-2")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    assert run(state_dir, "hsm", "keygen", "--token", label, "--pin-file", f["user"], "--algorithm", "ec-p256",
               "--label", "kept").returncode == 0
    slot = str(slot_of(state_dir, label))
    again = ["hsm", "init", "--slot", slot, "--label", label, "--so-pin-file", f["so2"], "--user-pin-file", f["user2"]]

    refused = run(state_dir, *again, input="")
    assert refused.returncode == 1 and "--yes" in refused.stderr and "destroys every key" in refused.stderr
    no_so_pin = run(state_dir, *again, "--yes", input="")
    assert no_so_pin.returncode == 1 and "current SO PIN" in no_so_pin.stderr
    kept = run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["user"])
    assert kept.returncode == 0 and "kept" in kept.stdout

    done = run(state_dir, *again, "--yes", "--current-so-pin-file", f["so"])
    assert done.returncode == 0, done.stderr
    emptied = run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["user2"])
    assert emptied.returncode == 0 and "no keys on the token" in emptied.stdout
    unblock = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so2"],
                  "--new-pin-file", f["user"])
    assert unblock.returncode == 0, unblock.stderr


def test_init_reads_the_current_so_pin_from_the_environment_and_translates_a_refusal(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", so2="cli-so-pin-2")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    again = ["hsm", "init", "--slot", str(slot_of(state_dir, label)), "--label", label, "--yes",
             "--so-pin-file", f["so2"], "--user-pin-file", f["user"]]
    wrong = run(state_dir, *again, SIGNSERVER_HSM_CURRENT_SO_PIN="87654321")
    assert wrong.returncode == 1 and "refused the PIN" in wrong.stderr
    assert "CKR" not in wrong.stderr and "87654321" not in wrong.stderr
    # The token now reports the wrong try: the right PIN goes in only with the operator's leave.
    done = run(state_dir, *again, SIGNSERVER_HSM_CURRENT_SO_PIN="cli-so-pin",
               SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert done.returncode == 0, done.stderr
    new = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so2"], "--new-pin-file", f["user"])
    assert new.returncode == 0, new.stderr


def test_change_so_pin(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", so2="cli-so-pin-2")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    changed = run(state_dir, "hsm", "change-so-pin", "--token", label, "--so-pin-file", f["so"],
                  "--new-pin-file", f["so2"])
    assert changed.returncode == 0, changed.stderr
    assert "cli-so-pin" not in changed.stdout + changed.stderr
    old = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so"], "--new-pin-file", f["user"])
    assert old.returncode == 1 and "refused the PIN" in old.stderr
    # The token now reports a wrong SO PIN: no SO login is tried, even with another PIN, unless
    # the administrator allows it for one command (a locked SO PIN costs the token's keys).
    withheld = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so2"],
                   "--new-pin-file", f["user"])
    assert withheld.returncode == 1 and "login_when_pin_count_low" in withheld.stderr, withheld.stderr
    new = run(state_dir, "hsm", "unblock-pin", "--token", label, "--so-pin-file", f["so2"], "--new-pin-file", f["user"],
              SIGNSERVER_HSM_LOGIN_WHEN_PIN_COUNT_LOW="true")
    assert new.returncode == 0, new.stderr


def test_init_refuses_a_pin_outside_the_tokens_lengths(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="123")
    result = run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"], "--user-pin-file", f["user"])
    assert result.returncode == 1 and "this token takes PINs of 4 to 255 characters" in result.stderr
    assert label not in run(state_dir, "hsm", "slots").stdout


def test_init_generates_pins_within_the_tokens_lengths(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    so, user = tmp_path / "so-pin", tmp_path / "user-pin"
    result = run(state_dir, "hsm", "init", "--label", label, "--generate-pins", "--so-pin-file", str(so),
                 "--user-pin-file", str(user))
    assert result.returncode == 0, result.stderr
    for path in (so, user):
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(path.read_text().strip()) == 32  # SoftHSM takes 4 to 255
        assert path.read_text().strip() not in result.stdout + result.stderr
    assert so.read_text() != user.read_text()
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", str(user)).returncode == 0
    again = run(state_dir, "hsm", "init", "--label", f"{label}-2", "--generate-pins", "--so-pin-file", str(so),
                "--user-pin-file", str(tmp_path / "other"))
    assert again.returncode == 1 and "never overwrites" in again.stderr


def test_generated_pins_replace_empty_files_others_could_read(state_dir, tmp_path):
    """An empty file, readable by others, where a PIN is to go: the PIN goes into a new file of mode
    0600 that takes its place, never into the old one (whose mode a write would keep)."""
    label = f"cli-{uuid.uuid4().hex[:8]}"
    so, user = tmp_path / "so-pin", tmp_path / "user-pin"
    for path in (so, user):
        path.touch()
        path.chmod(0o644)
    result = run(state_dir, "hsm", "init", "--label", label, "--generate-pins", "--so-pin-file", str(so),
                 "--user-pin-file", str(user))
    assert result.returncode == 0, result.stderr
    assert f"stored the user PIN in {user} (mode 0600)" in result.stderr
    for path in (so, user):
        assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().strip()) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["so-pin", "user-pin"]  # no temporary file left
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", str(user)).returncode == 0


def test_generated_pins_are_written_only_once_the_token_holds_them(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    so, user = tmp_path / "new-so-pin", tmp_path / "new-user-pin"
    refused = run(state_dir, "hsm", "init", "--slot", str(slot_of(state_dir, label)), "--label", label, "--yes",
                  "--generate-pins", "--so-pin-file", str(so), "--user-pin-file", str(user),
                  SIGNSERVER_HSM_CURRENT_SO_PIN="not-the-so-pin")
    assert refused.returncode == 1 and "refused the PIN" in refused.stderr
    assert not so.exists() and not user.exists()  # PINs the token never took would only mislead


def test_slots_show_the_pin_lengths(state_dir, config):
    table = run(state_dir, "hsm", "slots")
    assert "PIN LENGTH" in table.stdout and "4 to 255" in table.stdout
    slots = json.loads(run(state_dir, "hsm", "slots", "--json").stdout)
    ours = next(s for s in slots if s["token_label"] == config.hsm.token_label)
    assert (ours["min_pin_length"], ours["max_pin_length"]) == (4, 255)


def test_csr_with_rsa_pss(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    assert run(state_dir, "hsm", "keygen", "--algorithm", "rsa-2048", "--label", label).returncode == 0
    out = tmp_path / "req.pem"
    csr = run(state_dir, "hsm", "csr", label, "--subject", "CN=Lei Ka Io,C=MO", "--signature-algorithm",
              "rsa-pss-sha384", "--out", str(out))
    assert csr.returncode == 0, csr.stderr
    check = subprocess.run(["openssl", "req", "-in", str(out), "-noout", "-verify", "-text"],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "verify OK" in check.stdout + check.stderr
    assert "Signature Algorithm: rsassaPss" in check.stdout and "Hash Algorithm: sha384" in check.stdout
    wrong = run(state_dir, "hsm", "csr", label, "--subject", "CN=x", "--signature-algorithm", "ecdsa-sha256")
    assert wrong.returncode == 1 and "does not sign ecdsa-sha256" in wrong.stderr


def run_on_terminal(state_dir, *args, answer: str) -> tuple[int, str]:
    """Run the command with a terminal as its standard input, typing ``answer`` at it."""
    import os
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(SIGNSERVER), *args], env=cli_env(state_dir), stdin=terminal,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.close(terminal)
    os.write(controller, answer.encode() + b"\n")
    output, _ = process.communicate(timeout=120)
    os.close(controller)
    return process.returncode, output


def test_init_of_an_initialised_token_asks_for_its_label_on_a_terminal(state_dir, tmp_path):
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", user2="cli-user-pin-2")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    again = ["hsm", "init", "--slot", str(slot_of(state_dir, label)), "--label", label, "--so-pin-file", f["so"],
             "--current-so-pin-file", f["so"], "--user-pin-file", f["user2"]]
    code, output = run_on_terminal(state_dir, *again, answer="yes")
    assert code == 1 and "Type the token's label" in output and "not confirmed" in output
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["user"]).returncode == 0
    code, output = run_on_terminal(state_dir, *again, answer=label)
    assert code == 0, output
    assert run(state_dir, "hsm", "list", "--token", label, "--pin-file", f["user2"]).returncode == 0


def _unnamed_half_made_pair(keystore) -> None:
    """A private and a public key object with no label, no id and no curve: what SoftHSM leaves when
    another process's search interrupts a key-pair generation (see the README, `hsm list`)."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    def make(session) -> None:
        session.create_object({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.KEY_TYPE: KeyType.EC,
                               Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                               Attribute.EC_PARAMS: b"", Attribute.VALUE: b"\x01"})
        session.create_object({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.EC,
                               Attribute.TOKEN: True, Attribute.EC_PARAMS: b"", Attribute.EC_POINT: b""})
    keystore.session.run(make, "make a half-made key pair")


def _objects(state_dir) -> int:
    """The token's objects, counted by a process of its own: this process's SoftHSM may not have
    read yet what other processes wrote to the token."""
    health = run(state_dir, "hsm", "health", "--count-objects", "--json")
    assert health.returncode == 0, health.stderr
    return json.loads(health.stdout)["objects"]


def test_delete_unnamed_destroys_only_the_keys_a_generation_left_half_made(state_dir, keystore, damaged_key):
    kept = f"cli-{uuid.uuid4().hex[:8]}"
    assert run(state_dir, "hsm", "keygen", "--algorithm", "ec-p256", "--label", kept).returncode == 0
    labelled_damaged = damaged_key(keystore, f"cli-damaged-{uuid.uuid4().hex[:8]}")  # named: not this command's
    _unnamed_half_made_pair(keystore)
    before = _objects(state_dir)

    refused = run(state_dir, "hsm", "delete", "--unnamed", input="")
    assert refused.returncode == 1 and "--yes" in refused.stderr and _objects(state_dir) == before
    done = run(state_dir, "hsm", "delete", "--unnamed", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted_unnamed_objects": 2}
    assert _objects(state_dir) == before - 2
    assert keystore.find_by_label(kept).algorithm is not None and keystore.get(labelled_damaged).algorithm is None
    again = run(state_dir, "hsm", "delete", "--unnamed", "--yes")
    assert again.returncode == 0 and "no unnamed key objects" in again.stdout

    for wrong in (("hsm", "delete"), ("hsm", "delete", kept, "--unnamed", "--yes")):
        usage = run(state_dir, *wrong)
        assert usage.returncode == 2 and "--unnamed" in usage.stderr, usage.stderr


def _unnamed_complete_pairs(keystore) -> list[dict]:
    """An RSA-1024 and a secp256k1 key pair with no label and no id, as another application using
    the token may keep them: complete keys, of kinds signserver does not use. Returns a search
    template for each pair's objects. Skips the test on a token that cannot make them."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    from signserver.errors import SignServerError

    secp256k1 = encode_named_curve_parameters("secp256k1")

    def make(session) -> list[dict]:
        rsa_public, _ = session.generate_keypair(KeyType.RSA, 1024, store=True)
        curve = session.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: secp256k1}, local=True)
        curve.generate_keypair(store=True)
        return [{Attribute.KEY_TYPE: KeyType.RSA, Attribute.MODULUS: rsa_public[Attribute.MODULUS]},
                {Attribute.KEY_TYPE: KeyType.EC, Attribute.EC_PARAMS: secp256k1}]
    try:
        return keystore.session.run(make, "make unnamed RSA-1024 and secp256k1 key pairs")
    except SignServerError as exc:
        pytest.skip(f"the token cannot make RSA-1024 and secp256k1 key pairs: {exc}")


def test_delete_unnamed_leaves_the_complete_keys_of_other_applications(state_dir, keystore):
    """A key of a kind signserver does not use is still a whole key: only the public material a
    generation left unwritten (no curve, point or modulus) makes an unnamed object half-made."""
    from pkcs11 import Attribute

    templates = _unnamed_complete_pairs(keystore)
    _unnamed_half_made_pair(keystore)
    before = _objects(state_dir)
    done = run(state_dir, "hsm", "delete", "--unnamed", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"deleted_unnamed_objects": 2}  # the half-made pair only
    assert _objects(state_dir) == before - 2

    def destroy(session) -> list[int]:
        found = []
        for template in templates:
            pair = [o for o in keystore.session.find(session, template)
                    if not o[Attribute.LABEL] and not o[Attribute.ID]]
            found.append(len(pair))
            for obj in pair:
                obj.destroy()
        return found
    assert keystore.session.run(destroy, "destroy the unnamed key pairs") == [2, 2]  # both halves of each


def test_a_pin_change_says_when_the_servers_pin_file_still_holds_the_old_pin(state_dir, tmp_path):
    """The server logs in with hsm.user_pin_file: left with the old PIN, the token would refuse it
    and count it toward its lockout."""
    label = f"cli-{uuid.uuid4().hex[:8]}"
    f = pin_files(tmp_path, so="cli-so-pin", user="cli-user-pin", new="cli-new-pin")
    assert run(state_dir, "hsm", "init", "--label", label, "--so-pin-file", f["so"],
               "--user-pin-file", f["user"]).returncode == 0
    server_file = {"SIGNSERVER_HSM_TOKEN_LABEL": label, "SIGNSERVER_HSM_USER_PIN_FILE": f["user"]}
    changed = run(state_dir, "hsm", "change-pin", "--new-pin-file", f["new"], **server_file)
    assert changed.returncode == 0, changed.stderr
    assert "does not hold the new PIN" in changed.stderr and f["user"] in changed.stderr
    Path(f["user"]).write_text("cli-new-pin")  # as the administrator is told to
    unblocked = run(state_dir, "hsm", "unblock-pin", "--so-pin-file", f["so"], "--new-pin-file", f["user"],
                    **server_file)
    assert unblocked.returncode == 0 and "does not hold" not in unblocked.stderr, unblocked.stderr
