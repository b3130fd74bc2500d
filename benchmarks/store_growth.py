"""Database bytes per signature, on SQLite and PostgreSQL, before and after `signserver store prune`.

    python -m benchmarks.store_growth [--signatures N]

The same `signserver serve` set-up on each store (one worker per CPU, an RSA-2048 holder, mutual
TLS, the PostgreSQL database in a throw-away cluster as in benchmarks/store_signing.py) signs N
signatures, each one as an application signs a document: Authorize for one digest, then one
single-digest SignHash spending that token. Activation tokens live 10 s here
(``[authorization] token_lifetime_seconds``, its least), so that `signserver store prune` (the
command, with ``[retention] activation_grace_seconds = 0``) can remove them moments after the
run; the servers keep the default grace of a day, so their background thread removes nothing
during it.

Figures per signature, from the store's own sizes, against the database compacted after a warm-up
(a few signatures), and measured with the server stopped (so nothing else writes):

- grown: what the database grew by over the N signatures (SQLite: its pages, ``page_count``;
  PostgreSQL: every table with its indexes and TOAST, ``pg_total_relation_size``);
- after prune, as the files stand: neither store gives space back by itself (SQLite keeps freed
  pages in its free list, PostgreSQL's VACUUM marks them for reuse), so this is the space a store
  keeps, and later signatures fill first; SQLite's pages in use besides;
- after prune and compaction (SQLite ``VACUUM``, PostgreSQL ``VACUUM FULL``): what the rows left
  behind take, the audit records (kept until exported and pruned: ``signserver audit prune``).

Rows per signature are counted in the tables a signature writes to (after the prune, the warm-up's
tokens are gone too: below zero by as many).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

from benchmarks import load
from benchmarks.grpc_signing import served_holder
from benchmarks.harness import fresh_state_dir, markdown_table, service_on_token, token_environ
from signserver.config import env_name
from signserver.store.schema import activation_token_digests, activation_tokens, audit_log, audit_seals
from signserver.v1 import signing_pb2, signing_pb2_grpc

SIGNATURES = 1000
THREADS = 8
TOKEN_LIFETIME_SECONDS = 10  # the least the configuration allows
COUNTED_TABLES = (activation_tokens, activation_token_digests, audit_log, audit_seals)


@dataclass(frozen=True)
class Size:
    """A store's size at one moment: ``total`` bytes, ``in_use`` of them (SQLite: not in the free
    list; PostgreSQL: the same as total), and the rows of COUNTED_TABLES."""

    total: int
    in_use: int
    rows: dict[str, int]


@dataclass
class Growth:
    """One store's run: its size before, after the signatures, after the prune, after compaction."""

    store: str
    signatures: int
    before: Size | None = None
    signed: Size | None = None
    pruned: Size | None = None
    compacted: Size | None = None
    pruned_rows: dict = field(default_factory=dict)  # what `signserver store prune --json` said

    def per_signature(self, size: Size, in_use: bool = False) -> float:
        value = (size.in_use if in_use else size.total) - (self.before.in_use if in_use else self.before.total)
        return value / self.signatures

    def rows_per_signature(self, size: Size) -> dict[str, float]:
        return {name: (size.rows[name] - self.before.rows[name]) / self.signatures for name in size.rows}


def measure(url: str) -> Size:
    """The size of the database at ``url`` now."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = {table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                    for table in COUNTED_TABLES}
            if engine.dialect.name == "sqlite":
                # The database as this connection sees it, the write-ahead log's pages included.
                page_size, pages, free = (conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                                          for name in ("page_size", "page_count", "freelist_count"))
                return Size(pages * page_size, (pages - free) * page_size, rows)
            total = conn.execute(text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                "AND c.relkind = 'r'")).scalar_one()
            return Size(int(total), int(total), rows)
    finally:
        engine.dispose()


def compact(url: str) -> None:
    """SQLite's VACUUM, or PostgreSQL's VACUUM FULL: every table rewritten to what its rows take."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM FULL" if engine.dialect.name == "postgresql" else "VACUUM")
    finally:
        engine.dispose()


def sign(target: load.Target, signatures: int) -> float:
    """``signatures`` signatures, each an Authorize of one digest and the SignHash spending it, on
    THREADS connections; returns time.monotonic() after the last token was issued."""
    def run(thread: int) -> None:
        with target.channel() as channel:
            stub = signing_pb2_grpc.SigningServiceStub(channel)
            for index in range(thread, signatures, THREADS):
                digest = os.urandom(32)
                token = stub.Authorize(signing_pb2.AuthorizeRequest(
                    account=target.account, password=target.password, credential_id=target.credential,
                    hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=120).activation_token
                stub.SignHash(signing_pb2.SignHashRequest(
                    credential_id=target.credential, activation_token=token,
                    signature_algorithm="rsa-pkcs1v15-sha256", digests=[digest]), timeout=60)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(THREADS)))
    return time.monotonic()


def prune(state: Path, token_state: Path, url: str | None) -> dict:
    """`signserver store prune --json` on that store, with activation tokens kept no longer than
    they live. Raises: RuntimeError: the command failed (with what it said)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
    env.update(token_environ(token_state, url), **{env_name("state_dir"): str(state),
                                                  env_name("retention.activation_grace_seconds"): "0"})
    done = subprocess.run([str(Path(sys.executable).parent / "signserver"), "store", "prune", "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"signserver store prune failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def run(token_state: Path, signatures: int = SIGNATURES) -> list[Growth]:
    """Both stores, on ``token_state``'s token (a state directory made by harness.fresh_state_dir,
    whose token this process uses); their databases, servers and PostgreSQL cluster are made in a
    folder inside it and stopped before returning. Without PostgreSQL, SQLite's figures alone.

    Raises: RuntimeError: a server or the prune failed (with its output).
    """
    folder = token_state / "store-growth"
    stores: list[tuple[str, str | None]] = [("SQLite", None)]
    with ExitStack() as stack:
        try:
            from tests.postgres_cluster import PostgresCluster

            postgres = PostgresCluster().start()
            stack.callback(postgres.stop)
            stores.append(("PostgreSQL", postgres.url_for("store-growth")))
        except (ImportError, FileNotFoundError) as exc:
            print(f"store growth: no PostgreSQL figures ({exc})", file=sys.stderr)
        growths, finished = [], []
        for store, url in stores:
            state = folder / store.lower()
            service = service_on_token(state, token_state, url)
            try:
                service.prepare_database()
                environ = {**token_environ(token_state, url),
                           env_name("authorization.token_lifetime_seconds"): str(TOKEN_LIFETIME_SECONDS)}
                server, target = served_holder(service, state, environ=environ)
                url = url or service.config.database_url
            finally:
                service.close()
            try:
                sign(target, THREADS)  # warm-up: each worker's pool, caches and first rows
                # Compacted, so that the figures after compaction compare like with like (the
                # server is idle meanwhile).
                compact(url)
                growth = Growth(store, signatures, before=measure(url))
                finished.append(sign(target, signatures))
            finally:
                server.stop()
            growth.signed = measure(url)
            growths.append((growth, state, url))
        # The tokens expire TOKEN_LIFETIME_SECONDS after they were issued: wait once for both stores.
        time.sleep(max(0.0, max(finished, default=0) + TOKEN_LIFETIME_SECONDS + 1 - time.monotonic()))
        for growth, state, url in growths:
            growth.pruned_rows = prune(state, token_state, None if growth.store == "SQLite" else url)
            growth.pruned = measure(url)
            compact(url)
            growth.compacted = measure(url)
    return [growth for growth, _state, _url in growths]


def tables(growths: list[Growth]) -> str:
    """The Markdown tables of a run: bytes per signature, then rows per signature."""
    if not growths:
        return "note: no store measured"
    rows = []
    for g in growths:
        rows.append([g.store, f"{g.per_signature(g.signed):,.0f}", f"{g.per_signature(g.pruned):,.0f}",
                     f"{g.per_signature(g.pruned, in_use=True):,.0f}", f"{g.per_signature(g.compacted):,.0f}"])
    bytes_table = markdown_table(["store", "bytes/signature grown", "after prune, as the files stand",
                                  "after prune, in use", "after prune and compaction"], rows)
    names = [table.name for table in COUNTED_TABLES]
    row_rows = []
    for g in growths:
        for moment, size in (("signed", g.signed), ("pruned", g.pruned)):
            per = g.rows_per_signature(size)
            row_rows.append([g.store, moment, *(f"{per[name]:.2f}" for name in names)])
    return bytes_table + "\n\n" + markdown_table(["store", "moment", *names], row_rows)


def figures(growths: list[Growth]) -> list[dict]:
    """The figures of a run for benchmarks/results' JSON."""
    return [{"name": f"database bytes per signature, {g.store}", "signatures": g.signatures,
             "grown_bytes_per_signature": g.per_signature(g.signed),
             "after_prune_bytes_per_signature": g.per_signature(g.pruned),
             "after_prune_in_use_bytes_per_signature": g.per_signature(g.pruned, in_use=True),
             "after_compaction_bytes_per_signature": g.per_signature(g.compacted),
             "rows_per_signature_signed": g.rows_per_signature(g.signed),
             "rows_per_signature_pruned": g.rows_per_signature(g.pruned),
             "pruned": g.pruned_rows} for g in growths]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_growth")
    parser.add_argument("--signatures", type=int, default=SIGNATURES, help="signatures per store")
    args = parser.parse_args()
    began = time.monotonic()
    token_state = fresh_state_dir()
    print(f"database bytes per signature, {args.signatures:,} signatures per store\n", flush=True)
    try:
        print(tables(run(token_state, args.signatures)))
    finally:
        shutil.rmtree(token_state, ignore_errors=True)
    print(f"\nin {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
