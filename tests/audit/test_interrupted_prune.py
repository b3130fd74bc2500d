"""`signserver audit prune` killed half-way: the log it leaves verifies, and the same command run
again finishes the removal (nothing beyond the exported segment is ever removed)."""

from __future__ import annotations

import signal
import subprocess
import time

from sqlalchemy import func, select

from benchmarks.audit_verify import fill_log
from signserver.audit.export import export_segment
from signserver.store.schema import audit_log, audit_seals
from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env


def count(service, table) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def first_seq(service) -> int:
    with service.database.read() as conn:
        return conn.execute(select(func.min(audit_log.c.seq))).scalar()


def test_a_prune_killed_half_way_verifies_and_the_next_one_finishes(fresh_service, state_dir, tmp_path):
    service = fresh_service
    fill_log(service, 12_000, seal_every=500)
    segment = export_segment(service.database, service.audit, service.sealer.pin, 10_000, tmp_path / "s.jsonl",
                             service.clock.now(), service.sealer.max_seal_age, "operator:test")
    assert segment.last_seq == 10_000
    env = cli_env(state_dir, SIGNSERVER_DATABASE_URL=service.database.url, SIGNSERVER_RETENTION_BATCH_ROWS="10")

    def run(*args):
        return cli_forkserver.run([str(SIGNSERVER), "audit", *args], env=env, capture_output=True, text=True)

    # The first batches gone, and the command killed outright: no chance to finish or tidy up.
    prune = subprocess.Popen([str(SIGNSERVER), "audit", "prune", "--until", "10000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (first_seq(service) or 0) < 200 and prune.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        prune.send_signal(signal.SIGKILL)
    finally:
        prune.wait(timeout=30)
    assert prune.returncode == -signal.SIGKILL, "the prune ended before it could be killed: make the log longer"
    left = first_seq(service)
    assert 1 < left <= 10_000, left  # killed half-way

    service.sealer.seal()  # the export's and the prune's records, as a running server seals them
    verified = run("verify", "--full")
    assert verified.returncode == 0 and "INTACT" in verified.stdout, verified.stdout + verified.stderr
    assert "records 10001 to" in verified.stdout, verified.stdout

    again = run("prune", "--until", "10000")
    assert again.returncode == 0, again.stdout + again.stderr
    assert first_seq(service) == 10_001
    with service.database.read() as conn:
        assert conn.execute(select(func.min(audit_seals.c.number))).scalar() == segment.seal_number
    assert count(service, audit_log) == 2_000 + 2  # and the export's and the prune's records
    assert run("verify", "--full").returncode == 0

    done = run("prune", "--until", "10000")  # nothing left to remove: said, and refused as before
    assert done.returncode == 1 and "removed already" in done.stderr, done.stdout + done.stderr
