"""What ``signserver audit verify`` costs beside a running server: its memory as the log grows,
and the SignHash rate while it walks, as ratios measured side by side in one run.

    python -m benchmarks.audit_verify [--records 100000] [--seconds 60]

- Memory: the log is filled to N records (:func:`fill_log`: records and seals made as the server
  makes them, a seal every SEAL_EVERY records, signed by the token's seal key), the walk's peak of
  Python allocations is taken with tracemalloc, then the log is filled to 10 N and the peak taken
  again: the ratio of the two peaks (1.0: memory does not grow with the log; a batch of seals
  fills up to 5,000 rows, so take N of at least 5,000 seals' worth for a flat ratio).
- SignHash beside a walk: `signserver serve` on the same database, SignHash at concurrency 8
  (benchmarks/load.py) for a window with no walk, then for a window during the first half of
  which `signserver audit verify --full` walks the log again and again from another process, then
  for one during the first half of which another process walks it as verification did before
  (every record read and hashed in one read transaction, :data:`ONE_TRANSACTION_WALK`): the rates
  as ratios to the first, the longest call of each window (the second half holds what follows a
  walk's end), and how much SQLite's write-ahead log grew while the walk ran.

Nothing here is asserted on timing: tests/audit/test_verify_beside_service.py asserts the
allocation ratio and that a walk holds no lock nor snapshot while writers commit; this prints
the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select, update

from benchmarks import load
from benchmarks.harness import benchmark_service, markdown_table
from signserver.audit.log import record_hash
from signserver.audit.seal import audit_key_id
from signserver.audit.seal_format import NO_PREVIOUS_SEAL, SealContent, signature_algorithm_for
from signserver.audit.verify import verify_audit_log
from signserver.clock import epoch_seconds
from signserver.service import SignService
from signserver.store.schema import audit_head, audit_log, audit_seals

# The walk verification made before it read in batches of short transactions: one snapshot held
# from the first record to the last (SQLite, the benchmark's store).
# Walked again within the same transaction until stopped, as a walk of a longer log would last.
ONE_TRANSACTION_WALK = """
import sqlite3, sys
from signserver.audit.log import record_hash
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN")
while True:
    for r in db.execute("SELECT seq, at, event, actor, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq"):
        record_hash(r[6], r[0], r[1], r[2], r[3], r[4], r[5])
"""
SEAL_EVERY = 20  # records per seal in a filled log: many seals, as a busy server's heartbeats make
CHUNK = 5000  # records inserted per transaction while filling


def fill_log(service: SignService, until_seq: int, seal_every: int = SEAL_EVERY) -> None:
    """Append records up to ``until_seq`` and seal every ``seal_every`` of them (the seal key's
    pin is written first, as the server's first seal writes it), all at the service clock's now,
    much faster than one transaction a record would."""
    service.sealer.seal()  # pins the token's seal key
    key_id = audit_key_id(service.keys)
    algorithm = signature_algorithm_for(service.keys.public_key(key_id))
    at = epoch_seconds(service.clock.now())
    with service.database.read() as conn:
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
        last = conn.execute(select(audit_seals).order_by(audit_seals.c.number.desc()).limit(1)).first()
    seq, prev = head.seq, head.hash
    number, prev_seal = (last.number, SealContent.of_row(last).digest()) if last else (0, NO_PREVIOUS_SEAL)
    while seq < until_seq:
        records, seals = [], []
        for _ in range(min(CHUNK, until_seq - seq)):
            seq += 1
            detail = f'{{"credential":"bench","digest":"{seq:064x}","algorithm":"ecdsa-sha256"}}'
            digest = record_hash(prev, seq, at, "signature", "application:bench", "holder", detail)
            records.append({"seq": seq, "at": at, "event": "signature", "actor": "application:bench",
                            "subject": "holder", "detail": detail, "prev_hash": prev, "hash": digest})
            prev = digest
            if seq % seal_every == 0 or seq == until_seq:
                number += 1
                content = SealContent(number=number, seq=seq, hash=digest, at=at, prev_seal=prev_seal)
                seals.append({"number": number, "seq": seq, "hash": digest, "at": at, "key_id": key_id,
                              "signature": service.keys.sign_data(key_id, content.message(), algorithm),
                              "format": content.format, "prev_seal": prev_seal})
                prev_seal = content.digest()
        with service.database.transaction() as conn:
            conn.execute(insert(audit_log), records)
            if seals:
                conn.execute(insert(audit_seals), seals)
            conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))


def verify_peak_bytes(service: SignService, batch: int | None = None) -> tuple[int, bool]:
    """The peak of Python allocations during a full walk of the live log, and whether it was intact."""
    options = {"batch": batch} if batch else {}
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        report = verify_audit_log(service.database, service.sealer.pin, service.clock.now(),
                                  service.sealer.max_seal_age, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, report.intact


def _signhash_rate(target, seconds: float) -> tuple[float, float]:
    result = load.run_load("SignHash", target, load.hash_signer(1), 8, seconds)
    return result.per_second, max(result.latencies, default=0.0)


# When run_load opens its window after it is called (its setup_seconds, and 0.15 s a caller).
WINDOW_OPENS_AFTER = 3.0 + 8 * 0.15


@dataclass(frozen=True)
class Window:
    per_second: float
    longest_call: float  # seconds
    wal_growth: int  # bytes the write-ahead log grew by while the walk ran
    walks_ended: int


def _during(command: list[str], env: dict[str, str], target, seconds: float, wal: Path) -> Window:
    """SignHash while ``command`` runs (started again whenever it ends), until half the window:
    the window also holds what follows a walk's end."""
    stop, ended = threading.Event(), []
    current: list[subprocess.Popen] = []
    wal_before = wal.stat().st_size if wal.exists() else 0
    growth = []

    def walk_again_and_again() -> None:
        while not stop.is_set():
            current[:] = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
            if current[0].wait() == 0:
                ended.append(1)

    def end_walks() -> None:
        growth.append((wal.stat().st_size if wal.exists() else 0) - wal_before)
        stop.set()
        if current and current[0].poll() is None:
            current[0].terminate()  # this benchmark's own child

    walker = threading.Thread(target=walk_again_and_again)
    walker.start()
    timer = threading.Timer(WINDOW_OPENS_AFTER + seconds / 2, end_walks)
    timer.start()
    try:
        rate, worst = _signhash_rate(target, seconds)
    finally:
        timer.cancel()
        if not stop.is_set():
            end_walks()
        walker.join()
    return Window(rate, worst, growth[0], len(ended))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit_verify")
    parser.add_argument("--records", type=int, default=100_000, help="the smaller log; the larger has 10 times more")
    parser.add_argument("--seconds", type=float, default=60.0, help="each SignHash window")
    args = parser.parse_args()
    from benchmarks.grpc_signing import served_holder

    with benchmark_service() as (state, service):
        server = None
        try:
            rows = []
            fill_log(service, args.records)
            verify_peak_bytes(service, batch=500)  # warm caches (compiled statements) before measuring
            small, intact_small = verify_peak_bytes(service)
            began = time.perf_counter()
            fill_log(service, args.records * 10)
            filled = time.perf_counter() - began
            large, intact_large = verify_peak_bytes(service)
            rows.append([f"verify: peak allocations, {args.records:,} records", f"{small / 2**20:,.1f} MiB", "1.00"])
            rows.append([f"verify: peak allocations, {args.records * 10:,} records", f"{large / 2**20:,.1f} MiB",
                         f"{large / small:.2f}"])
            print(f"filled {args.records * 9:,} records in {filled:.0f} s; both logs intact: "
                  f"{intact_small and intact_large}")

            server, target = served_holder(service, state)
            quiet, quiet_worst = _signhash_rate(target, args.seconds)
            env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
            env["SIGNSERVER_STATE_DIR"] = str(state)
            database_file = Path(service.config.database_url.split("///", 1)[1])
            wal = database_file.with_name(database_file.name + "-wal")
            windows = (("`audit verify --full` (batches)",
                        _during([str(Path(sys.executable).parent / "signserver"), "audit", "verify", "--full"], env,
                                target, args.seconds, wal)),
                       ("a walk in one read transaction (before)",
                        _during([sys.executable, "-c", ONE_TRANSACTION_WALK, str(database_file)], env, target,
                                args.seconds, wal)))
            rows.append(["SignHash c=8, no walk", f"{quiet:,.0f} sig/s, longest call {quiet_worst * 1000:,.0f} ms", "1.00"])
            for name, window in windows:
                rows.append([f"SignHash c=8, {name} for half the window",
                             f"{window.per_second:,.0f} sig/s, longest call {window.longest_call * 1000:,.0f} ms, "
                             f"WAL grew {window.wal_growth / 2**20:,.0f} MiB", f"{window.per_second / quiet:.2f}"])
            print(markdown_table(["figure", "value", "ratio"], rows))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
