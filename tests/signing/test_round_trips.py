"""Round trips to PostgreSQL on the way to a signature, read from libpq's own trace of the wire
(PQtrace). On a server every statement waits for its answer, so their number is what a signature
costs the database beyond the work itself: a property to keep, not a timing."""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import replace
from pathlib import Path

import pytest
from psycopg import pq
from sqlalchemy import create_engine, event, text, update
from sqlalchemy.pool import NullPool

from signserver.accounts import otp
from signserver.audit.log import AuditLog, record_hash
from signserver.errors import CredentialUnusable, StoreUnavailable
from signserver.hsm.algorithms import HashAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.store.schema import credentials
from tests.conftest import ON_POSTGRESQL, PASSWORD, enrol, service_with

pytestmark = pytest.mark.skipif(not ON_POSTGRESQL, reason="round trips are PostgreSQL's (SIGNSERVER_TEST_STORE)")

HOUR_MS = 3_600_000
# psycopg prepares a statement on the server at its 5th execution (prepare_threshold), which
# costs a round trip of its own then; the signatures before the one measured get past that.
WARM_UP = 6
BATCH = 10


@contextlib.contextmanager
def wire_trace(engine, path: Path):
    """Trace every connection of ``engine`` from the moment it leaves the pool (before any other
    checkout listener, so that a liveness ping is seen), into ``path``."""
    files = []

    def trace(dbapi_connection, _record, _proxy):
        file = open(path, "ab")
        files.append(file)
        dbapi_connection.pgconn.trace(file.fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def untrace(dbapi_connection, _record):
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()

    event.listen(engine, "checkout", trace, insert=True)
    event.listen(engine, "checkin", untrace)
    try:
        yield
    finally:
        event.remove(engine, "checkout", trace)
        event.remove(engine, "checkin", untrace)
        for file in files:
            file.close()


def waits(path: Path) -> list[str]:
    """The messages after which the client waits for the server: a simple Query, or the Sync that
    ends an extended-protocol exchange (Parse/Bind/Execute); with the statement of each."""
    found, pending = [], []
    for line in path.read_text(errors="replace").splitlines():
        direction, _length, kind, *rest = line.split("\t") + ["", ""]
        if direction != "F":
            continue
        if kind in ("Parse", "Query") or (kind == "Bind" and not pending):
            pending.append(" ".join(f"{kind} {' '.join(rest)}".split())[:90])
        if kind in ("Query", "Sync"):
            found.append(pending[-1] if pending else kind)
            pending = []
    return found


def executed(path: Path) -> int:
    """How many statements the server ran: each simple Query, and each Execute of the extended
    protocol (psycopg pipelines an ``executemany``: one round trip, a statement per row)."""
    return sum(1 for line in path.read_text(errors="replace").splitlines()
               if line.split("\t")[:1] == ["F"] and line.split("\t")[2:3] in (["Query"], ["Execute"]))


def service_pinging_after(config, tmp_path, clock, idle_ms: int, **pool):
    settings = replace(config.database, ping_after_idle_ms=idle_ms, **pool)
    return service_with(replace(config, database=settings), tmp_path / "db", clock)


def terminate(url: str, backend: int) -> None:
    """End a server process from a connection of its own, as a restart or fail-over would."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar_one()
    engine.dispose()


def digest(text_: str) -> bytes:
    return hashlib.sha256(text_.encode()).digest()


def algorithm_for(holder) -> SignatureAlgorithm:
    return SignatureAlgorithm.ECDSA_SHA256 if holder.credential.key_algorithm.value.startswith("ec") \
        else SignatureAlgorithm.RSA_PKCS1V15_SHA256


@pytest.fixture
def signing(config, tmp_path, clock):
    """The service, a way to sign digests with one token, and digests it has not signed yet. The
    first signatures are made: they open the package in this process, and psycopg prepares the
    statements at their 5th execution."""
    service = service_pinging_after(config, tmp_path, clock, HOUR_MS)
    holder, seed = enrol(service)
    app, _ = service.applications.create("round-trips")
    digests = [digest(f"page {i}") for i in range(WARM_UP + 1 + BATCH)]
    token = service.signer.authorize(app, holder.account.username, Secret(PASSWORD), otp.code_at(seed, clock.now()),
                                     holder.credential.id, HashAlgorithm.SHA256, digests)
    algorithm = algorithm_for(holder)

    def sign(wanted: list[bytes]) -> list[bytes]:
        return service.signer.sign_hashes(app, holder.credential.id, Secret(token.token), algorithm, wanted)

    try:
        for warm_up in digests[:WARM_UP]:
            sign([warm_up])
        yield service, sign, digests[WARM_UP:]
    finally:
        service.close()


def test_a_single_digest_signhash_takes_one_round_trip(signing, tmp_path):
    service, sign, unsigned = signing
    trace = tmp_path / "wire.trace"
    with wire_trace(service.database.engine, trace):
        sign(unsigned[:1])
    seen = waits(trace)
    # One call of the database's spend_activation_token, which checks that the credential is as
    # this worker found it at the last signature, takes the digest, counts the token down and
    # appends the audit record, committed on its own: no BEGIN or COMMIT, and no ping (the
    # connection answered a moment ago).
    assert len(seen) == 1, "\n".join(seen)
    assert not any("BEGIN" in s or "COMMIT" in s for s in seen), seen


def test_the_signhash_after_an_authorize_on_the_same_worker_takes_one_round_trip(config, tmp_path, clock):
    service = service_pinging_after(config, tmp_path, clock, HOUR_MS)
    try:
        holder, seed = enrol(service)
        app, _ = service.applications.create("after-authorize", otp_required=False)
        wanted = [digest("the only page")]
        token = service.signer.authorize(app, holder.account.username, Secret(PASSWORD), None, holder.credential.id,
                                         HashAlgorithm.SHA256, wanted)
        trace = tmp_path / "wire.trace"
        with wire_trace(service.database.engine, trace):
            service.signer.sign_hashes(app, holder.credential.id, Secret(token.token), algorithm_for(holder), wanted)
        # Authorize found the credential usable: the SignHash's one call checks it is still so.
        assert len(waits(trace)) == 1, "\n".join(waits(trace))
    finally:
        service.close()


def test_a_credential_changed_since_is_read_again(signing, tmp_path):
    service, sign, unsigned = signing
    with service.database.transaction() as conn:  # what this worker knows of it is now stale
        conn.execute(update(credentials).values(status="disabled"))
    trace = tmp_path / "wire.trace"
    with wire_trace(service.database.engine, trace):
        with pytest.raises(CredentialUnusable, match="disabled"):
            sign(unsigned[:1])
    # The call refused (SSA03, nothing changed), then the credential read: refused from that.
    assert len(waits(trace)) == 2, "\n".join(waits(trace))


def test_a_batch_takes_as_many_round_trips_as_a_single_digest(signing, tmp_path):
    service, sign, unsigned = signing
    trace = tmp_path / "wire.trace"
    with wire_trace(service.database.engine, trace):
        signatures = sign(unsigned[1:])
    assert len(signatures) == BATCH
    # Whatever the number of digests: the records are hashed and appended inside the call.
    assert executed(trace) == 1, "\n".join(waits(trace))
    with service.database.read() as conn:
        records = AuditLog.records(conn)
    assert sum(r.event == "signature" for r in records) == WARM_UP + BATCH
    # Hashed by the database as record_hash hashes, each on the one before.
    for previous, record in zip(records, records[1:]):
        assert record.seq == previous.seq + 1 and record.prev_hash == previous.hash
        assert record.hash == record_hash(record.prev_hash, record.seq, record.at, record.event, record.actor,
                                          record.subject, record.detail)


def test_a_batch_sends_its_digests_and_records_as_binary_arrays(signing, tmp_path):
    service, sign, unsigned = signing
    trace = tmp_path / "wire.trace"
    with wire_trace(service.database.engine, trace):
        sign(unsigned[1:])
    binds = [line for line in trace.read_text(errors="replace").splitlines() if "\tBind\t" in line]
    assert len(binds) == 1 and all(d.hex() in binds[0] for d in unsigned[1:])
    # A text-format array is a literal, "{...}", each of its texts quoted and escaped by the
    # driver in Python (store/arrays.py): no value of the call is one.
    assert not re.search(r" \d+ '\{", binds[0]), binds[0][:300]


def test_an_idle_connection_is_pinged_and_a_lost_one_replaced_before_the_transaction(config, tmp_path, clock):
    service = service_pinging_after(config, tmp_path, clock, 0)
    try:
        engine = service.database.engine
        with service.database.read() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        terminate(service.database.url, backend)
        trace = tmp_path / "wire.trace"
        with wire_trace(engine, trace):
            with service.database.read() as conn:  # drew the lost connection: replaced, not failed
                assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
        # The ping found the connection lost; the new connection was pinged too (a window of 0).
        assert waits(trace)[:3] == ['Query ";"', 'Query ";"', 'Query "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"'], \
            waits(trace)
    finally:
        service.close()


def test_a_connection_used_within_the_window_is_not_pinged(config, tmp_path, clock):
    service = service_pinging_after(config, tmp_path, clock, HOUR_MS, pool_size=1, max_overflow=0)
    try:
        with service.database.read() as conn:
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        trace = tmp_path / "wire.trace"
        with wire_trace(service.database.engine, trace):
            with service.database.read() as conn:
                conn.execute(text("SELECT 1"))
        assert "BEGIN" in waits(trace)[0], waits(trace)
        # Which is what the window gives up: a connection lost within it fails the transaction that
        # drew it (nothing of it is written), and the pool is renewed for the next.
        terminate(service.database.url, backend)
        with pytest.raises(StoreUnavailable):
            with service.database.read() as conn:
                conn.execute(text("SELECT 1"))
        with service.database.read() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        service.close()
