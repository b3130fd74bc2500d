"""A record whose time was rewritten to a number no date can be is reported, by `audit verify`
and by `audit verify --file`, never a traceback; the JSON output stays JSON."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from benchmarks.audit_verify import fill_log
from signserver.audit.record_time import time_text
from signserver.store.schema import audit_log
from tests import cli_forkserver
from tests.audit.test_segments import check_files, export, live
from tests.conftest import SIGNSERVER, cli_env

FAR_PAST = -10 ** 12  # a BIGINT, some 30,000 years before the year 1
NO_DATE = f"record 120 has a time no date can be ({FAR_PAST} s since 1970, out of range)"


def log_of_200(service):
    """200 records, sealed every 50."""
    fill_log(service, 200, seal_every=50)
    return service


@pytest.fixture
def run(fresh_service, state_dir):
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=fresh_service.database.url)

    def run(*args):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env=env, capture_output=True, text=True)
    return run


def test_time_text_never_raises():
    assert time_text(0) == "1970-01-01T00:00:00+00:00"
    assert time_text(FAR_PAST) == f"{FAR_PAST} s since 1970, out of range"
    assert "out of range" in time_text(10 ** 30)


def rewrite_time(service, seq: int, at: int) -> None:
    with service.database.transaction() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(at=at))


def test_a_time_rewritten_far_back_in_the_live_log(fresh_service):
    log_of_200(fresh_service)
    rewrite_time(fresh_service, 120, FAR_PAST)
    problems = live(fresh_service).problems
    assert "record 120 was modified" in problems and NO_DATE + ": it was altered" in problems, problems


def test_the_verify_command_reports_it(fresh_service, run):
    log_of_200(fresh_service)
    rewrite_time(fresh_service, 120, FAR_PAST)
    shown = run("verify", "--full")
    assert shown.returncode == 1 and "TAMPERED" in shown.stdout and NO_DATE in shown.stdout, \
        shown.stdout + shown.stderr
    as_json = run("verify", "--full", "--json")
    assert as_json.returncode == 1 and "Traceback" not in as_json.stderr, as_json.stderr
    assert any(NO_DATE in p for p in json.loads(as_json.stdout)["problems"])


@pytest.mark.parametrize("at", [FAR_PAST, 10 ** 30])
def test_a_time_rewritten_in_a_segment_file(fresh_service, tmp_path, run, at):
    log_of_200(fresh_service)
    out = export(fresh_service, 200, tmp_path / "segment.jsonl").path
    lines = []
    for line in out.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("record", {}).get("seq") == 120:
            entry["record"]["at"] = at
            line = json.dumps(entry, separators=(",", ":"))
        lines.append(line)
    out.write_text("\n".join(lines) + "\n")
    problems = check_files(fresh_service, out).problems
    assert "record 120 was modified" in problems and any("record 120 has a time no date can be" in p
                                                         for p in problems), problems
    shown = run("verify", "--file", str(out), "--json")
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert "record 120 was modified" in json.loads(shown.stdout)["problems"]
