"""SignHash on PostgreSQL beside SQLite, and through nginx in front of two nodes beside one node.

    python -m benchmarks.store_signing [--seconds N]

Stores: the same `signserver serve` set-up (one worker per CPU, RSA-2048 holder, mutual TLS,
tokens of ``load.TOKEN_DIGESTS`` digests authorised before the window) on a SQLite file and on a
PostgreSQL database of a throw-away cluster started as the tests start theirs
(tests/postgres_cluster.py: a Unix socket, synchronous_commit off, which loses no more on a crash
than SQLite's WAL with synchronous=NORMAL). Both servers run side by side on one token, and each
figure is measured on SQLite, PostgreSQL, PostgreSQL, SQLite, half the time each, for at least
STORE_SECONDS_AT_LEAST whatever ``--seconds`` says. Then each server
counts the statements and transactions its workers send for a SignHash
(benchmarks/statement_count.py), over calls made one after the other once the load is over, so
that the measured windows do not pay for the counting.

Balancer: scripts/cluster.py's nodes and nginx (two nodes of one worker per CPU on one PostgreSQL
database and one token), the same figures straight to node A and through nginx, in the same order.
Calls through nginx go to node A or B call by call, whatever the connection. On one machine the
nodes share its cores: the ratio shows what the hop through nginx (a second TLS connection, one
more process) costs, not what a second machine would add.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from benchmarks import load
from benchmarks.grpc_signing import PASSWORD, served_holder
from benchmarks.harness import ROOT, fresh_state_dir, markdown_table, service_on_token, token_environ
from benchmarks.load import LoadResult, Target
from benchmarks.statement_count import Counts, StatementCounter
from signserver.accounts.applications import certificate_fingerprint
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.secret import Secret
from signserver.service import SignService

CONCURRENCY = 8
BATCHES = (1, 10)
TARGETS = {1: 0.8, 10: 0.9}  # PostgreSQL / SQLite at least
COUNTED_CALLS = 20  # SignHash calls over which statements are counted
# Each store's figure takes at least this long, in two windows (SQLite, PostgreSQL, PostgreSQL,
# SQLite). PostgreSQL's background processes (its WAL writer; autovacuum, after the callers'
# set-up wrote up to 24,000 digests) land in whichever window runs then, SQLite's included: in
# windows of half a second its CPU per SignHash of 10 digests came out at 1,160 µs (median of 12),
# 750 µs in windows of 6 s, and SQLite's windows showed up to 700 µs per call of it with nothing
# sent to PostgreSQL. make bench's 2 s per figure gave windows of 1 s.
STORE_SECONDS_AT_LEAST = 8.0
WARM_UP_SECONDS = 0.5  # connections, pools and caches of every worker, before the first figure


def _figure(batch: int) -> str:
    return f"SignHash, {batch} digest{'s' if batch > 1 else ''}/call, concurrency {CONCURRENCY}"


@dataclass
class StoreSigning:
    """The figures of one run; a part that could not run leaves a note instead."""

    stores: list[tuple[int, LoadResult, LoadResult]] = field(default_factory=list)  # batch, SQLite, PostgreSQL
    database_cpu: dict[int, float] = field(default_factory=dict)  # batch: PostgreSQL's own CPU seconds per call
    statements: dict[tuple[str, int], Counts] = field(default_factory=dict)  # (store, batch): over COUNTED_CALLS
    balancer: list[tuple[int, LoadResult, LoadResult]] = field(default_factory=list)  # batch, node A, nginx
    notes: list[str] = field(default_factory=list)


# --- set-up --------------------------------------------------------------------------------------

def _counted_server(state: Path, token_state: Path, database_url: str | None):
    """`signserver serve` counting its statements, with its holder; (server, target, counter)."""
    service = service_on_token(state, token_state, database_url)
    try:
        service.prepare_database()
        counter = StatementCounter(state / "statements")
        environ = {**token_environ(token_state, database_url),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        server, target = served_holder(service, state, environ=environ, command=counter.command("serve"))
    finally:
        service.close()
    return server, target, counter


def _own_channel(target: Target, _share: int, _taken) -> grpc.Channel:
    """A connection of its own, as is: behind nginx, which node and worker answers changes per call."""
    return target.channel()


def _side_by_side(name: str, first: tuple, second: tuple, caller: load.Caller,
                  seconds: float, second_cpu=None) -> tuple[LoadResult, LoadResult, float]:
    """``first`` and ``second`` (each a figure's name ending, a target and its way to connect)
    measured alternately (load.alternated). The third value is how much ``second_cpu`` (CPU seconds
    of some processes so far) grew over the second's measured windows (0 without): not over its
    callers' set-up, whose Authorize calls write thousands of digests."""
    def measured(side: tuple, probe=None):
        suffix, target, connect = side
        return lambda half: load.run_load(f"{name}, {suffix}", target, caller, CONCURRENCY, half, connect=connect,
                                          window_probe=probe)
    first_result, second_result = load.alternated(measured(first), measured(second, second_cpu), seconds)
    return first_result, second_result, second_result.in_window or 0.0


def _cluster_cpu(postgres) -> float:
    """CPU seconds the PostgreSQL cluster's processes (the postmaster and its backends) have used.
    On this one machine they take their share of the cores the workers and clients use."""
    tick = os.sysconf("SC_CLK_TCK")
    main = int((postgres.directory / "data" / "postmaster.pid").read_text().split()[0])
    pids = [main, *map(int, Path(f"/proc/{main}/task/{main}/children").read_text().split())]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a backend that ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / tick


def warm_up(target: Target, connect=load.balanced_channel) -> None:
    load.run_load("warm-up", target, load.hash_signer(1), CONCURRENCY, WARM_UP_SECONDS, connect=connect)


def _count(target: Target, counter: StatementCounter, batch: int) -> Counts:
    """Statements and transactions over COUNTED_CALLS SignHash calls of ``batch`` digests, one
    after the other on one connection (the token is authorised before counting starts)."""
    with target.channel() as channel:
        call = load.hash_signer(batch)(channel, target, f"count-{batch}-{time.time_ns()}")
        for _ in range(3):  # not counted: a connection the pool opens now runs its own set-up queries
            call()
        before = counter.totals()
        with counter.counting():
            for _ in range(COUNTED_CALLS):
                call()
        return counter.totals() - before


# --- SQLite beside PostgreSQL ----------------------------------------------------------------------

def compare_stores(token_state: Path, folder: Path, postgres, seconds: float, result: StoreSigning) -> None:
    """Both servers up, the figures alternating between them (``seconds`` each, at least
    STORE_SECONDS_AT_LEAST), then the statement counts."""
    seconds = max(seconds, STORE_SECONDS_AT_LEAST)
    with ExitStack() as stack:
        served = {}
        for store, url in (("SQLite", None), ("PostgreSQL", postgres.url_for("store-signing"))):
            server, target, counter = _counted_server(folder / store.lower(), token_state, url)
            stack.callback(server.stop)
            served[store] = target, counter
        for target, _counter in served.values():
            warm_up(target)
        for batch in BATCHES:
            sqlite, postgresql, database_cpu = _side_by_side(_figure(batch), *((store, served[store][0], load.balanced_channel)
                                                                 for store in ("SQLite", "PostgreSQL")),
                                               load.hash_signer(batch), seconds,
                                               second_cpu=lambda: _cluster_cpu(postgres))
            result.stores.append((batch, sqlite, postgresql))
            # Per call, not per signature, over the measured windows.
            result.database_cpu[batch] = database_cpu / max(1, postgresql.operations // batch)
        for store, (target, counter) in served.items():
            for batch in BATCHES:
                result.statements[store, batch] = _count(target, counter, batch)


# --- nginx in front of two nodes beside one node -----------------------------------------------------

def _cluster_script():
    """scripts/cluster.py, loaded as a module of its own; its nodes allow tokens of
    load.TOKEN_DIGESTS digests, as ServerProcess's do."""
    spec = importlib.util.spec_from_file_location("signserver_cluster_for_benchmarks", ROOT / "scripts" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class BenchmarkNode(module.Node):
        def write_config(self, balancer_sha256: str | None) -> None:
            super().write_config(balancer_sha256)
            with self.config_file.open("a") as config:
                config.write(f"[authorization]\nmax_signatures = {load.TOKEN_DIGESTS}\n")

    module.Node = BenchmarkNode  # in this copy of the script only
    return module


def _cluster_holder(service: SignService) -> tuple[tuple[bytes, bytes, bytes], str, str]:
    """An RSA-2048 holder with a certificate, and an application (no OTP) with a client
    certificate from the cluster's CA: (PEM credentials, account, credential id)."""
    created = service.accounts.create(
        Enrolment("bench-holder", "Bench Holder", ("bench@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Bench Lda", key_algorithm=KeyAlgorithm.RSA_2048),
        Secret(PASSWORD), operator="benchmark")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "benchmark")
    service.applications.create("bench-app", otp_required=False)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate("client-asp", "bench-app", key.public_key(), "benchmark")
    service.applications.set_client_certificate("bench-app", certificate_fingerprint(issued.certificate))
    pem = (b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()),
           key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
           issued.certificate.public_bytes(Encoding.PEM))
    return pem, created.account.username, created.credential.id


def compare_balancer(token_state: Path, folder: Path, postgres, seconds: float, result: StoreSigning) -> None:
    """Node A reached directly beside nginx in front of nodes A and B, alternating."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").is_file():
        result.notes.append("nginx is not installed: the balancer figures were left out")
        return
    url = postgres.url_for("balancer")
    cluster = _cluster_script().Cluster(folder / "cluster", workers=os.cpu_count() or 1, database_url=url,
                                        hsm_state=token_state)
    try:
        cluster.start()
    except SystemExit as exc:  # a tool is missing
        result.notes.append(f"the cluster did not start ({exc}): the balancer figures were left out")
        return
    try:
        service = service_on_token(folder / "cluster" / "benchmark", token_state, url)
        try:
            pem, account, credential = _cluster_holder(service)
        finally:
            service.close()
        node = cluster.nodes[0]
        direct = Target(f"localhost:{node.port}", pem, account, PASSWORD, credential, node.workers)
        balanced = Target(f"localhost:{cluster.balancer.port}", pem, account, PASSWORD, credential)
        warm_up(direct)
        warm_up(balanced, connect=_own_channel)
        for batch in BATCHES:
            direct_result, balanced_result, _ = _side_by_side(
                _figure(batch), ("node A directly", direct, load.balanced_channel),
                ("nginx and two nodes", balanced, _own_channel), load.hash_signer(batch), seconds)
            result.balancer.append((batch, direct_result, balanced_result))
    finally:
        cluster.stop()


# --- the run -----------------------------------------------------------------------------------------

def run(token_state: Path, seconds: float) -> StoreSigning:
    """Every figure of this module, on ``token_state``'s token (a state directory made by
    harness.fresh_state_dir, whose token this process already uses); its own databases, servers
    and PostgreSQL cluster are made in a folder inside it and stopped before returning.

    Raises: RuntimeError: a server, a node or nginx did not start (with its log).
    """
    result = StoreSigning()
    try:
        from tests.postgres_cluster import PostgresCluster
    except ImportError as exc:  # run outside the repository: the cluster's start lives in tests/
        result.notes.append(f"tests/postgres_cluster.py cannot be imported ({exc}): no PostgreSQL figures")
        return result
    folder = token_state / "store-signing"
    try:
        postgres = PostgresCluster().start()
    except FileNotFoundError as exc:
        result.notes.append(f"{exc}: no PostgreSQL figures")
        return result
    try:
        compare_stores(token_state, folder, postgres, seconds, result)
        compare_balancer(token_state, folder, postgres, seconds, result)
    finally:
        postgres.stop()
    return result


def _rate(result: LoadResult) -> str:
    return f"{result.per_second:,.0f} sig/s"


def _per_call(counts: Counts) -> str:
    statements = f"{counts.statements / COUNTED_CALLS:.1f}"
    if not counts.transactions:  # PostgreSQL's spend_activation_token: each statement commits on its own
        return f"{statements}, each its own transaction"
    return f"{statements} in {counts.transactions / COUNTED_CALLS:.1f} transactions"


def tables(result: StoreSigning) -> str:
    """The Markdown tables (and notes) of a run."""
    parts = []
    if result.stores:
        rows = []
        for batch, sqlite, postgresql in result.stores:
            rows.append([_figure(batch), _rate(sqlite), _rate(postgresql),
                         f"{postgresql.per_second / sqlite.per_second:.2f}", f"{TARGETS[batch]:.1f}"])
        for batch in BATCHES:
            if ("SQLite", batch) in result.statements:
                rows.append([f"statements per SignHash of {batch}", _per_call(result.statements["SQLite", batch]),
                             _per_call(result.statements["PostgreSQL", batch]), "", ""])
        for batch in BATCHES:
            if batch in result.database_cpu:
                rows.append([f"PostgreSQL's own CPU per SignHash of {batch}", "(in the workers)",
                             f"{result.database_cpu[batch] * 1e6:,.0f} us", "", ""])
        parts.append(markdown_table(["store figure", "SQLite", "PostgreSQL", "PostgreSQL / SQLite", "target"], rows))
    if result.balancer:
        rows = [[_figure(batch), _rate(direct), _rate(balanced), f"{balanced.per_second / direct.per_second:.2f}",
                 " / ".join(f"{r.percentile(99):,.1f}" for r in (direct, balanced))]
                for batch, direct, balanced in result.balancer]
        parts.append(markdown_table(["balancer figure", "node A directly", "nginx, nodes A and B",
                                     "nginx / node A", "p99 ms (A / nginx)"], rows))
    parts += [f"note: {note}" for note in result.notes]
    return "\n\n".join(parts)


def figures(result: StoreSigning) -> list[dict]:
    """The figures of a run for benchmarks/results' JSON."""
    found = []
    for batch, sqlite, postgresql in result.stores:
        found.append({"name": f"{_figure(batch)}, PostgreSQL beside SQLite",
                      "sqlite_per_second": sqlite.per_second, "postgresql_per_second": postgresql.per_second,
                      "ratio_postgresql_to_sqlite": postgresql.per_second / sqlite.per_second,
                      "target_ratio": TARGETS[batch],
                      "postgresql_server_cpu_us_per_call": result.database_cpu.get(batch, 0.0) * 1e6,
                      **{f"{store.lower()}_{kind}_per_call":
                         getattr(result.statements[store, batch], kind) / COUNTED_CALLS
                         for store in ("SQLite", "PostgreSQL") if (store, batch) in result.statements
                         for kind in ("statements", "transactions")}})
    for batch, direct, balanced in result.balancer:
        found.append({"name": f"{_figure(batch)}, nginx and two nodes beside node A",
                      "node_per_second": direct.per_second, "balancer_per_second": balanced.per_second,
                      "ratio_balancer_to_node": balanced.per_second / direct.per_second,
                      "node_p99_ms": direct.percentile(99), "balancer_p99_ms": balanced.percentile(99)})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_signing")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args()
    began = time.monotonic()
    token_state = fresh_state_dir()
    print(f"SignHash on PostgreSQL beside SQLite, and through nginx: {os.cpu_count()} CPUs, "
          f"{args.seconds:g} s per figure\n", flush=True)
    try:
        print(tables(run(token_state, args.seconds)))
    finally:
        shutil.rmtree(token_state, ignore_errors=True)
    print(f"\nin {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
