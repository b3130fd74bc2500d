"""A master key a rotation made on the token but never recorded in the database (the command
interrupted between the two): `hsm master status` lists it, `hsm master retire --orphans` removes
it after confirmation, and neither ever touches a key the database knows."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from signserver.hsm.admin import TokenAdministrator
from signserver.secret import Secret
from tests import cli_forkserver
from tests.cli.masters import first_master
from tests.conftest import SIGNSERVER, cli_env, database_url

USER_PIN = Secret("user-pin-for-unrecorded-tests")


@pytest.fixture
def token(config) -> str:
    """A token of this test's own: what is on it is what the test made. It stays: deleting it
    under this process's loaded SoftHSM would break other tokens' key generation (see
    tests/hsm/test_ceremony.py)."""
    label = f"unrecorded-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(label, Secret("so-pin-for-unrecorded-tests"), USER_PIN)
    return label


def environment(state_dir, db: Path) -> dict[str, str]:
    return cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(db / "signserver.db"),
                   SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal())


def master(state_dir, db: Path, token: str, *args: str, stdin: str | None = None):
    return cli_forkserver.run([str(SIGNSERVER), "hsm", "master", *args, "--token", token], capture_output=True,
                              text=True, timeout=180, env=environment(state_dir, db),
                              input=stdin if stdin is not None else "")


def status(state_dir, db: Path, token: str) -> list[dict]:
    shown = master(state_dir, db, token, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def master_labels_on_token(config, token: str) -> list[str]:
    """The master keys on the token, as another tool reads them. SoftHSM rewrites a token's files
    as another process logs in, so a read at that moment may miss the token: it is read again."""
    for _ in range(20):
        listing = subprocess.run(
            ["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", token, "--login",
             "--pin", USER_PIN.reveal(), "--list-objects", "--type", "secrkey"],
            capture_output=True, text=True, env=cli_env(config.state_dir))
        if listing.returncode == 0:
            return sorted(line.split(":", 1)[1].strip() for line in listing.stdout.splitlines()
                          if line.strip().startswith("label:") and "signserver-master-" in line)
        time.sleep(0.1)
    raise AssertionError(f"pkcs11-tool could not read the token: {listing.stdout}{listing.stderr}")


def token_files(state_dir) -> int:
    """How many object files SoftHSM's token directory holds: a key made on a token adds one. Read
    from the file system, so that watching for it does not log in beside the command making the key
    (SoftHSM rewrites a token's files as a process logs in, and the one generating a key may then
    find the token briefly unusable)."""
    return sum(1 for _ in (Path(state_dir) / "softhsm" / "tokens").glob("*/*.object"))


def wait_for_a_new_key(state_dir, before: int, process: subprocess.Popen, output: Path) -> None:
    """Until ``process`` has made a key on a token (see token_files)."""
    deadline = time.monotonic() + 60
    while token_files(state_dir) == before:
        assert process.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "the rotation made no key"
        time.sleep(0.05)


@contextmanager
def database_writes_held(db: Path):
    """Hold the database's write lock (readers go on): a rotation then makes its key on the token
    and waits to record it."""
    url = database_url(db / "signserver.db")
    if url.startswith("sqlite"):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        engine = create_engine(url)
        try:
            with engine.connect() as conn, conn.begin() as transaction:
                conn.execute(text("LOCK TABLE master_keys IN EXCLUSIVE MODE"))
                yield
                transaction.rollback()
        finally:
            engine.dispose()


def interrupted_rotation(config, state_dir, token: str, db: Path) -> tuple[str, str]:
    """A `rotate` given Ctrl-C after it made its key on the token and before it recorded it.
    Returns the key's label and what the command said. Started with SIGINT's default
    disposition, as from a terminal (a suite run in the background ignores SIGINT)."""
    before = master_labels_on_token(config, token)
    files = token_files(state_dir)
    output = db / "rotate.out"
    with database_writes_held(db), output.open("w") as sink:
        rotating = subprocess.Popen(
            [str(SIGNSERVER), "hsm", "master", "rotate", "--grace-seconds", "0", "--token", token],
            env=environment(state_dir, db), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            wait_for_a_new_key(state_dir, files, rotating, output)
            rotating.send_signal(signal.SIGINT)
        except BaseException:
            rotating.kill()
            rotating.wait()
            raise
    try:
        assert rotating.wait(60) != 0, output.read_text()
    finally:
        if rotating.poll() is None:
            rotating.kill()
            rotating.wait()
    made = sorted(set(master_labels_on_token(config, token)) - set(before))
    assert len(made) == 1, made
    return made[0], output.read_text()


def test_an_interrupted_rotation_leaves_a_key_status_lists_and_retire_orphans_removes(
        config, state_dir, token, tmp_path):
    first_master(config, token, tmp_path, USER_PIN)
    known = status(state_dir, tmp_path, token)
    assert [m["state"] for m in known] == ["active"]

    label, said = interrupted_rotation(config, state_dir, token, tmp_path)
    assert "Traceback" not in said, said
    assert "retire --orphans" in said, said

    listed = status(state_dir, tmp_path, token)
    assert listed[:1] == known  # the database's keys as before
    unrecorded = [m for m in listed if m["label"] == label]
    assert len(unrecorded) == 1 and unrecorded[0]["state"] == "unrecorded", listed
    assert unrecorded[0]["on_token"] == "yes" and unrecorded[0]["packages"] == 0
    table = master(state_dir, tmp_path, token, "status")
    assert any(line.startswith(label) and "unrecorded" in line for line in table.stdout.splitlines()), table.stdout
    assert "retire --orphans" in table.stdout

    # Off a terminal, without --yes: refused, nothing destroyed.
    refused = master(state_dir, tmp_path, token, "retire", "--orphans")
    assert refused.returncode == 1 and "--yes" in refused.stderr and "Traceback" not in refused.stderr, refused
    assert label in master_labels_on_token(config, token)

    removed = master(state_dir, tmp_path, token, "retire", "--orphans", "--yes", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["destroyed_unrecorded"] == [label]
    assert label not in master_labels_on_token(config, token)
    assert known[0]["label"] in master_labels_on_token(config, token)  # the database's key stays
    assert status(state_dir, tmp_path, token) == known


def test_retire_orphans_ended_at_the_question_destroys_nothing(config, state_dir, token, tmp_path):
    """Ctrl-D at the confirmation: one line and exit code 1, as at every question of `hsm`."""
    from tests.cli.masters import service_with_first_master
    from tests.cli.test_account_commands import run_on_terminal

    with service_with_first_master(config, token, tmp_path, USER_PIN) as service:
        service.master_keys.create("signserver-master-7")  # made on the token, never recorded
    code, output = run_on_terminal(state_dir, tmp_path, "hsm", "master", "retire", "--orphans", "--token", token,
                                   answer="\x04", SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal())  # Ctrl-D
    assert code == 1, output
    assert "Traceback" not in output and "EOFError" not in output
    assert "Destroy the master keys the database never recorded, signserver-master-7" in output
    assert output.strip().splitlines()[-1] == "nothing destroyed"
    assert master_labels_on_token(config, token) == ["signserver-master-1", "signserver-master-7"]


def test_retire_orphans_never_destroys_a_key_the_database_knows(config, state_dir, token, tmp_path):
    """Keys of every state the database records stay, whatever --orphans finds."""
    first_master(config, token, tmp_path, USER_PIN)
    prepared = master(state_dir, tmp_path, token, "rotate", "--prepare")
    assert prepared.returncode == 0, prepared.stderr
    before = status(state_dir, tmp_path, token)
    on_token = master_labels_on_token(config, token)
    nothing = master(state_dir, tmp_path, token, "retire", "--orphans", "--yes")
    assert nothing.returncode == 0, nothing.stderr
    assert status(state_dir, tmp_path, token) == before
    assert master_labels_on_token(config, token) == on_token == ["signserver-master-1", "signserver-master-2"]
    assert [m["state"] for m in before] == ["active", "pending"]


def test_retire_orphans_on_a_database_that_knows_no_master_key_destroys_nothing(config, state_dir, token,
                                                                               tmp_path):
    """A database that knows no master key (the wrong database, or a token readied by the key
    ceremony before its server first starts) cannot tell an unrecorded key from a copied one."""
    first_master(config, token, tmp_path / "own", USER_PIN)
    on_token = master_labels_on_token(config, token)
    assert on_token == ["signserver-master-1"]
    refused = master(state_dir, tmp_path / "other", token, "retire", "--orphans", "--yes")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused
    assert "knows no master key" in refused.stderr
    assert master_labels_on_token(config, token) == on_token


def test_retire_orphans_beside_a_rotation_never_leaves_a_recorded_key_off_the_token(config, state_dir, token,
                                                                                    tmp_path):
    """`retire --orphans` run while a rotation has made its key and waits to record it sees that key
    as unrecorded. Whichever of the two then goes first, the database never records a key the token
    no longer holds: the destruction and the recording take turns under one lock, and the rotation
    records its key only if it is still there."""
    first_master(config, token, tmp_path, USER_PIN)
    before = master_labels_on_token(config, token)
    files = token_files(state_dir)
    env = environment(state_dir, tmp_path)
    rotate_out, retire_out, retire_err = tmp_path / "rotate.out", tmp_path / "retire.out", tmp_path / "retire.err"
    with database_writes_held(tmp_path), rotate_out.open("w") as rotate_sink, retire_out.open("w") as retire_sink, \
            retire_err.open("w") as retire_said:
        rotating = subprocess.Popen(
            [str(SIGNSERVER), "hsm", "master", "rotate", "--grace-seconds", "0", "--token", token],
            env=env, stdout=rotate_sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        retiring = None
        try:
            wait_for_a_new_key(state_dir, files, rotating, rotate_out)
            retiring = subprocess.Popen(
                [str(SIGNSERVER), "hsm", "master", "retire", "--orphans", "--yes", "--json", "--token", token],
                env=env, stdout=retire_sink, stderr=retire_said, stdin=subprocess.DEVNULL)
            # Long enough for the retirement to find the key and reach its destruction (or, without
            # the lock, to destroy it), well within the database's wait for its lock.
            time.sleep(6)
        except BaseException:
            for process in (rotating, retiring):
                if process is not None:
                    process.kill()
                    process.wait()
            raise
    rotated, retired = rotating.wait(120), retiring.wait(120)
    # Its JSON on standard output; what it logs (a wait for the lock, say) on standard error.
    said = rotate_out.read_text() + retire_out.read_text() + retire_err.read_text()
    assert "Traceback" not in said, said
    assert retired == 0, said

    on_token = set(master_labels_on_token(config, token))
    recorded = status(state_dir, tmp_path, token)
    in_use = [m for m in recorded if m["state"] != "retired"]  # a retired key is destroyed: rightly gone
    assert {m["label"] for m in in_use} <= on_token, (recorded, on_token, said)
    assert all(m["on_token"] == "yes" for m in in_use), recorded
    if rotated == 0:  # the rotation recorded first: the retirement left its key alone
        assert [m["state"] for m in recorded] == ["retired", "active"], recorded
        assert json.loads(retire_out.read_text())["destroyed_unrecorded"] == [], said
    else:  # the retirement destroyed the key first: the rotation said so and changed nothing
        assert "no longer on the token" in said, said
        assert [m["state"] for m in recorded] == ["active"] and on_token == set(before), (recorded, on_token)


def transport_labels_on_token(config, token: str) -> list[str]:
    listing = subprocess.run(
        ["pkcs11-tool", "--module", str(config.hsm.module), "--token-label", token, "--login",
         "--pin", USER_PIN.reveal(), "--list-objects", "--type", "privkey"],
        capture_output=True, text=True, env=cli_env(config.state_dir), timeout=60)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return sorted(line.split(":", 1)[1].strip() for line in listing.stdout.splitlines()
                  if line.strip().startswith("label:") and "signserver-transport-" in line)


def test_a_transport_key_interrupted_as_it_is_made_is_not_left_on_the_token(config, state_dir, token, tmp_path):
    """Ctrl-C once the pair is on the token and before its public half is written: a pair whose
    public half nobody has is destroyed; each run leaves a pair exactly when it wrote its file."""
    for attempt in range(3):
        before = transport_labels_on_token(config, token)
        out, said = tmp_path / f"transport-{attempt}.pem", tmp_path / f"begin-{attempt}.out"
        files = token_files(state_dir)
        with said.open("w") as sink:
            begun = subprocess.Popen(
                [str(SIGNSERVER), "hsm", "master", "receive-begin", "--out", str(out), "--token", token],
                env=environment(state_dir, tmp_path), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            try:
                wait_for_a_new_key(state_dir, files, begun, said)
                begun.send_signal(signal.SIGINT)
                begun.wait(60)
            finally:
                if begun.poll() is None:
                    begun.kill()
                    begun.wait()
        made = sorted(set(transport_labels_on_token(config, token)) - set(before))
        assert "Traceback" not in said.read_text(), said.read_text()
        assert (len(made) == 1) == out.exists() and len(made) <= 1, (made, said.read_text())
