"""A log emptied or cut off from its end is not intact while the database still holds evidence
that the records were there: the head, seals, the prune's anchor, recorded exports. Checked as an
auditor checks a copy of the database: without a mark of an earlier verification."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from benchmarks.audit_verify import fill_log
from signserver.audit.export import export_segment
from signserver.audit.log import GENESIS_HASH
from signserver.audit.pruning import AuditPruner
from signserver.audit.verify import verify_audit_log
from signserver.store.schema import audit_anchor, audit_exports, audit_head, audit_log, audit_seals
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env


def verify(service):
    return verify_audit_log(service.database, service.sealer.pin, service.clock.now(), service.sealer.max_seal_age)


def export(service, until: int, out):
    return export_segment(service.database, service.audit, service.sealer.pin, until, out, service.clock.now(),
                          service.sealer.max_seal_age, "operator:test")


def cut_after(service, seq: int, *, head: bool = True, seals: bool = True) -> None:
    """Delete the records after ``seq``; with ``head``, point the head at record ``seq`` (or the
    genesis); with ``seals``, delete the seals of the removed records too."""
    with service.database.transaction() as conn:
        last = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).scalar()
        conn.execute(delete(audit_log).where(audit_log.c.seq > seq))
        if seals:
            conn.execute(delete(audit_seals).where(audit_seals.c.seq > seq))
        if head:
            conn.execute(update(audit_head).values(seq=seq, hash=last or GENESIS_HASH))


@pytest.fixture
def log_of_300(fresh_service):
    fill_log(fresh_service, 300, seal_every=50)
    assert verify(fresh_service).intact
    return fresh_service


def test_all_records_deleted_head_and_seals_kept(log_of_300):
    with log_of_300.database.transaction() as conn:
        conn.execute(delete(audit_log))
    report = verify(log_of_300)
    assert not report.intact
    assert any("its head says 300" in p for p in report.problems), report.problems


def test_the_last_records_deleted_head_kept(log_of_300):
    cut_after(log_of_300, 270, head=False, seals=False)
    problems = verify(log_of_300).problems
    assert any("its head says 300" in p for p in problems), problems
    assert "record 300, sealed, is missing: the log was cut off" in problems


def test_the_last_records_deleted_with_their_seals_and_the_head_but_an_export_recorded(log_of_300, tmp_path):
    export(log_of_300, 300, tmp_path / "s.jsonl")
    cut_after(log_of_300, 250)
    problems = verify(log_of_300).problems
    assert any("exported up to record 300" in p and "ends at record 250" in p for p in problems), problems


def test_everything_deleted_but_the_exports(log_of_300, tmp_path):
    export(log_of_300, 300, tmp_path / "s.jsonl")
    with log_of_300.database.transaction() as conn:
        for table in (audit_log, audit_seals):
            conn.execute(delete(table))
        conn.execute(update(audit_head).values(seq=0, hash=GENESIS_HASH))
    report = verify(log_of_300)
    assert any("exported up to record 300" in p for p in report.problems), report.problems


def test_everything_deleted_after_a_prune_but_the_anchor(log_of_300, tmp_path):
    export(log_of_300, 300, tmp_path / "s.jsonl")
    pruner = AuditPruner(log_of_300.database, log_of_300.audit, log_of_300.clock, None, 100)
    pruner.prune(300, "operator:test")
    while pruner.remove_batch().records:
        pass
    with log_of_300.database.transaction() as conn:
        for table in (audit_log, audit_seals, audit_exports):
            conn.execute(delete(table))
        conn.execute(update(audit_head).values(seq=0, hash=GENESIS_HASH))
    report = verify(log_of_300)
    assert not report.intact
    assert any("which sealed record 300 where the log starts, is missing" in p for p in report.problems), \
        report.problems


def test_the_head_row_deleted_is_reported_not_a_crash(log_of_300, state_dir):
    with log_of_300.database.transaction() as conn:
        conn.execute(delete(audit_head))
    report = verify(log_of_300)
    assert any("head (the row of audit_head) is gone" in p for p in report.problems), report.problems
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=log_of_300.database.url)
    result = cli_forkserver.run([str(SIGNSERVER), "audit", "verify", "--full"], env=env, capture_output=True,
                                text=True)
    assert result.returncode == 1 and "TAMPERED" in result.stdout, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_log_wiped_whole_beside_a_pinned_seal_key(log_of_300):
    """Records, seals, head, exports and anchor all wiped: nothing in the database tells, but the
    state directory's pin does: a server pins its seal key when it first seals."""
    with log_of_300.database.transaction() as conn:
        for table in (audit_log, audit_seals, audit_exports, audit_anchor):
            conn.execute(delete(table))
        conn.execute(update(audit_head).values(seq=0, hash=GENESIS_HASH))
    report = verify(log_of_300)
    assert any("holds no record and no seal, yet a seal key is pinned" in p for p in report.problems), \
        report.problems
