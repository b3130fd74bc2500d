"""Seals and records removed while the server runs, and the rewritten head sealed by its next
heartbeat: the gap along the seal chain tells it."""

from __future__ import annotations

from sqlalchemy import delete, select, update

from signserver.store.schema import audit_head, audit_log, audit_seals
from tests.audit.test_seal_tampering import append, heartbeats, report, seal_rows
from tests.conftest import enrol


def cut_after_seal(service, number: int) -> None:
    """Delete the seals after ``number`` and the records after its seq, and move the head back."""
    with service.database.transaction() as conn:
        kept = conn.execute(select(audit_seals).where(audit_seals.c.number == number)).one()
        conn.execute(delete(audit_seals).where(audit_seals.c.number > number))
        conn.execute(delete(audit_log).where(audit_log.c.seq > kept.seq))
        conn.execute(update(audit_head).values(seq=kept.seq, hash=kept.hash))


def test_seals_removed_while_running_then_resealed_are_reported(fresh_service):
    enrol(fresh_service)
    fresh_service.sealer.server_started()
    append(fresh_service, 0)
    heartbeats(fresh_service, 3)
    k = seal_rows(fresh_service)[-1].number
    append(fresh_service, 1)
    heartbeats(fresh_service, 3)
    cut_after_seal(fresh_service, k)
    append(fresh_service, 2)  # the insider's records, of this time
    fresh_service.clock.advance(seconds=fresh_service.sealer.max_seal_age.total_seconds() + 60)
    assert fresh_service.sealer.seal_if_due() is not None  # the heartbeat seals the rewritten head as k+1
    assert seal_rows(fresh_service)[-1].number == k + 1
    problems = report(fresh_service).problems
    assert any(p.startswith(f"seal {k + 1} came") and f"seals after {k} were removed" in p for p in problems), problems
    assert any(p.startswith("record") and f"first sealed by seal {k + 1}" in p for p in problems), problems


def test_a_clean_stop_excuses_a_long_gap(fresh_service):
    enrol(fresh_service)
    fresh_service.sealer.server_started()
    heartbeats(fresh_service, 2)
    fresh_service.sealer.server_stopping()
    fresh_service.clock.advance(days=2)
    append(fresh_service, 0)  # a command run while no server was
    fresh_service.clock.advance(days=1)
    fresh_service.sealer.server_started()
    heartbeats(fresh_service, 2)
    result = report(fresh_service)
    assert result.intact, result.problems
