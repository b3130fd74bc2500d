"""`signserver ra enrol | unlock | revoke | revoke-by-holder | certificates | search` against a
real served core (mutual TLS with an RA client certificate) and the RA's real store: the commands
in this process with their secrets from a file descriptor, and as the installed program with its
secrets typed at a terminal (a pseudo-terminal). --json output parsed; the help codes' guidance in
the operator's language; no secret in the RA's audit trail or its logs."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.ra import cli
from signserver.ra.errors import OperationRefused
from tests import cli_forkserver
from tests.ca.test_certificate_service import client_pair
from tests.conftest import empty_database_url
from tests.ra.conftest import KUAN
from tests.ra.running import ra_in_process
from tests.readable import readable

SIGNSERVER = Path(sys.executable).parent / "signserver"
PASSWORD = "First-pass-1"
PHRASE = "Phrase2026ok"
OPERATOR = "counter-7"


@pytest.fixture(scope="module")
def config(served, ca_service, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ra-cli")
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-cli-tests")
    (folder / "ra.pem").write_bytes(certificate)
    (folder / "ra-key.pem").write_bytes(key)
    (folder / "roots.pem").write_bytes(served.config.tls.cert_file.read_bytes()
                                       + served.config.tls.client_ca_file.read_bytes())
    path = folder / "signserver.toml"
    path.write_text(f"""
state_dir = "state"
[ra]
database_url = "{empty_database_url(folder / 'ra.sqlite')}"
core_address = "localhost:{served.port}"
client_cert = "ra.pem"
client_key = "ra-key.pem"
ca_roots = "roots.pem"
""", encoding="utf-8")
    return path


@pytest.fixture
def ra(config, capsys, caplog):
    """Runs `signserver ra --config CONFIG ARGS` in this process; ``secrets`` are written, one a
    line, to a pipe whose reading end is given with --secrets-fd."""
    caplog.set_level(logging.DEBUG)
    return ra_in_process(config, capsys, OPERATOR)


def registered(account: str, *more: str) -> list[str]:
    """`ra enrol`'s arguments for KUAN as ``account`` (its keys P-256: tests/ra/running.py's
    create_account says why), and ``more``."""
    return [account, "--id-type", KUAN.id_type, "--id-number", KUAN.id_number, "--name", KUAN.name,
            "--birth-date", KUAN.birth_date.isoformat(), *[f"--email={e}" for e in KUAN.emails],
            "--kind", "government", "--organisation", "DSAJ", "--key-algorithm", "ec-p256", *more]


def csr_file(folder: Path, name: str = KUAN.name) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .sign(key, hashes.SHA256()))
    path = folder / "card.csr"
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))
    return path


def audit_details(ra) -> list[dict]:
    shown = ra("audit", "--json")
    assert shown.code == 0 and shown.json["chain_intact"]
    return shown.json["entries"]


def assert_nowhere(secrets, *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret in: {text[:200]}"


def test_enrol_a_cloud_signature_holder_prints_the_otp_uri_and_recovery_code_once(ra, caplog):
    enrolled = ra("enrol", *registered("cli-cloud", "--profile", "cloud-signature-government"), "--json",
                  secrets=(PASSWORD, PHRASE))
    assert enrolled.code == 0, enrolled.err
    shown = enrolled.json
    assert shown["account"] == "cli-cloud" and shown["certificate"]["profile"] == "cloud-signature-government"
    assert shown["otp_uri"].startswith("otpauth://totp/") and shown["recovery_code"]
    serial = shown["certificate"]["serial"]

    entries = audit_details(ra)
    mine = [(e["actor"], e["action"]) for e in entries if "cli-cloud" in e["detail"]]
    assert mine == [(OPERATOR, "enrolment_pending"), (OPERATOR, "holder_enrolled"), (OPERATOR, "certificate_issued")]
    secrets = (PASSWORD, PHRASE, shown["otp_uri"], shown["recovery_code"])
    assert_nowhere(secrets, json.dumps(entries), caplog.text, enrolled.err)

    searched = ra("search", "kuan weng", "--json")
    assert searched.code == 0
    [holder] = [h for h in searched.json if h["account"] == "cli-cloud"]
    assert holder["name"] == KUAN.name and [c["serial"] for c in holder["certificates"]] == [serial]
    text = ra("search", "cli-cloud")
    assert text.code == 0 and "cli-cloud" in text.out and serial in text.out
    assert_nowhere(secrets, searched.out, text.out)


def test_enrol_a_qualified_holder_from_the_csr_of_the_card(ra, tmp_path):
    enrolled = ra("enrol", *registered("cli-qualified", "--profile", "qualified-government", "--csr",
                                       str(csr_file(tmp_path)), "--transaction-limit", "250000",
                                       "--agent-qualification", "Director"), secrets=(PASSWORD, ""))
    assert enrolled.code == 0, enrolled.err
    assert "cli-qualified enrolled" in enrolled.out and "qualified-government" in enrolled.out
    listed = ra("certificates", "--account", "cli-qualified", "--json").json
    # The key is on the card: the certificate names no credential of the core.
    assert [(c["profile"], c["status"], c["credential_id"]) for c in listed] == [("qualified-government", "valid", "")]

    without_csr = ra("enrol", *registered("cli-qualified-2", "--profile", "qualified-government"),
                     secrets=(PASSWORD, ""))
    assert without_csr.code == 1 and "--csr" in without_csr.err
    half = ra("enrol", *registered("cli-qualified-4", "--profile", "qualified-government", "--csr",
                                   str(csr_file(tmp_path, "SOMEONE ELSE"))), "--json", secrets=(PASSWORD, ""))
    assert half.code == 1 and half.json["certificate"] is None and half.json["recovery_code"]
    assert "does not name" in half.json["message"] and "the certificate was refused" in half.err
    unreadable = ra("enrol", *registered("cli-qualified-3", "--profile", "qualified-government", "--csr",
                                         str(tmp_path / "missing.csr")), secrets=(PASSWORD, ""))
    assert unreadable.code == 1 and "cannot read the CSR" in unreadable.err


def test_unlock_in_person_with_the_recovery_code(ra, caplog):
    enrolled = ra("enrol", *registered("cli-unlock", "--profile", "cloud-signature-government"), "--json",
                  secrets=(PASSWORD, ""))
    code = enrolled.json["recovery_code"]
    unlocked = ra("unlock", "cli-unlock", "--json", secrets=(code, "Second-pass-2"))
    assert unlocked.code == 0, unlocked.err
    new_code = unlocked.json["recovery_code"]
    assert unlocked.json["unlocked"] and new_code and new_code != code

    again = ra("unlock", "cli-unlock", "--json", secrets=(code, "Third-pass-3"))
    assert again.code == 1 and "recovery code was refused" in again.err
    assert again.json["error"] == "operation_refused"
    text = ra("unlock", "cli-unlock", secrets=(new_code, "Third-pass-3"))
    assert text.code == 0 and "unlocked" in text.out
    assert_nowhere((code, new_code, "Second-pass-2", "Third-pass-3"), json.dumps(audit_details(ra)), caplog.text,
                   unlocked.err, again.err, again.out)


def test_revoke_by_the_operator_and_by_the_holder(ra, caplog):
    first = ra("enrol", *registered("cli-revoke", "--profile", "cloud-signature-government"), "--json",
               secrets=(PASSWORD, PHRASE)).json["certificate"]["serial"]
    second = ra("enrol", *registered("cli-revoke", "--profile", "cloud-signature-government"), "--existing-account",
                "--json").json["certificate"]["serial"]

    revoked = ra("revoke", first, "--reason", "keyCompromise", "--json")
    assert revoked.code == 0 and revoked.json["status"] == "revoked"
    assert revoked.json["revocation_reason"] == "keyCompromise"
    twice = ra("revoke", first, "--reason", "keyCompromise")
    assert twice.code == 1 and twice.err.startswith("signserver ra: ")

    wrong = ra("revoke-by-holder", second, "--account", "cli-revoke", "--json", secrets=("WrongPhrase99",))
    assert wrong.code == 1 and "revocation phrase is not right" in wrong.json["message"]
    assert ra("certificates", "--account", "cli-revoke", "--status", "valid", "--json").json[0]["serial"] == second
    by_holder = ra("revoke-by-holder", second, "--account", "cli-revoke", "--reason", "affiliationChanged",
                   secrets=(PHRASE,))
    assert by_holder.code == 0 and f"certificate {second} revoked by its holder" in by_holder.out
    assert ra("certificates", "--account", "cli-revoke", "--status", "valid", "--json").json == []
    assert {c["serial"] for c in ra("certificates", "--status", "revoked", "--json").json} >= {first, second}

    actions = [(e["actor"], e["action"]) for e in audit_details(ra) if "cli-revoke" in e["detail"]
               or first in e["detail"] or second in e["detail"]]
    assert (OPERATOR, "certificate_revoked") in actions and (OPERATOR, "holder_revocation_refused") in actions
    assert (OPERATOR, "certificate_revoked_by_holder") in actions
    assert_nowhere((PHRASE, "WrongPhrase99"), json.dumps(audit_details(ra)), caplog.text, wrong.err, wrong.out)


def test_plain_refusals(ra, tmp_path):
    assert ra("certificates", "--account", "cli-nobody").err == "signserver ra: the core has no account cli-nobody\n"
    ended = ra("unlock", "cli-nobody", secrets=("only-the-code",))
    assert ended.code == 1 and "ended before the holder's new password" in ended.err
    mismatch = ra("enrol", *registered("cli-mismatch", "--profile", "cloud-signature-government",
                                       "--csr", str(csr_file(tmp_path))), secrets=(PASSWORD, ""))
    assert mismatch.code == 1 and "give no CSR" in mismatch.err


def awaiting_in_person(config: Path, holder, serial: str, expires: str):
    """A renewal of ``serial`` whose identity steps are done, written straight to the RA's store
    (tests/ra/test_activation.py goes through the steps)."""
    import datetime
    from dataclasses import replace

    from signserver.ra.renewal import State
    from signserver.ra.settings import load_settings
    from signserver.ra.store import repository
    from signserver.ra.store.database import RaDatabase
    from tests.ra.conftest import opened_renewal

    database = RaDatabase(load_settings(config).database)
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        renewal = opened_renewal(database, holder, now, profile="qualified-government", serial=serial,
                                 expires=datetime.datetime.fromisoformat(expires))
        with database.transaction() as conn:
            return repository.save_renewal(conn, replace(
                renewal, state=State.AWAITING_IN_PERSON, registry_checked_at=now, face_score=0.93,
                application_sha256="ab" * 32, help_code="AC-AB-0007"))
    finally:
        database.close()


def test_complete_in_person_renews_with_the_csr_of_the_card(ra, config, tmp_path):
    from dataclasses import replace

    enrolled = ra("enrol", *registered("cli-person", "--profile", "qualified-government", "--csr",
                                       str(csr_file(tmp_path))), "--json", secrets=(PASSWORD, ""))
    assert enrolled.code == 0, enrolled.err
    old = enrolled.json["certificate"]
    renewal = awaiting_in_person(config, replace(KUAN, account="cli-person"), old["serial"], old["not_after"])

    with pytest.raises(SystemExit):  # the CSR is required
        cli.build_parser().parse_args(["complete-in-person", renewal.id])
    done = ra("complete-in-person", renewal.id, "--csr", str(csr_file(tmp_path)), "--json")
    assert done.code == 0, done.err
    assert done.json["state"] == "completed_in_person" and done.json["new_serial"]
    listed = {c["serial"]: c for c in ra("certificates", "--account", "cli-person", "--json").json}
    assert listed[done.json["new_serial"]]["predecessor_serial"] == old["serial"] and len(listed) == 2
    assert (OPERATOR, "completed_in_person") in [(e["actor"], e["action"]) for e in audit_details(ra)]
    again = ra("complete-in-person", renewal.id, "--csr", str(csr_file(tmp_path)))
    assert again.code == 1 and len(ra("certificates", "--account", "cli-person", "--json").json) == 2


def test_an_operator_not_listed_in_the_settings_is_refused(config, tmp_path, capsys):
    listed = tmp_path / "listed.toml"
    listed.write_text(config.read_text(encoding="utf-8").replace('state_dir = "state"',
                                                                 f'state_dir = "{config.parent / "state"}"')
                      .replace("[ra]\n", "[ra]\noperators = [\"ho-ka\"]\n")
                      .replace('"ra.pem"', f'"{config.parent / "ra.pem"}"')
                      .replace('"ra-key.pem"', f'"{config.parent / "ra-key.pem"}"')
                      .replace('"roots.pem"', f'"{config.parent / "roots.pem"}"'), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["--config", str(listed), "renewals", "--operator", "mallory"]) == cli.EXIT_CONFIG
    assert "'mallory' is not one of ra.operators" in capsys.readouterr().err
    assert cli.main(["--config", str(listed), "renewals", "--operator", "ho-ka"]) == 0


@pytest.mark.parametrize("language, words", [("zh-Hant", "請先撤銷原證書"), ("pt", "revogue primeiro"),
                                             ("en", "revoke the original certificate first")])
def test_a_help_code_is_shown_with_its_guidance_in_the_operators_language(capsys, language, words):
    refused = OperationRefused("the subject data changed", help_code="AC-AB-0015")
    cli._print_error(argparse.Namespace(lang=language, json=True), refused)
    captured = capsys.readouterr()
    assert captured.err.startswith("signserver ra: the subject data changed\n") and words in captured.err
    assert json.loads(captured.out) == {"error": "operation_refused", "message": "the subject data changed",
                                        "reason": "", "help_code": "AC-AB-0015",
                                        "guidance": captured.err.splitlines()[1]}


def test_the_default_language_of_the_guidance_is_traditional_chinese():
    assert cli.build_parser().parse_args(["certificates"]).lang == "zh-Hant"
    assert cli.build_parser().parse_args(["certificates", "--lang", "pt"]).lang == "pt"


# The installed program, its secrets typed at a terminal


def _answer_prompts(command: list[str], answers: dict[str, str], env: dict[str, str],
                    timeout: float = 120) -> tuple[int, str]:
    """Run ``command`` on a pseudo-terminal (its controlling terminal), typing each answer when its
    prompt (a key of ``answers``, in order) appears; returns the exit code and what it printed."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(command[0], command, env)
    output, pending = b"", list(answers.items())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if readable(master, 0.5):
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output.split(b"\n")[-1]:
                os.write(master, pending.pop(0)[1].encode() + b"\r")
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_the_program_asks_for_the_secrets_at_the_terminal_without_echo(config, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    command = [str(SIGNSERVER), "-v", "--config", str(config), "ra", "--lang", "en", "enrol",
               *registered("cli-typed", "--profile", "cloud-signature-government"), "--operator", OPERATOR]
    code, screen = _answer_prompts(command, {"The holder's new password:": PASSWORD,
                                             "The holder's new password again:": PASSWORD,
                                             "The holder's revocation phrase (empty: none):": PHRASE,
                                             "The revocation phrase again:": PHRASE}, env)
    assert code == 0, screen
    assert "cli-typed enrolled" in screen and "recovery code, shown once" in screen
    assert PASSWORD not in screen and PHRASE not in screen  # typed without echo

    # Without a terminal and without --secrets-fd, nothing is read from anywhere else.
    blind = cli_forkserver.run([str(SIGNSERVER), "--config", str(config), "ra", "unlock", "cli-typed"], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert blind.returncode == 1 and "--secrets-fd" in blind.stderr


def test_an_operator_resends_the_notice_and_reopens_the_limits(ra, config, tmp_path):
    from dataclasses import replace

    enrolled = ra("enrol", *registered("cli-limits", "--profile", "qualified-government", "--csr",
                                       str(csr_file(tmp_path))), "--json", secrets=(PASSWORD, ""))
    assert enrolled.code == 0, enrolled.err
    old = enrolled.json["certificate"]
    renewal = awaiting_in_person(config, replace(KUAN, account="cli-limits"), old["serial"], old["not_after"])

    # Written straight to the store, this renewal never had a notice: there is none to send again.
    refused = ra("resend-notice", renewal.id)
    assert refused.code == 1 and "notice" in refused.err
    reopened = ra("reopen-limits", renewal.id, "--json")
    assert reopened.code == 0, reopened.err
    assert reopened.json["state"] == "awaiting_in_person"
    assert (OPERATOR, "limits_reopened") in [(e["actor"], e["action"]) for e in audit_details(ra)]
    assert ra("reopen-limits", "no-such-renewal").code == 1
