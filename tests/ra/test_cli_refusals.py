"""`signserver ra ...` refusing what it is given, as an operator meets it: each refusal one line on
standard error (JSON on standard output too with --json), an exit status of its kind (2 for the
command line, 1 for a refusal, 78 for the settings), no traceback, and nothing written before it.
The core is not served here (its address is a closed port on loopback): the commands refused
must not reach it; the others say that it does not answer, and where it was looked for."""

from __future__ import annotations

import datetime
import json
import os
import pty
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.ra import cli
from signserver.ra.settings import load_settings
from signserver.ra.store import repository
from signserver.ra.store.database import RaDatabase
from tests.conftest import empty_database_url
from tests.ra.conftest import KUAN
from tests.ra.running import ra_in_process
from tests.readable import readable

SIGNSERVER = Path(sys.executable).parent / "signserver"
OPERATOR = "counter-9"
NOT_UTF8 = os.fsdecode(b"kuan\xff")  # a byte of another encoding, as Python receives it
CORE = "127.0.0.1:1"


def _client_files(folder: Path) -> tuple[Path, Path]:
    """A certificate and its key for the RA's client settings (the core is never reached)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ra")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    (folder / "ra.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "ra-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return folder / "ra.pem", folder / "ra-key.pem"


def write_config(folder: Path, extra: str = "") -> Path:
    cert, key = _client_files(folder)
    path = folder / "signserver.toml"
    path.write_text(f"""
state_dir = "{folder / 'state'}"
[ra]
database_url = "{empty_database_url(folder / 'ra.sqlite')}"
core_address = "{CORE}"
client_cert = "{cert}"
client_key = "{key}"
ca_roots = "{cert}"
{extra}
""", encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def ra(config, capsys):
    return ra_in_process(config, capsys, OPERATOR)


def trail(config: Path) -> list[dict]:
    database = RaDatabase(load_settings(config).database)
    try:
        database.migrate()
        with database.transaction() as conn:
            return repository.audit_entries(conn, "")
    finally:
        database.close()


def registered(config: Path, account: str):
    database = RaDatabase(load_settings(config).database)
    try:
        database.migrate()
        with database.transaction() as conn:
            return repository.find_holder(conn, account)
    finally:
        database.close()


def holder_arguments(account: str = "kuan-ws", **changes: str) -> list[str]:
    given = {"--id-type": KUAN.id_type, "--id-number": KUAN.id_number, "--name": KUAN.name,
             "--birth-date": KUAN.birth_date.isoformat(), "--email": KUAN.emails[0], **changes}
    return [account, *[word for pair in given.items() for word in pair]]


def usage_error(ran, argument: str) -> str:
    """The one line of a refusal by the command line (exit status 2), naming ``argument``."""
    assert ran.code == 2, ran
    assert "Traceback" not in ran.err
    [line] = [line for line in ran.err.splitlines() if "error:" in line]
    assert argument in line, line
    return line


@pytest.mark.parametrize("arguments, argument", [
    (["holder", *holder_arguments(NOT_UTF8)], "account"),
    (["holder", *holder_arguments(**{"--name": NOT_UTF8})], "--name"),
    (["search", NOT_UTF8], "text"),
    (["renewals", "--account", NOT_UTF8], "--account"),
    (["audit", "--renewal", NOT_UTF8], "--renewal"),
    (["resend-notice", NOT_UTF8], "renewal_id"),
    (["confirm-renewal", NOT_UTF8], "serial"),
    (["revoke", NOT_UTF8, "--reason", "keyCompromise"], "serial"),
    (["operator", "list", "--operator", NOT_UTF8], "--operator"),
], ids=["holder-account", "holder-name", "search", "renewals", "audit", "resend-notice", "confirm-renewal",
        "revoke", "operator-list"])
def test_text_that_is_not_utf8_is_refused_before_anything_is_done(ra, config, arguments, argument):
    line = usage_error(ra(*arguments), argument)
    assert "UTF-8" in line
    assert trail(config) == []


def test_an_operator_name_that_is_not_utf8_is_refused(config, capsys, monkeypatch):
    monkeypatch.setenv("SIGNSERVER_RA_OPERATOR", NOT_UTF8)
    assert cli.main(["--config", str(config), "holder", *holder_arguments()]) == cli.EXIT_USAGE
    assert "UTF-8" in capsys.readouterr().err
    assert trail(config) == []


@pytest.mark.parametrize("changes, argument", [
    ({"account": ""}, "account"),
    ({"account": "   "}, "account"),
    ({"account": "k" * 129}, "account"),
    ({"--name": ""}, "--name"),
    ({"--name": "KUAN\nholder_registered"}, "--name"),
    ({"--id-type": "B" * 33}, "--id-type"),
    ({"--id-number": "1" * 65}, "--id-number"),
    ({"--email": "kuan"}, "--email"),
    ({"--email": "kuan@example.mo,other@example.mo"}, "--email"),
    ({"--email": "Kuan <kuan@example.mo>"}, "--email"),
], ids=["empty-account", "blank-account", "long-account", "empty-name", "line-break", "long-id-type",
        "long-id-number", "no-address", "two-addresses", "display-name"])
def test_a_holders_data_is_checked_before_it_is_registered(ra, config, changes, argument):
    account = changes.pop("account", "kuan-ws")
    usage_error(ra("holder", *holder_arguments(account, **changes)), argument)
    assert registered(config, account) is None and trail(config) == []


def test_enrol_refuses_data_the_ra_cannot_keep_before_the_core_creates_the_account(ra, config):
    # Else the core would make the account, and the RA's store refuse the holder's data after it:
    # the holder's OTP seed and recovery code lost with the refusal.
    refused = ra("enrol", *holder_arguments(**{"--id-type": "B" * 33}), "--profile", "cloud-signature-government",
                 secrets=("First-pass-1", ""))
    line = usage_error(refused, "--id-type")
    assert "core" not in line and trail(config) == []


@pytest.mark.parametrize("profile", ["cloud-signature-govt", "qualified", "client-ra"])
def test_enrol_refuses_a_profile_that_is_not_a_holders_before_the_core_creates_the_account(ra, config, profile):
    refused = ra("enrol", *holder_arguments(), "--profile", profile, secrets=("First-pass-1", ""))
    line = usage_error(refused, "--profile")
    assert "core" not in line and "cloud-signature-government" in line and trail(config) == []


@pytest.mark.parametrize("arguments, argument", [
    (["certificates", "--expiring-within", "-5"], "--expiring-within"),
    (["certificates", "--expiring-within", str(2 ** 32)], "--expiring-within"),
    (["enrol", *holder_arguments(), "--profile", "qualified-government", "--csr", "card.csr",
      "--transaction-limit", str(2 ** 64)], "--transaction-limit"),
    (["enrol", *holder_arguments(), "--profile", "qualified-government", "--csr", "card.csr",
      "--transaction-limit", "-1"], "--transaction-limit"),
], ids=["negative-days", "too-many-days", "huge-limit", "negative-limit"])
def test_numbers_out_of_range_are_refused_by_the_command_line(ra, config, tmp_path, arguments, argument):
    # The core's fields are unsigned: out of their range, the request could not even be built
    # (for an enrolment, once the account was made).
    from tests.ra.test_activation import card_csr

    (tmp_path / "card.csr").write_bytes(card_csr())
    arguments = [str(tmp_path / word) if word == "card.csr" else word for word in arguments]
    secrets = ("First-pass-1", "") if arguments[0] == "enrol" else None
    usage_error(ra(*arguments, secrets=secrets), argument)
    assert trail(config) == []


def test_a_file_that_is_not_a_certificate_request_is_refused_before_the_core_creates_the_account(ra, config,
                                                                                                tmp_path):
    (tmp_path / "card.csr").write_text("not a request\n", encoding="utf-8")
    refused = ra("enrol", *holder_arguments(), "--profile", "qualified-government", "--csr", str(tmp_path / "card.csr"),
                 "--json", secrets=("First-pass-1", ""))
    assert refused.code == 1
    [line] = refused.err.splitlines()
    assert "card.csr" in line and "PKCS#10" in line and "core" not in line
    assert refused.json["error"] == "operation_refused" and refused.json["reason"] == "csr_unreadable"
    assert trail(config) == []


def test_holder_shows_the_data_registered_with_json(ra, config):
    shown = ra("holder", *holder_arguments(**{"--name": f"  {KUAN.name} "}), "--email", KUAN.emails[1], "--json")
    assert shown.code == 0, shown.err
    assert shown.json == {"account": "kuan-ws", "registered": True, "id_type": KUAN.id_type,
                          "id_number": KUAN.id_number, "name": KUAN.name, "birth_date": "1985-03-14",
                          "emails": list(KUAN.emails)}
    assert registered(config, "kuan-ws") == KUAN


def test_a_settings_refusal_is_json_too_with_json(tmp_path, capsys):
    config = write_config(tmp_path, 'operators = ["ho-ka"]')
    capsys.readouterr()
    assert cli.main(["--config", str(config), "--json", "renewals", "--operator", "mallory"]) == cli.EXIT_CONFIG
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith("signserver ra: ") and "'mallory' is not one of ra.operators" in line
    shown = json.loads(captured.out)
    assert shown["error"] == "settings_error" and "mallory" in shown["message"]


def test_a_core_that_does_not_answer_is_one_line_naming_its_address(ra):
    refused = ra("certificates", "--json")
    assert refused.code == 1
    [line] = refused.err.splitlines()
    assert "does not answer" in line and CORE in line
    assert refused.json["error"] == "core_unavailable" and CORE in refused.json["message"]


def test_client_files_that_cannot_be_read_are_a_settings_error(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "ra-key.pem").unlink()
    capsys.readouterr()
    assert cli.main(["--config", str(config), "revoke", "0a1b", "--reason", "keyCompromise",
                     "--operator", OPERATOR]) == cli.EXIT_CONFIG
    [line] = capsys.readouterr().err.splitlines()
    assert "ra.client_key" in line and "ra-key.pem" in line


def test_a_broken_audit_chain_is_said_on_standard_error(ra, config):
    assert ra("holder", *holder_arguments()).code == 0
    database = RaDatabase(load_settings(config).database)
    try:
        from sqlalchemy import text
        with database.transaction() as conn:
            conn.execute(text("UPDATE ra_audit_trail SET detail = 'forged'"))
    finally:
        database.close()
    checked = ra("audit")
    assert checked.code == 1
    [line] = checked.err.splitlines()
    assert line.startswith("signserver ra: ") and "broken" in line


# Secrets typed at a terminal


def _type_at_terminal(command: list[str], answer: bytes, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``command`` on a pseudo-terminal, typing ``answer`` (raw bytes) at each prompt."""
    pid, master = pty.fork()
    if pid == 0:
        os.execve(command[0], command, env)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if readable(master, 0.5):
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
                if output.rstrip().endswith(b":"):
                    os.write(master, answer + b"\r")
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.parametrize("command", [["operator", "add", "op-typed"], ["unlock", "kuan-ws"]])
def test_a_secret_typed_in_another_encoding_is_refused_in_one_line(config, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    code, screen = _type_at_terminal([str(SIGNSERVER), "--config", str(config), "ra", *command,
                                      "--operator", OPERATOR], b"Pass\xffword-1", env)
    assert code == 1, screen
    assert "Traceback" not in screen and "UTF-8" in screen
    assert trail(config) == []
