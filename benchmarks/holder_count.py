"""What the number of holders costs: enrolment, a worker's start and memory, Authorize, the
first SignHash, and the token's objects, with a hundred holders and with many, in one run.

Holders' keys are signing data packages (rows in the database, not objects on the token), so
none of these figures should grow with the count. What is measured is the cost of a count, not
of key generation or of argon2:

- Enrolment is timed through AccountManager.create with P-256 keys and a cheap argon2id
  (CHEAP_ARGON2: 1 MiB, one pass), so that what grows with the count is not hidden under two
  password derivations. It is timed for the first ENROLLED holders, then again for ENROLLED more
  once the database holds ENROL_MANY holders.
- The database is filled by copying holders (:func:`copy_holders`): the rows of accounts,
  account_emails, credentials and signing_packages of real enrolled holders are inserted again in
  bulk under new names and ids. A copied package is sealed to its template's name and key id, so
  it never opens: copies are there to be counted, looked past and loaded, not to sign.
- Both counts are measured side by side: a copy of the database taken while it held a handful of
  holders serves the small count, and enrolments, server starts and calls alternate between the
  two databases (one token), so that the load of a shared machine weighs on both alike.
- In each of TRIALS trials, `signserver serve --workers 1` is started on each database, one after
  the other (the first warmed up before the second starts; which goes first alternates): time
  from spawn to a SERVING health check, the worker's resident memory after warm-up, then with
  both running, Authorize (no OTP, a real holder enrolled with the server's argon2 parameters)
  and the first SignHash on each fresh activation token (which unwraps the package in the
  worker), alternately on each server. The token's objects are counted before the first holder
  enrolment and after the last.
- Authorize's cost is set beside its parts measured in this process: one argon2id evaluation
  with the server's parameters (SecretHasher.derive) and one package unwrap with a signature
  (PackageKeys.sign with a key to open, for a token never seen here), and beside Authorize
  without gRPC (HashSigner.authorize in this process).

Run alone: ``python -m benchmarks.holder_count``; ``make bench`` runs it last, on its state.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, insert, make_url, select

from signserver.accounts.applications import certificate_fingerprint
from signserver.accounts.manager import Enrolment
from signserver.accounts.model import AccountKind, Application
from signserver.accounts.passwords import SecretHasher
from signserver.ca.authority import CertificateRequest
from signserver.config import Config, load_config
from signserver.errors import NotFound
from signserver.hsm.algorithms import HashAlgorithm, KeyAlgorithm, SignatureAlgorithm
from signserver.secret import Secret
from signserver.service import SignService
from signserver.signing.activation import token_hash
from signserver.store.database import Database
from signserver.store.schema import account_emails, accounts, credentials, signing_packages
from signserver.v1 import signing_pb2, signing_pb2_grpc

PASSWORD = "Bench-pass-2026"
APPLICATION = "holder-count-app"
ENROLLED = 100  # enrolments timed at each count
ENROL_CHUNK = 10  # enrolments in a row at one count before switching to the other
ENROL_WARMUP = 5  # enrolled untimed first: a process's first enrolments set up caches
ENROL_WARMUP_FEW = 2  # the same for the second enrolling service (the small database's)
ENROL_MANY = 10_000  # holders in the large database once its ENROLLED timed enrolments are done
MANY = 100_000  # holders in the large database for the servers
TRIALS = 4  # server starts at each count; even, as which starts first alternates
ROUNDS = 8  # Authorize + first SignHash pairs per server and trial
WARMUP = 3  # untimed pairs per server and trial, before the worker's memory is read
ARGON2_TRIES = 15
UNWRAP_TRIES = 30
COPY_CHUNK = 5_000
# Enrolment's argon2id, cheap on purpose (see the module's docstring); the servers keep the defaults.
CHEAP_ARGON2 = {"SIGNSERVER_ACCOUNTS_ARGON2_MEMORY_KIB": "1024", "SIGNSERVER_ACCOUNTS_ARGON2_TIME_COST": "1"}


@dataclass
class ServerFigures:
    """`signserver serve --workers 1` started TRIALS times on a database of ``holders`` holders."""

    holders: int
    start_seconds: list[float]  # spawn to the first SERVING health answer, per start
    worker_rss_mb: list[float]  # after WARMUP Authorize + SignHash pairs, per start
    authorize_ms: list[float]
    first_sign_ms: list[float]  # SignHash of one digest on a token just issued
    token_objects: int  # objects on the token (token objects only) when the database had ``holders``


@dataclass
class HolderCountFigures:
    enrol_few: tuple[int, list[float]]  # (holders after the timed enrolments, ms per enrolment)
    enrol_many: tuple[int, list[float]]
    few: ServerFigures
    many: ServerFigures
    argon2_ms: list[float]  # one SecretHasher.derive with the server's parameters
    unwrap_ms: list[float]  # PackageKeys.sign of one digest, opening the package first
    authorize_in_process_ms: list[float]  # HashSigner.authorize, beneath gRPC
    argon2_parameters: str


def run(service: SignService, state: Path) -> HolderCountFigures:
    """Measure every figure of the module's docstring on ``service``'s state directory and token
    (no server may be running on them). Adds about MANY holders to ``service``'s database (an
    SQLite file) and leaves a copy of it, at a hundred holders, beside it.

    Raises: ValueError: the database is not SQLite. SignServerError, RuntimeError (a server did
        not start).
    """
    service.prepare_database()
    service.packages.ensure_master()
    if not service.ca.status().ready:
        service.ca.initialise("benchmark")
    holder = _authorize_holder(service)
    application, credentials_pem = _client_credentials(service)
    if not service.config.tls.cert_file.exists():
        # A first start issues the server's TLS certificate: not a cost of the holders.
        _OneWorker(state, credentials_pem, service.config.database_url, "first-start").stop()

    pin = service.config.hsm.user_pin(environ={})
    many_url = service.config.database_url
    cheap_many = SignService.from_config(_cheap_config(service.config, many_url), user_pin=pin)
    try:
        _enrol(cheap_many, "warmup", range(ENROL_WARMUP))
        objects_few = _token_objects(service)
        few_url = snapshot_sqlite(many_url, state / "holder-count-few.db")
        cheap_few = SignService.from_config(_cheap_config(service.config, few_url), user_pin=pin)
        try:
            _enrol(cheap_few, "warmup-few", range(ENROL_WARMUP_FEW))
            templates = _enrol(cheap_many, "template", range(ENROLLED))[0]
            copy_holders(service.database, templates, ENROL_MANY - ENROLLED - holder_count(service.database), "copy-a")
            enrol_few, enrol_many = [], []
            for first in range(0, ENROLLED, ENROL_CHUNK):
                enrol_few += _enrol(cheap_few, "enrol", range(first, first + ENROL_CHUNK))[1]
                enrol_many += _enrol(cheap_many, "enrol", range(first, first + ENROL_CHUNK))[1]
            enrolled = holder_count(cheap_few.database), holder_count(cheap_many.database)
        finally:
            cheap_few.close()
    finally:
        cheap_many.close()
    copy_holders(service.database, templates, MANY - holder_count(service.database), "copy-b")
    objects_many = _token_objects(service)

    few_runs, many_runs = [], []
    for trial in range(TRIALS):
        databases = [("few", few_url), ("many", many_url)]
        measured = _measure_trial(state, holder, credentials_pem, databases[::-1] if trial % 2 else databases, trial)
        few_runs.append(measured["few"])
        many_runs.append(measured["many"])
    few = _gathered(few_runs, _count_at(few_url), objects_few)
    many = _gathered(many_runs, holder_count(service.database), objects_many)
    argon2_ms, parameters = _argon2_evaluation(service.config)
    in_process_ms = _authorize_in_process(service, application, holder)
    unwrap_ms = _package_unwrap(service, holder, many_runs[-1].spare_token)
    return HolderCountFigures((enrolled[0], enrol_few), (enrolled[1], enrol_many), few, many, argon2_ms, unwrap_ms,
                              in_process_ms, parameters)


def snapshot_sqlite(database_url: str, path: Path) -> str:
    """A consistent copy of an SQLite database at ``path``; returns its URL.

    Raises: ValueError: the database is not SQLite.
    """
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        raise ValueError("the holder-count benchmark copies its database: it needs SQLite")
    path.touch(mode=0o600)  # the database holds secrets (sealed): others may not read it
    source, target = sqlite3.connect(url.database), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return f"sqlite:///{path}"


def _count_at(database_url: str) -> int:
    database = Database(database_url)
    try:
        return holder_count(database)
    finally:
        database.dispose()


def holder_count(database: Database) -> int:
    with database.read() as conn:
        return conn.execute(select(func.count()).select_from(accounts)).scalar()


def copy_holders(database: Database, templates: list[str], count: int, prefix: str) -> None:
    """Add ``count`` holders named ``prefix-NNNNNN``, each a copy of one of ``templates`` (in
    turn): its account, e-mail addresses, credentials and signing data packages, under a new
    account id, credential id and package key id, inserted in chunks of COPY_CHUNK. Numbers start
    at 0 on every call: give each call a prefix of its own.

    Raises: NotFound: a template is not an account. sqlalchemy.exc.IntegrityError: a name is taken.
    """
    if count <= 0:
        return
    with database.read() as conn:
        template_rows = conn.execute(select(accounts).where(accounts.c.username.in_(templates))).mappings().all()
        if len(template_rows) != len(templates):
            raise NotFound("a template holder to copy does not exist")
        ids = [row["id"] for row in template_rows]
        emails_of = _group(conn.execute(select(account_emails).where(account_emails.c.account_id.in_(ids))),
                           "account_id")
        credentials_of = _group(conn.execute(select(credentials).where(credentials.c.account_id.in_(ids))),
                                "account_id")
        key_ids = [c["key_id"] for rows in credentials_of.values() for c in rows]
        package_of = {row["key_id"]: row for row in conn.execute(
            select(signing_packages).where(signing_packages.c.key_id.in_(key_ids))).mappings()}
        next_id = conn.execute(select(func.max(accounts.c.id))).scalar() + 1
    for start in range(0, count, COPY_CHUNK):
        rows: dict = {accounts: [], account_emails: [], credentials: [], signing_packages: []}
        for index in range(start, min(count, start + COPY_CHUNK)):
            template = template_rows[index % len(template_rows)]
            account_id, username = next_id + index, f"{prefix}-{index:06d}"
            rows[accounts].append({**template, "id": account_id, "username": username})
            rows[account_emails] += [{**email, "account_id": account_id, "address": f"{username}-{n}@example.mo"}
                                     for n, email in enumerate(emails_of.get(template["id"], []))]
            for credential in credentials_of.get(template["id"], []):
                key_id = secrets.token_hex(16)
                rows[credentials].append({**credential, "id": secrets.token_hex(8), "account_id": account_id,
                                          "key_id": key_id})
                if credential["key_id"] in package_of:
                    rows[signing_packages].append({**package_of[credential["key_id"]], "key_id": key_id})
        with database.transaction() as conn:
            for table, values in rows.items():
                if values:
                    conn.execute(insert(table), values)


def _group(result, column: str) -> dict:
    grouped: dict = {}
    for row in result.mappings():
        grouped.setdefault(row[column], []).append(dict(row))
    return grouped


def _cheap_config(config: Config, database_url: str) -> Config:
    return load_config(environ={"SIGNSERVER_STATE_DIR": str(config.state_dir),
                                "SIGNSERVER_DATABASE_URL": database_url, **CHEAP_ARGON2})


@dataclass(frozen=True)
class _Holder:
    username: str
    credential_id: str


def _authorize_holder(service: SignService) -> _Holder:
    """A certified P-256 holder enrolled with the server's argon2 parameters, and an application
    without OTP that may serve every account."""
    created = service.accounts.create(
        Enrolment("count-holder", "Count Holder", ("count-holder@example.mo",), kind=AccountKind.CORPORATE,
                  organisation="Bench Lda", key_algorithm=KeyAlgorithm.EC_P256),
        Secret(PASSWORD), operator="benchmark")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "benchmark")
    service.applications.create(APPLICATION, otp_required=False)
    return _Holder(created.account.username, created.credential.id)


def _client_credentials(service: SignService) -> tuple[grpc.ChannelCredentials, Application]:
    """Mutual TLS, as on the defaults: a client certificate for the benchmark's application."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate("client-asp", APPLICATION, key.public_key(), "benchmark")
    application = service.applications.set_client_certificate(APPLICATION, certificate_fingerprint(issued.certificate))
    return application, grpc.ssl_channel_credentials(b"".join(c.public_bytes(Encoding.PEM) for c in service.ca.chain()),
                                        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
                                        issued.certificate.public_bytes(Encoding.PEM))


def _enrol(service: SignService, prefix: str, numbers: range) -> tuple[list[str], list[float]]:
    """Enrol a P-256 holder ``prefix-NNNN`` for each number, one by one: (their names, the
    milliseconds of each enrolment)."""
    names, times = [], []
    for number in numbers:
        username = f"{prefix}-{number:04d}"
        began = time.perf_counter()
        service.accounts.create(Enrolment(username, f"Holder {username}", (f"{username}@example.mo",),
                                          key_algorithm=KeyAlgorithm.EC_P256), Secret(PASSWORD), operator="benchmark")
        times.append((time.perf_counter() - began) * 1000)
        names.append(username)
    return names, times


class _OneWorker:
    """`signserver serve --workers 1` on the benchmark's state directory, timed from spawn to
    its first SERVING health answer."""

    def __init__(self, state: Path, credentials: grpc.ChannelCredentials, database_url: str, name: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
        env.update(SIGNSERVER_STATE_DIR=str(state), SIGNSERVER_DATABASE_URL=database_url,
                   SIGNSERVER_SERVER_LISTEN="127.0.0.1:0", SIGNSERVER_HTTP_LISTEN="127.0.0.1:0",
                   SIGNSERVER_CSC_LISTEN="127.0.0.1:0")  # two run at once: ports of their own
        self.log_path = state / f"holder-count-{name}.log"
        self.log = self.log_path.open("w+")  # a file, not a pipe: the server never blocks on it
        began = time.perf_counter()
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "signserver"), "serve", "--workers", "1"],
                                        env=env, stderr=self.log, stdout=self.log)
        try:
            self.pid, port = self._wait_for_worker(timeout=180)
            self.channel = grpc.secure_channel(f"localhost:{port}", credentials)
            status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                   timeout=60).status
            self.start_seconds = time.perf_counter() - began
            if status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError(f"the server answers {status} rather than SERVING")
        except BaseException:
            self.stop()
            raise

    def _wait_for_worker(self, timeout: float) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"worker 0 \(pid (\d+)\) serving on 127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if found:
                return int(found[1]), int(found[2])
            if self.process.poll() is not None:
                raise RuntimeError("the server did not start: " + self.log_path.read_text()[-2000:])
            time.sleep(0.02)
        raise RuntimeError(f"the worker was not serving within {timeout:.0f} s")

    def rss_mb(self) -> float:
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


@dataclass
class _Start:
    """One server start's figures, and an activation token it issued and nobody spent."""

    seconds: float
    rss_mb: float = 0.0
    authorize_ms: list[float] = dataclasses.field(default_factory=list)
    first_sign_ms: list[float] = dataclasses.field(default_factory=list)
    spare_token: str = ""


def _measure_trial(state: Path, holder: _Holder, credentials: grpc.ChannelCredentials,
                   databases: list[tuple[str, str]], trial: int) -> dict[str, _Start]:
    """Start a server on each database (named), one after the other, then keep both running and
    alternate Authorize + SignHash pairs between them, so that both meet the same load."""
    servers: dict[str, _OneWorker] = {}
    try:
        stubs, starts = {}, {}
        for name, url in databases:
            # The first server is warmed up (its start-up work done) before the second starts.
            servers[name] = server = _OneWorker(state, credentials, url, f"{name}-{trial}")
            stubs[name] = signing_pb2_grpc.SigningServiceStub(server.channel)
            starts[name] = _Start(server.start_seconds)
            _authorize_and_sign(stubs[name], holder, f"{name}-{trial}-warmup", WARMUP)
            starts[name].rss_mb = server.rss_mb()
        for index in range(ROUNDS):
            for name, stub in stubs.items():
                authorize_ms, first_sign_ms = _authorize_and_sign(stub, holder, f"{name}-{trial}-{index}", 1)
                starts[name].authorize_ms += authorize_ms
                starts[name].first_sign_ms += first_sign_ms
        for name, stub in stubs.items():
            starts[name].spare_token = _authorize(
                stub, holder, hashlib.sha256(f"holder-count-{name}-{trial}-spare".encode()).digest())
        return starts
    finally:
        for server in servers.values():
            server.stop()


def _gathered(starts: list[_Start], holders: int, token_objects: int) -> ServerFigures:
    return ServerFigures(holders, [s.seconds for s in starts], [s.rss_mb for s in starts],
                         [x for s in starts for x in s.authorize_ms], [x for s in starts for x in s.first_sign_ms],
                         token_objects)


def _authorize(stub, holder: _Holder, digest: bytes) -> str:
    return stub.Authorize(signing_pb2.AuthorizeRequest(
        account=holder.username, password=PASSWORD, credential_id=holder.credential_id,
        hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=60).activation_token


def _authorize_and_sign(stub, holder: _Holder, name: str, rounds: int) -> tuple[list[float], list[float]]:
    """``rounds`` times: Authorize one digest, then SignHash it (the token's first and only
    signature, so the worker unwraps the package for it). Milliseconds of each call."""
    authorize_ms, sign_ms = [], []
    for index in range(rounds):
        digest = hashlib.sha256(f"holder-count-{name}-{index}".encode()).digest()
        began = time.perf_counter()
        token = _authorize(stub, holder, digest)
        authorized = time.perf_counter()
        stub.SignHash(signing_pb2.SignHashRequest(credential_id=holder.credential_id, activation_token=token,
                                                  signature_algorithm="ecdsa-sha256", digests=[digest]), timeout=60)
        authorize_ms.append((authorized - began) * 1000)
        sign_ms.append((time.perf_counter() - authorized) * 1000)
    return authorize_ms, sign_ms


def _token_objects(service: SignService) -> int:
    return service.keys.session.run(
        lambda session: sum(1 for _ in session.get_objects({pkcs11.Attribute.TOKEN: True})),
        "count the token's objects")


def _argon2_evaluation(config: Config) -> tuple[list[float], str]:
    """One argon2id evaluation as Authorize makes it: SecretHasher.derive with the server's parameters."""
    hasher = SecretHasher(config.accounts)
    stored, _key = hasher.hash_with_key(PASSWORD)
    times = []
    for _ in range(ARGON2_TRIES):
        began = time.perf_counter()
        if not hasher.derive(stored, PASSWORD).matched:
            raise RuntimeError("argon2id did not match its own hash")
        times.append((time.perf_counter() - began) * 1000)
    accounts_config = config.accounts
    return times, (f"m={accounts_config.argon2_memory_kib} KiB, t={accounts_config.argon2_time_cost}, "
                   f"p={accounts_config.argon2_parallelism}")


def _authorize_in_process(service: SignService, application: Application, holder: _Holder) -> list[float]:
    """HashSigner.authorize for one digest, in this process: Authorize without gRPC."""
    times = []
    for index in range(ARGON2_TRIES):
        digest = hashlib.sha256(f"holder-count-in-process-{index}".encode()).digest()
        began = time.perf_counter()
        service.signer.authorize(application, holder.username, Secret(PASSWORD), None, holder.credential_id,
                                 HashAlgorithm.SHA256, [digest])
        times.append((time.perf_counter() - began) * 1000)
    return times


def _package_unwrap(service: SignService, holder: _Holder, token: str) -> list[float]:
    """PackageKeys.sign of one digest with the holder's package, opened each time as for an
    activation token this process has not seen (what a worker does at a token's first SignHash)."""
    with service.database.read() as conn:
        key_id = conn.execute(select(credentials.c.key_id).where(credentials.c.id == holder.credential_id)).scalar()
        to_open = service.packages.key_to_open(conn, holder.credential_id, key_id, token, token_hash(token))
    far = service.clock.now() + datetime.timedelta(hours=1)
    digest = hashlib.sha256(b"holder-count-unwrap").digest()
    times = []
    for index in range(UNWRAP_TRIES):
        fresh = dataclasses.replace(to_open, handle_id=f"holder-count-{index}", expires_at=far)
        began = time.perf_counter()
        service.package_keys.sign(fresh.handle_id, [digest], SignatureAlgorithm.ECDSA_SHA256, service.clock.now(),
                                  fresh, last=True)
        times.append((time.perf_counter() - began) * 1000)
    return times


# --- report -----------------------------------------------------------------------------

def tables(figures: HolderCountFigures, today_authorize_p50_ms: float | None) -> tuple[str, str, dict]:
    """The holder-count table, the Authorize cost table (Markdown) and the figures for the JSON."""
    from benchmarks.harness import markdown_table

    median = statistics.median
    few, many = figures.few, figures.many
    (enrolled_few, enrol_few), (enrolled_many, enrol_many) = figures.enrol_few, figures.enrol_many
    pairs = [
        ("enrolment_mean",
         f"enrolment, ms per holder, mean of {ENROLLED} (up to {enrolled_few:,} / {enrolled_many:,} holders)",
         statistics.mean(enrol_few), statistics.mean(enrol_many), "{:.1f}"),
        ("enrolment_median", f"enrolment, ms per holder, median of {ENROLLED}", median(enrol_few),
         median(enrol_many), "{:.1f}"),
        ("start_to_serving", f"worker start, spawn to SERVING, median of {TRIALS}, s", median(few.start_seconds),
         median(many.start_seconds), "{:.2f}"),
        ("worker_rss", f"worker RSS after warm-up, median of {TRIALS}, MB", median(few.worker_rss_mb),
         median(many.worker_rss_mb), "{:.0f}"),
        ("authorize", f"Authorize, one caller, median of {TRIALS * ROUNDS}, ms", median(few.authorize_ms),
         median(many.authorize_ms), "{:.1f}"),
        ("first_signhash", f"first SignHash on a fresh token, median of {TRIALS * ROUNDS}, ms",
         median(few.first_sign_ms), median(many.first_sign_ms), "{:.1f}"),
        ("token_objects", f"objects on the token ({3 * ENROLLED + ENROL_WARMUP_FEW} holders enrolled in between)",
         few.token_objects, many.token_objects, "{:.0f}"),
    ]
    rows = [[name, fmt.format(small), fmt.format(large), f"{large / small:.2f}" if small else "-"]
            for _key, name, small, large, fmt in pairs]
    count_table = markdown_table(
        ["holder-count figure", f"{few.holders:,} holders", f"{many.holders:,} holders", "ratio many / few"], rows)

    argon2, unwrap = median(figures.argon2_ms), median(figures.unwrap_ms)
    authorize, first_sign = median(many.authorize_ms), median(many.first_sign_ms)
    cost_rows = [
        [f"one argon2id evaluation, server's parameters ({figures.argon2_parameters}), in process", f"{argon2:.1f}"],
        ["one package unwrap + one P-256 signature (PackageKeys.sign, key to open), in process", f"{unwrap:.1f}"],
        ["sum: the budget of Authorize + its first signature", f"{argon2 + unwrap:.1f}"],
        ["Authorize in process (HashSigner.authorize, no gRPC)", f"{median(figures.authorize_in_process_ms):.1f}"],
        [f"Authorize over gRPC, one caller, {many.holders:,} holders", f"{authorize:.1f}"],
        ["first SignHash after it (unwraps the package in the worker)", f"{first_sign:.1f}"],
        ["Authorize + first SignHash", f"{authorize + first_sign:.1f}"],
    ]
    if today_authorize_p50_ms is not None:
        cost_rows.append(["today's figure: Authorize, concurrency 8, p50 (table above)",
                          f"{today_authorize_p50_ms:.1f}"])
    cost_table = markdown_table(["Authorize cost (medians)", "ms"], cost_rows)

    def server(s: ServerFigures) -> dict:
        return {"holders": s.holders, "start_to_serving_s": s.start_seconds, "worker_rss_mb": s.worker_rss_mb,
                "authorize_median_ms": median(s.authorize_ms), "first_signhash_median_ms": median(s.first_sign_ms),
                "authorize_ms": s.authorize_ms, "first_signhash_ms": s.first_sign_ms, "token_objects": s.token_objects}

    data = {"name": "holder count",
            "enrolment": {"argon2": CHEAP_ARGON2, "key_algorithm": "ec-p256",
                          "few": {"holders": enrolled_few, "mean_ms": statistics.mean(enrol_few),
                                  "median_ms": median(enrol_few)},
                          "many": {"holders": enrolled_many, "mean_ms": statistics.mean(enrol_many),
                                   "median_ms": median(enrol_many)}},
            "few": server(few), "many": server(many),
            "ratios_many_to_few": {key: (large / small if small else None) for key, _name, small, large, _ in pairs},
            "authorize_cost": {"argon2_parameters": figures.argon2_parameters, "argon2_median_ms": argon2,
                               "unwrap_and_sign_median_ms": unwrap, "authorize_median_ms": authorize,
                               "authorize_in_process_median_ms": median(figures.authorize_in_process_ms),
                               "first_signhash_median_ms": first_sign,
                               "today_authorize_concurrency_8_p50_ms": today_authorize_p50_ms}}
    return count_table, cost_table, data


CAPTION = (f"Holder count: enrolment with P-256 keys and a cheap argon2id "
           f"({CHEAP_ARGON2['SIGNSERVER_ACCOUNTS_ARGON2_MEMORY_KIB']} KiB, "
           f"t={CHEAP_ARGON2['SIGNSERVER_ACCOUNTS_ARGON2_TIME_COST']}) so that what grows with the count shows; "
           "holders beyond those enrolled are copies of enrolled ones (database rows under new names; benchmarks/"
           "holder_count.py); the two counts are measured alternately, on two databases and one token; servers: "
           "`signserver serve --workers 1` with the default argon2id, signing for a real P-256 holder.")


def main() -> None:
    """Run this benchmark alone: ``python -m benchmarks.holder_count``."""
    import shutil

    from benchmarks.harness import fresh_state_dir

    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    try:
        figures = run(service, state)
    finally:
        service.close()
        shutil.rmtree(state, ignore_errors=True)
    count_table, cost_table, _ = tables(figures, None)
    print(CAPTION + "\n\n" + count_table + "\n\n" + cost_table)


if __name__ == "__main__":
    main()
