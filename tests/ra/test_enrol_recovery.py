"""`signserver ra enrol` when the RA's database fails, or the operator presses Ctrl-C, after the
core made the holder's account (and answered its OTP URI and recovery code, once): the secrets
are still printed, the enrolment stays pending in the RA's database (without them), and
`enrol --existing-account` finishes it. A real served core, the RA's real SQLite database made
to fail (or to be slow) by a trigger, and a real SIGINT to the installed program."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from signserver.client import CertificateClient, NotFound
from signserver.ra.store.database import RaDatabase
from tests.ca.test_certificate_service import client_pair
from tests.ra.running import ra_in_process
from tests.ra.test_cli_operations import OPERATOR, PASSWORD, PHRASE, SIGNSERVER, registered

REFUSING = ("CREATE TRIGGER refuse_holders BEFORE INSERT ON ra_holders "
            "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END")
# A write of a holder that takes seconds: long enough to interrupt the command in it.
SLOW = ("CREATE TABLE slow_rows(x INTEGER)",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 6000) "
        "INSERT INTO slow_rows SELECT x FROM n",
        "CREATE TRIGGER slow_holders BEFORE INSERT ON ra_holders BEGIN "
        "SELECT count(*) FROM slow_rows a, slow_rows b WHERE a.x * b.x >= 0; END")


@pytest.fixture
def files(served, ca_service, tmp_path) -> dict:
    """A configuration of its own, with its own RA database (SQLite: the triggers are SQLite's)."""
    _, certificate, key = client_pair(ca_service, "client-ra", f"ra-recovery-{tmp_path.name}"[:60])
    (tmp_path / "ra.pem").write_bytes(certificate)
    (tmp_path / "ra-key.pem").write_bytes(key)
    roots = served.config.tls.cert_file.read_bytes() + served.config.tls.client_ca_file.read_bytes()
    (tmp_path / "roots.pem").write_bytes(roots)
    database = tmp_path / "ra.sqlite"
    config = tmp_path / "signserver.toml"
    config.write_text(f"""
state_dir = "state"
[ra]
database_url = "sqlite:///{database}"
core_address = "localhost:{served.port}"
client_cert = "ra.pem"
client_key = "ra-key.pem"
ca_roots = "roots.pem"
""", encoding="utf-8")
    migrated = RaDatabase(f"sqlite:///{database}")
    migrated.migrate()
    migrated.close()
    client = CertificateClient(f"localhost:{served.port}", root_certificates=roots, client_certificate=certificate,
                               client_key=key)
    yield {"config": config, "database": database, "core": client}
    client.close()


def alter(database: Path, *statements: str) -> None:
    with sqlite3.connect(database) as conn:
        for statement in statements:
            conn.execute(statement)


def stored_bytes(database: Path) -> bytes:
    return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))


def in_core(client: CertificateClient, account: str) -> bool:
    try:
        client.list_certificates(account)
        return True
    except NotFound:
        return False


def test_a_failed_write_after_the_core_made_the_account_still_prints_the_secrets(files, capsys, caplog):
    ra = ra_in_process(files["config"], capsys, OPERATOR)
    alter(files["database"], REFUSING)
    failed = ra("enrol", *registered("rec-store", "--profile", "cloud-signature-government"), "--json",
                secrets=(PASSWORD, PHRASE))
    assert failed.code == 1, failed.err
    shown = failed.json
    assert shown["otp_uri"].startswith("otpauth://totp/") and shown["recovery_code"], failed.out
    assert shown["certificate"] is None and shown["reason"] == "store_unavailable"
    assert "--existing-account" in failed.err and "pending" in failed.err
    assert in_core(files["core"], "rec-store")

    pending = ra("pending-enrolments", "--json")
    assert pending.code == 0 and [p["account"] for p in pending.json] == ["rec-store"]
    assert pending.json[0]["reference"] == shown["reference"]

    # Plain enrol again: the core has the account; the pending enrolment is named.
    again = ra("enrol", *registered("rec-store", "--profile", "cloud-signature-government"),
               secrets=(PASSWORD, PHRASE))
    assert again.code == 1 and "pending" in again.err and "--existing-account" in again.err

    alter(files["database"], "DROP TRIGGER refuse_holders")
    finished = ra("enrol", *registered("rec-store", "--profile", "cloud-signature-government"),
                  "--existing-account", "--json")
    assert finished.code == 0, finished.err
    assert finished.json["certificate"]["account"] == "rec-store"
    assert ra("pending-enrolments", "--json").json == []
    entries = ra("audit", "--json").json["entries"]
    actions = [e["action"] for e in entries if "rec-store" in e["detail"]]
    assert actions == ["enrolment_pending", "holder_enrolled", "certificate_issued"], actions
    assert ra("search", "rec-store", "--json").json[0]["account"] == "rec-store"

    secrets = (shown["otp_uri"].encode(), shown["recovery_code"].encode(), PASSWORD.encode(), PHRASE.encode())
    stored = stored_bytes(files["database"])
    assert not any(s in stored for s in secrets)
    assert not any(s.decode() in caplog.text for s in secrets)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)],
                         ids=["Ctrl-C", "SIGTERM"])
def test_a_stop_after_the_core_made_the_account_waits_for_the_secrets(files, signum, status):
    alter(files["database"], *SLOW)
    reader, writer = os.pipe()
    os.write(writer, f"{PASSWORD}\n{PHRASE}\n".encode())
    os.close(writer)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    command = [str(SIGNSERVER), "--config", str(files["config"]), "ra", "enrol",
               *registered(f"rec-{signum.name.lower()}", "--profile", "cloud-signature-government"), "--json",
               "--secrets-fd", str(reader), "--operator", OPERATOR]
    # The signal's default disposition, as at a terminal (a background test run ignores SIGINT).
    child = subprocess.Popen(command, env=env, pass_fds=(reader,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    os.close(reader)
    try:
        deadline = time.monotonic() + 60
        while not in_core(files["core"], f"rec-{signum.name.lower()}"):
            assert child.poll() is None and time.monotonic() < deadline, "the account was never made"
            time.sleep(0.02)
        child.send_signal(signum)  # the core has answered; the RA is writing its record
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    text = out.decode()
    assert child.returncode == status, err.decode()
    assert "interrupted" in err.decode()
    shown = json.loads(text)
    assert shown["otp_uri"].startswith("otpauth://totp/") and shown["recovery_code"], text
