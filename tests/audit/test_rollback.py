"""A database rolled back, or emptied, behind the verification's back: the seal that an earlier
run found intact (its mark in the state directory) must still be there, for a full walk as for an
incremental one."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from benchmarks.audit_verify import fill_log
from signserver.audit.log import GENESIS_HASH
from signserver.audit.verified_mark import VerifiedMark
from signserver.audit.verify import verify_audit_log
from signserver.store.schema import audit_head, audit_log, audit_seals

GONE = "which an earlier verification found intact, is gone or altered"


def verify(service, **options):
    return verify_audit_log(service.database, service.sealer.pin, service.clock.now(), service.sealer.max_seal_age,
                            **options)


def roll_back_to(service, seq: int) -> None:
    """The log as it was when record ``seq`` was the newest and sealed (a restored backup)."""
    with service.database.transaction() as conn:
        record = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).one()
        conn.execute(delete(audit_log).where(audit_log.c.seq > seq))
        conn.execute(delete(audit_seals).where(audit_seals.c.seq > seq))
        conn.execute(update(audit_head).values(seq=seq, hash=record.hash))


def test_a_full_walk_reports_a_log_rolled_back_past_the_last_verified_seal(fresh_service, tmp_path):
    mark = VerifiedMark(tmp_path, fresh_service.database.url)
    fill_log(fresh_service, 400, seal_every=100)
    assert verify(fresh_service, mark=mark).intact
    roll_back_to(fresh_service, 200)
    assert any(GONE in p for p in verify(fresh_service, mark=mark).problems)
    full = verify(fresh_service, mark=mark, full=True)
    assert any(GONE in p for p in full.problems), full.problems


def test_a_log_emptied_whole_is_reported(fresh_service, tmp_path):
    mark = VerifiedMark(tmp_path, fresh_service.database.url)
    fill_log(fresh_service, 300, seal_every=100)
    assert verify(fresh_service, mark=mark).intact
    with fresh_service.database.transaction() as conn:
        conn.execute(delete(audit_log))
        conn.execute(delete(audit_seals))
        conn.execute(update(audit_head).values(seq=0, hash=GENESIS_HASH))
    for full in (False, True):
        report = verify(fresh_service, mark=mark, full=full)
        assert any(GONE in p for p in report.problems), (full, report.problems)


def test_a_full_walk_after_a_clean_run_stays_intact_and_keeps_the_mark(fresh_service, tmp_path):
    mark = VerifiedMark(tmp_path, fresh_service.database.url)
    fill_log(fresh_service, 300, seal_every=100)
    assert verify(fresh_service, mark=mark).intact
    fill_log(fresh_service, 400, seal_every=100)
    full = verify(fresh_service, mark=mark, full=True)
    assert full.intact and full.walked == 400 and full.resumed_after_seal is None, full.problems
    assert verify(fresh_service, mark=mark).walked == 0  # the full walk moved the mark on
