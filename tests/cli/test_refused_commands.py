"""A command the CLI refuses says why in one line on stderr, never with a traceback, and changes
nothing: its arguments and files are checked before anything is done."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from signserver.hsm.admin import TokenAdministrator
from signserver.secret import Secret
from signserver.store.database import Database
from signserver.store.schema import accounts
from tests import cli_forkserver
from tests.cli.masters import first_master
from tests.conftest import PASSWORD, SIGNSERVER, cli_env, database_url

EXIT_ERROR, EXIT_USAGE, EXIT_CONFIG = 1, 2, 78
HOLDER = "Chan Tai Man"


@pytest.fixture(scope="module")
def state(state_dir, tmp_path_factory):
    """The shared token, with a database of this module's own and an initialised CA."""
    state = tmp_path_factory.mktemp("cli-refusals")
    init = run(state_dir, state, "ca", "init")
    assert init.returncode == 0, init.stderr
    return state


def run(state_dir, db, *args, **env):
    return cli_forkserver.run([str(SIGNSERVER), *args], capture_output=True, text=True, timeout=180,
                              env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"),
                                          **env))


def assert_refused(result, status: int, *words: str) -> None:
    """Exit ``status``; stderr one line, ``signserver: ...`` with ``words`` (for a usage error,
    argparse's usage and then one ``error:`` line), and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    if status == EXIT_USAGE:
        assert lines[0].startswith("usage: signserver")
        lines = [line for line in lines if "error:" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("signserver"), result.stderr
    for word in words:
        assert word in lines[0], result.stderr


def new_account(state_dir, state, kind: str = "corporate") -> str:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    created = run(state_dir, state, "account", "create", name, "--name", HOLDER, "--email", f"{name}@example.mo",
                  "--kind", kind, "--organisation", "Example Lda", "--key-algorithm", "ec-p256",
                  SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert created.returncode == 0, created.stderr
    return name


def certificates(state_dir, state, account: str) -> list:
    listed = run(state_dir, state, "ca", "list", "--account", account, "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def credentials(state_dir, state, account: str) -> list:
    shown = run(state_dir, state, "account", "show", account, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["credentials"]


# --- ca ------------------------------------------------------------------------------------

def test_issue_with_an_output_in_a_missing_folder_issues_nothing(state_dir, state, tmp_path):
    account = new_account(state_dir, state)
    before = credentials(state_dir, state, account)
    for _ in range(2):  # run again, as an operator would: still nothing
        refused = run(state_dir, state, "ca", "issue", account, "--profile", "cloud-signature-corporate",
                      "--out", str(tmp_path / "no" / "such" / "x.pem"))
        assert_refused(refused, EXIT_ERROR, "cannot write", str(tmp_path / "no" / "such" / "x.pem"))
    assert certificates(state_dir, state, account) == []
    assert credentials(state_dir, state, account) == before
    assert not (tmp_path / "no").exists()


def test_issue_with_a_csr_of_an_unknown_key_algorithm_issues_nothing(state_dir, state, tmp_path):
    account = new_account(state_dir, state)
    key = ec.generate_private_key(ec.SECP256R1())
    der = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOLDER)]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    bad = tmp_path / "bad.der"
    bad.write_bytes(der.replace(bytes.fromhex("06072a8648ce3d0201"), bytes.fromhex("06072a8648ce3d0209")))
    refused = run(state_dir, state, "ca", "issue", account, "--profile", "standard-corporate", "--csr", str(bad))
    assert_refused(refused, EXIT_ERROR, "key algorithm is not accepted")
    assert certificates(state_dir, state, account) == []


def test_issue_with_a_missing_csr_is_refused(state_dir, state, tmp_path):
    account = new_account(state_dir, state)
    refused = run(state_dir, state, "ca", "issue", account, "--profile", "standard-corporate",
                  "--csr", str(tmp_path / "missing.der"))
    assert_refused(refused, EXIT_ERROR, "cannot read", "missing.der")
    assert certificates(state_dir, state, account) == []


def crl_number(state_dir, state) -> int:
    shown = run(state_dir, state, "ca", "crl")
    assert shown.returncode == 0, shown.stderr
    crl = x509.load_pem_x509_crl(shown.stdout.encode())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_crl_into_a_missing_folder_is_refused_before_a_new_crl_is_signed(state_dir, state, tmp_path):
    number = crl_number(state_dir, state)
    for extra in ((), ("--refresh",)):
        refused = run(state_dir, state, "ca", "crl", *extra, "--out", str(tmp_path / "no" / "crl.der"))
        assert_refused(refused, EXIT_ERROR, "cannot write", "crl.der")
    assert crl_number(state_dir, state) == number
    assert not (tmp_path / "no").exists()


def test_issue_client_into_an_unwritable_folder_issues_nothing(state_dir, state, tmp_path):
    (tmp_path / "a-file").write_bytes(b"")
    before = run(state_dir, state, "ca", "list", "--json")
    refused = run(state_dir, state, "ca", "issue-client", "--role", "ra", "desk-9", "--out-dir",
                  str(tmp_path / "a-file" / "clients"))
    assert_refused(refused, EXIT_ERROR, "clients")
    assert run(state_dir, state, "ca", "list", "--json").stdout == before.stdout


# --- accounts ------------------------------------------------------------------------------

def test_create_with_a_qr_code_in_a_missing_folder_creates_no_account(state_dir, state, tmp_path):
    name = f"refused-{uuid.uuid4().hex[:8]}"
    refused = run(state_dir, state, "account", "create", name, "--name", HOLDER, "--email", f"{name}@example.mo",
                  "--qr-png", str(tmp_path / "no" / "such" / "qr.png"), SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD)
    assert_refused(refused, EXIT_ERROR, "cannot write", "qr.png")
    assert "Recovery code" not in refused.stdout
    shown = run(state_dir, state, "account", "show", name)
    assert shown.returncode == EXIT_ERROR and "Traceback" not in shown.stderr  # no such account


def otp_seed_sealed(state, account: str) -> bytes:
    database = Database(database_url(state / "signserver.db"))
    try:
        with database.read() as conn:
            return conn.execute(select(accounts.c.otp_seed_sealed).where(accounts.c.username == account)).scalar_one()
    finally:
        database.dispose()


def test_reset_otp_with_a_qr_code_in_a_missing_folder_keeps_the_seed(state_dir, state, tmp_path):
    account = new_account(state_dir, state)
    seed = otp_seed_sealed(state, account)
    refused = run(state_dir, state, "account", "reset-otp", account, "--qr-png", str(tmp_path / "no" / "qr.png"))
    assert_refused(refused, EXIT_ERROR, "cannot write", "qr.png")
    assert otp_seed_sealed(state, account) == seed


# --- sign-pdf (nothing is sent: every file is checked before the server is called) ---------

@pytest.fixture
def documents(tmp_path):
    """A state directory without clients/ca.pem, a document, and a readable CA file."""
    (tmp_path / "state").mkdir()
    (tmp_path / "in.pdf").write_bytes(b"%PDF-1.7\n")
    (tmp_path / "ca.pem").write_bytes(b"not read by these tests' server")
    return tmp_path


@pytest.mark.parametrize("flags, missing", [
    ((), "ca.pem"), (("--ca", "{d}/missing-ca.pem"), "missing-ca.pem"),
    (("--ca", "{d}/ca.pem", "--key", "{d}/missing-key.pem"), "missing-key.pem"),
    (("--ca", "{d}/ca.pem", "--cert", "{d}/missing-cert.pem"), "missing-cert.pem"),
    (("--ca", "{d}/ca.pem", "--seal", "{d}/missing-seal.png"), "missing-seal.png")])
def test_sign_pdf_with_a_missing_file_is_refused(documents, flags, missing):
    result = cli_forkserver.run(
        [str(SIGNSERVER), "sign-pdf", str(documents / "in.pdf"), str(documents / "out.pdf"), "--no-otp",
         "--address", "localhost:9", "--account", "someone", "--credential", "c-1",
         *(flag.format(d=documents) for flag in flags)],
        env=cli_env(documents / "state", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD), capture_output=True, text=True,
        timeout=120)
    assert_refused(result, EXIT_ERROR, "cannot read", missing)
    assert not (documents / "out.pdf").exists() and not list(documents.glob("*.part"))


@pytest.mark.parametrize("flag", ["--account", "--credential", "--reason", "--caption"])
def test_sign_pdf_with_an_argument_that_is_not_text_is_a_usage_error(documents, flag):
    """A byte that is not UTF-8 (a terminal in another encoding) becomes a lone surrogate, which the
    request cannot carry: refused before anything is read or sent, not by the gRPC encoder."""
    values = {"--account": "someone", "--credential": "c-1", flag: "x\udcff"}
    result = cli_forkserver.run(
        [str(SIGNSERVER), "sign-pdf", str(documents / "in.pdf"), str(documents / "out.pdf"), "--no-otp",
         "--address", "localhost:9", "--ca", str(documents / "ca.pem"), *[x for kv in values.items() for x in kv]],
        env=cli_env(documents / "state", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD), capture_output=True, text=True,
        timeout=120)
    assert_refused(result, EXIT_USAGE, flag, "not valid UTF-8 text")
    assert not (documents / "out.pdf").exists()


def test_sign_pdf_into_a_folder_it_cannot_make_is_refused(documents):
    (documents / "a-file").write_bytes(b"")
    result = cli_forkserver.run(
        [str(SIGNSERVER), "sign-pdf", str(documents / "in.pdf"), str(documents / "a-file" / "out.pdf"), "--no-otp",
         "--address", "localhost:9", "--account", "someone", "--credential", "c-1", "--ca", str(documents / "ca.pem")],
        env=cli_env(documents / "state", SIGNSERVER_ACCOUNT_PASSWORD=PASSWORD), capture_output=True, text=True,
        timeout=120)
    assert_refused(result, EXIT_ERROR, "cannot write", "out.pdf")


def test_sign_pdf_reports_the_transfer_every_few_seconds():
    from signserver.cli.documents import TransferProgress

    now = [100.0]
    shown = io.StringIO()
    sent = TransferProgress("sent", total=200 << 20, clock=lambda: now[0], stream=shown)
    for _ in range(40):  # a MB every quarter of a second
        now[0] += 0.25
        sent(1 << 20)
    now[0] += 30  # the server signs
    received = TransferProgress("received", clock=lambda: now[0], stream=shown)
    for _ in range(3):
        received(1 << 20)
        now[0] += 3.0
    # Every 5 s from each way's first chunk; nothing for a transfer shorter than that.
    assert shown.getvalue().splitlines() == ["sign-pdf: sent 21.0 of 200.0 MB (4.2 MB/s)",
                                             "sign-pdf: received 3.0 MB (0.5 MB/s)"]


# --- hsm master (on a token of this module's own: a rotation destroys master keys) ----------

USER_PIN = Secret("user-pin-for-refusal-tests")


@pytest.fixture(scope="module")
def token(config) -> str:
    label = f"refusals-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, Secret("so-pin-for-refusal-tests"), USER_PIN)
    return label  # kept: see tests/accounts/test_master_rotation.py's token


def master(state_dir, db, token: str, *args: str):
    return run(state_dir, db, "hsm", "master", *args, "--token", token, SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal())


@pytest.mark.parametrize("flags, words", [
    (("--batch", "0"), "--batch"), (("--batch", "-3"), "--batch"), (("--batch", "two"), "--batch"),
    (("--grace-seconds", "nan"), "--grace-seconds"), (("--grace-seconds", "inf"), "--grace-seconds"),
    (("--grace-seconds", "-1"), "--grace-seconds"),
    (("--grace-seconds", "1e300"), "--grace-seconds")])
def test_rotate_with_a_bad_number_rotates_nothing(config, state_dir, token, tmp_path, flags, words):
    first_master(config, token, tmp_path, USER_PIN)
    before = master(state_dir, tmp_path, token, "status", "--json")
    assert before.returncode == 0, before.stderr
    refused = master(state_dir, tmp_path, token, "rotate", "--grace-seconds", "0", *flags)
    assert_refused(refused, EXIT_USAGE, words)
    after = master(state_dir, tmp_path, token, "status", "--json")
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert [m["state"] for m in json.loads(after.stdout)] == ["active"]


# --- what nothing checked up front: the last line of defence ------------------------------

def test_an_unreadable_configuration_file_is_one_line(state_dir, tmp_path):
    result = cli_forkserver.run([str(SIGNSERVER), "--config", str(tmp_path), "account", "list"],
                                env=cli_env(state_dir), capture_output=True, text=True, timeout=120)
    assert_refused(result, EXIT_CONFIG, str(tmp_path), "Is a directory")


@pytest.mark.parametrize("fingerprint", ["not-hex", "abc", "", None, 12])
def test_import_of_a_file_with_a_bad_transport_fingerprint_is_refused(state_dir, token, tmp_path, fingerprint):
    wrapped = tmp_path / "keys.wrapped"
    wrapped.write_text(json.dumps({
        "format": "signserver wrapped keys 3", "mechanism": "rsa-oaep-sha1", "transport_key_sha256": fingerprint,
        "keys": [{"label": "signserver-master-1", "kind": "master", "check_value": "abcdef", "wrapped": "AAAA"}]}))
    refused = master(state_dir, tmp_path, token, "import", "--in", str(wrapped), "--check-value", "abcdef")
    assert_refused(refused, EXIT_ERROR, "not a wrapped keys file")


def test_import_of_a_file_nested_too_deep_to_read_is_refused(state_dir, token, tmp_path):
    wrapped = tmp_path / "keys.wrapped"
    wrapped.write_text("[" * 100_000 + "]" * 100_000)  # deeper than Python's JSON reader goes
    refused = master(state_dir, tmp_path, token, "import", "--in", str(wrapped), "--check-value", "abcdef")
    assert_refused(refused, EXIT_ERROR, "not a wrapped keys file")


def test_a_rotation_interrupted_while_it_waits_says_how_to_finish_it(config, state_dir, token, tmp_path):
    """Ctrl-C during the grace wait: the new key stays active (running `rotate` again would make yet
    another), and the command says which commands finish the rotation. Started with ``subprocess``
    and SIGINT's default disposition, as from a terminal: a suite run in the background (make test's
    PostgreSQL run) ignores SIGINT, and a child inherits that."""
    first_master(config, token, tmp_path, USER_PIN)
    output = tmp_path / "rotate.out"
    with output.open("w") as sink:
        rotating = subprocess.Popen(
            [str(SIGNSERVER), "hsm", "master", "rotate", "--grace-seconds", "120", "--token", token],
            env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(tmp_path / "signserver.db"),
                        SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal()),
            stdout=sink, stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while "for operations begun under the old key" not in output.read_text() and time.monotonic() < deadline:
            assert rotating.poll() is None, output.read_text()
            time.sleep(0.1)
        rotating.send_signal(signal.SIGINT)
        assert rotating.wait(60) != 0
    finally:
        if rotating.poll() is None:
            rotating.kill()
            rotating.wait()
    said = output.read_text()
    assert "Traceback" not in said, said
    assert "stays the active master key; finish with `signserver hsm master rewrap`" in said, said
    states = [m["state"] for m in json.loads(master(state_dir, tmp_path, token, "status", "--json").stdout)]
    assert sorted(states) == ["active", "retiring"]


def test_a_downgrade_is_said_first_done_with_yes_and_undone_by_the_next_start(state_dir, tmp_path):
    from signserver.store.database import NEWEST_MIGRATION

    def version() -> str:  # read by the command, on SQLite or PostgreSQL alike
        shown = run(state_dir, tmp_path, "store", "migration", "--json")
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)["migration"]

    assert run(state_dir, tmp_path, "account", "list").returncode == 0  # made at the newest migration
    shown = run(state_dir, tmp_path, "store", "migration", "--json")
    assert json.loads(shown.stdout) == {"migration": NEWEST_MIGRATION, "newest": NEWEST_MIGRATION}
    older = f"{int(NEWEST_MIGRATION) - 1:04d}"
    asked = run(state_dir, tmp_path, "store", "downgrade", "--to", older)
    assert asked.returncode == 1 and "--yes" in asked.stderr and version() == NEWEST_MIGRATION
    done = run(state_dir, tmp_path, "store", "downgrade", "--to", older, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": NEWEST_MIGRATION, "to": older} and version() == older
    assert_refused(run(state_dir, tmp_path, "store", "downgrade", "--to", "9999", "--yes"), EXIT_CONFIG, "9999")
    assert run(state_dir, tmp_path, "account", "list").returncode == 0 and version() == NEWEST_MIGRATION


@pytest.mark.sqlite_only
def test_store_migration_reads_a_database_and_makes_none(state_dir, tmp_path):
    # Only a report: a mistyped path must not leave an empty database (and its folder) behind.
    missing = tmp_path / "typo" / "signserver.db"
    shown = cli_forkserver.run([str(SIGNSERVER), "store", "migration"], capture_output=True, text=True, timeout=180,
                               env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=f"sqlite:///{missing}"))
    assert_refused(shown, EXIT_CONFIG, str(missing))
    assert not missing.parent.exists()


@pytest.mark.sqlite_only
def test_a_downgrade_without_yes_leaves_the_database_file_as_it_was(state_dir, tmp_path):
    import hashlib
    import sqlite3

    copy = tmp_path / "copy" / "signserver.db"
    copy.parent.mkdir()
    with sqlite3.connect(copy) as made:  # a backup in rollback-journal mode, as a copy may be
        made.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        made.execute("INSERT INTO alembic_version VALUES ('0023')")
    before = hashlib.sha256(copy.read_bytes()).hexdigest()

    def downgrade(database):
        return cli_forkserver.run([str(SIGNSERVER), "store", "downgrade", "--to", "0022"], capture_output=True,
                                  text=True, timeout=180,
                                  env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=f"sqlite:///{database}"))
    asked = downgrade(copy)
    assert asked.returncode == 1 and "--yes" in asked.stderr and "0023" in asked.stderr, asked.stderr
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["signserver.db"]
    missing = tmp_path / "typo" / "signserver.db"
    assert_refused(downgrade(missing), EXIT_CONFIG, str(missing))
    assert not missing.parent.exists()
