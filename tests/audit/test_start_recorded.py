"""An export or a prune checks first that the live log starts where its newest audit.pruned
record says, as `audit verify` does: records removed from the start behind the log's back, with
the anchor row written by hand, are neither exported from there nor laundered by a prune."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, insert, select, update

from benchmarks.audit_verify import fill_log
from signserver.audit.anchor import PRUNED_EVENT, read_anchor
from signserver.audit.seal_format import SealContent
from signserver.audit.start_check import check_live_start
from signserver.errors import DataCorrupted
from signserver.store.schema import audit_anchor, audit_exports, audit_log, audit_seals
from tests import cli_forkserver
from tests.audit.test_out_of_range_times import log_of_200
from tests.audit.test_segments import export, live, prune, pruner, rows
from tests.conftest import SIGNSERVER, cli_env

MISSING = f"no {PRUNED_EVENT} record says those were removed"


def remove_start(service, until: int) -> None:
    """Remove records up to ``until`` and the seals before its seal, and write the anchor row
    there, without the audit.pruned record a prune appends."""
    with service.database.transaction() as conn:
        seal = conn.execute(select(audit_seals).where(audit_seals.c.seq == until)).one()
        record = conn.execute(select(audit_log).where(audit_log.c.seq == until)).one()
        conn.execute(delete(audit_log).where(audit_log.c.seq <= until))
        conn.execute(delete(audit_seals).where(audit_seals.c.number < seal.number))
        conn.execute(insert(audit_anchor).values(id=1, seq=until, hash=record.hash, seal_number=seal.number,
                                                 seal_digest=SealContent.of_row(seal).digest(), lifecycle_seq=None,
                                                 lifecycle_event=None, export_sha256="f" * 64, pruned_at=record.at))


def test_records_removed_from_the_start_are_not_exported(fresh_service, tmp_path):
    service = log_of_200(fresh_service)
    remove_start(service, 100)
    assert any(MISSING in p for p in live(service).problems)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "s.jsonl"
    with pytest.raises(DataCorrupted) as refused:
        export(service, 200, out)
    assert "records from 101 on are not exported" in str(refused.value) and MISSING in str(refused.value)
    assert not list(out.parent.iterdir())  # nor a partial file
    assert rows(service, audit_exports) == 0


def test_records_removed_from_the_start_are_not_pruned_even_with_an_export_row(fresh_service):
    """Whoever wrote the anchor row can write an export row too: the prune checks the start itself."""
    service = log_of_200(fresh_service)
    remove_start(service, 100)
    with service.database.transaction() as conn:
        seal = conn.execute(select(audit_seals).where(audit_seals.c.seq == 200)).one()
        conn.execute(insert(audit_exports).values(
            first_seq=101, last_seq=200, last_hash=seal.hash, seal_number=seal.number,
            seal_digest=SealContent.of_row(seal).digest(), lifecycle_seq=None, lifecycle_event=None,
            file_sha256="e" * 64, file_name="forged.jsonl", exported_at=seal.at))
        before = read_anchor(conn)
    with pytest.raises(DataCorrupted) as refused:
        pruner(service).prune(200, "operator:test")
    assert "nothing is removed" in str(refused.value) and MISSING in str(refused.value)
    with service.database.read() as conn:
        assert read_anchor(conn) == before
    assert any(MISSING in p for p in live(service).problems)


def test_an_anchor_moved_on_after_a_prune_is_not_exported_nor_pruned(fresh_service, tmp_path):
    service = log_of_200(fresh_service)
    prune(service, export(service, 100, tmp_path / "a.jsonl").last_seq)
    service.sealer.seal()  # the prune's own record
    with service.database.transaction() as conn:
        target = conn.execute(select(audit_seals).where(audit_seals.c.seq == 150)).one()
        conn.execute(update(audit_anchor).values(seq=150, hash=target.hash, seal_number=target.number,
                                                 seal_digest=SealContent.of_row(target).digest()))
        conn.execute(delete(audit_log).where(audit_log.c.seq <= 150))
    with pytest.raises(DataCorrupted, match=f"the newest {PRUNED_EVENT} record says records up to 100"):
        export(service, 200, tmp_path / "b.jsonl")
    with pytest.raises(DataCorrupted, match="nothing is removed"):
        pruner(service).prune(200, "operator:test")


def test_a_pruned_record_where_the_log_starts_at_the_first_record(fresh_service, tmp_path):
    service = log_of_200(fresh_service)
    prune(service, export(service, 100, tmp_path / "a.jsonl").last_seq)
    with service.database.transaction() as conn:
        conn.execute(delete(audit_anchor))
    with pytest.raises(DataCorrupted, match="says records up to 100 were removed, but it starts at the first"):
        export(service, 200, tmp_path / "b.jsonl")


def test_after_genuine_prunes_the_log_exports_and_prunes_on(fresh_service, tmp_path):
    """The audit.pruned record of the start lies after the range exported next: it is found."""
    service = log_of_200(fresh_service)
    prune(service, export(service, 100, tmp_path / "a.jsonl").last_seq)
    fill_log(service, 100, seal_every=50)
    with service.database.read() as conn:
        anchor = read_anchor(conn)
    check_live_start(service.database, anchor, window=7)  # found a few windows back from the head
    second = export(service, 150, tmp_path / "b.jsonl")
    assert second.first_seq == 101 and second.last_seq == 150
    prune(service, second.last_seq)
    service.sealer.seal()
    assert live(service).intact


def test_the_export_command_refuses_and_the_prune_command_too(fresh_service, state_dir, tmp_path):
    service = log_of_200(fresh_service)
    remove_start(service, 100)
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url)

    def run(*args):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env=env, capture_output=True, text=True)
    out = tmp_path / "segment.jsonl"
    exported = run("export", "--until", "200", "--out", str(out))
    assert exported.returncode == 1 and MISSING in exported.stderr and "Traceback" not in exported.stderr, \
        exported.stdout + exported.stderr
    assert not out.exists()
    pruned = run("prune", "--until", "200", "--json")
    assert pruned.returncode == 1 and "Traceback" not in pruned.stderr, pruned.stdout + pruned.stderr
    verified = run("verify", "--full", "--json")
    assert verified.returncode == 1 and any(MISSING in p for p in json.loads(verified.stdout)["problems"])
