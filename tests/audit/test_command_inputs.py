"""`signserver audit verify / export / prune` on input they cannot use: one clear line on stderr,
a proper exit status, nothing created or left half-written, and no report of tampering for what
was never the log."""

from __future__ import annotations

import json

import pytest

from benchmarks.audit_verify import fill_log
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env


@pytest.fixture
def run(fresh_service, state_dir):
    fill_log(fresh_service, 200, seal_every=50)
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=fresh_service.database.url)

    def run(*args, **extra_env):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env={**env, **extra_env}, capture_output=True,
                                  text=True)
    return run


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signserver: ") and "Traceback" not in result.stderr, \
        result.stdout + result.stderr
    return lines[0]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("command", [["verify"], ["verify", "--full"], ["export", "--until", "10", "--out", "x.jsonl"],
                                     ["prune", "--until", "10"]])
def test_a_database_that_does_not_exist_is_not_made(run, tmp_path, command):
    absent = tmp_path / "typo" / "signserver.db"
    result = run(*[str(tmp_path / a) if a.endswith(".jsonl") else a for a in command],
                 SIGNSERVER_DATABASE_URL=f"sqlite:///{absent}")
    assert result.returncode == 78, result.stdout + result.stderr
    assert str(absent) in one_line(result) and "TAMPERED" not in result.stdout
    assert not absent.exists() and not absent.parent.exists()


def test_verify_of_a_file_that_is_not_there(run, tmp_path):
    for absent in (tmp_path / "absent.jsonl", tmp_path):
        result = run("verify", "--file", str(absent))
        assert result.returncode == 1 and not result.stdout, result.stdout + result.stderr
        assert str(absent) in one_line(result)
        assert "no such file" in one_line(result) or "not a file" in one_line(result)


def test_prune_and_export_until_a_record_that_cannot_be(run, tmp_path):
    for command in (["prune"], ["export", "--out", str(tmp_path / "s.jsonl")]):
        for until in ("0", "-3"):
            result = run(*command, "--until", until)
            assert result.returncode == 2, result.stdout + result.stderr
            assert "--until" in result.stderr and "removed already" not in result.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_an_expected_key_that_is_no_fingerprint_is_refused(run, tmp_path):
    result = run("verify", "--expect-key", "nothex")
    assert result.returncode == 2 and "--expect-key" in result.stderr and "TAMPERED" not in result.stdout
    fingerprint = json.loads(run("verify", "--json").stdout)["seal_key_sha256"]
    spaced = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    assert run("verify", "--expect-key", spaced).returncode == 0


@pytest.mark.sqlite_only
def test_an_export_the_database_could_not_record_leaves_no_file(run, fresh_service, tmp_path):
    """The file is written first, then the export recorded: when the database refuses the record,
    the file goes too (a file the log does not know of could never be pruned, and its name would
    be taken)."""
    from sqlalchemy import text

    with fresh_service.database.transaction() as conn:
        conn.execute(text("CREATE TRIGGER refuse_exports BEFORE INSERT ON audit_exports "
                          "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"))
    out = tmp_path / "segment.jsonl.gz"
    result = run("export", "--until", "100", "--out", str(out))
    assert result.returncode == 1 and "disk is full" in one_line(result), result.stdout + result.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "segment" in p.name]


def test_files_checked_beside_a_damaged_pin_say_so(run, tmp_path):
    out = tmp_path / "segment.jsonl"
    assert run("export", "--until", "100", "--out", str(out)).returncode == 0
    elsewhere = tmp_path / "auditor"
    (elsewhere / "audit").mkdir(parents=True)
    (elsewhere / "audit" / "seal-key.pem").write_text("not a key\n")
    result = run("verify", "--file", str(out), SIGNSERVER_STATE_DIR=str(elsewhere))
    assert result.returncode == 1 and "seal-key.pem holds no PEM public key" in result.stdout, \
        result.stdout + result.stderr
    assert "from the files alone" not in result.stdout
