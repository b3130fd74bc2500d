"""The configuration's sections: one frozen dataclass each, and ``Config``, which holds them all."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from signserver.addresses import split_address
from signserver.config.values import read_secret_file
from signserver.errors import ConfigurationError
from signserver.secret import Secret

USER_PIN_ENV = "SIGNSERVER_HSM_USER_PIN"


@dataclass(frozen=True)
class HsmConfig:
    """Which PKCS#11 module and token the server uses, and how it logs in."""

    module: Path | None  # None: no SoftHSM module found and none configured
    token_label: str
    user_pin_file: Path
    softhsm2_conf: Path
    # Log in even while the token reports wrong PIN tries since its last login (USER_PIN_COUNT_LOW
    # or USER_PIN_FINAL_TRY): one more wrong PIN may then lock it. An administrator's decision.
    login_when_pin_count_low: bool = False
    # The key ceremony's transport key (`signserver hsm master receive-begin`): RSA of this many
    # bits; a source token's `export` takes a transport key of at least this size.
    transport_key_bits: int = 3072

    def user_pin(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Return the token's user PIN from the environment, else from ``user_pin_file``.

        Raises:
            ConfigurationError: neither source holds a PIN, or the environment's is not text (as a
                file's must be: a byte in another encoding reaches Python as a lone surrogate,
                which no token takes).
        """
        environ = os.environ if environ is None else environ
        if environ.get(USER_PIN_ENV):
            pin = environ[USER_PIN_ENV]
            try:
                pin.encode("utf-8")
            except UnicodeEncodeError:  # never quoted
                raise ConfigurationError(USER_PIN_ENV, "not valid UTF-8 text (check the encoding it was written "
                                                       "in)") from None
            return Secret(pin)
        return read_secret_file(self.user_pin_file, "hsm.user_pin_file")


@dataclass(frozen=True)
class ServerConfig:
    """Where the gRPC server listens, whether it may go without TLS, how the kernel schedules its
    workers (``batch_scheduling``: SCHED_BATCH, see signserver/cpu_scheduling.py), how much
    memory each worker may take (``worker_memory_mb``: MiB of data, RLIMIT_DATA; "auto": derived
    at start, see signserver/grpc_api/supervisor.py; 0: no bound), and how long a document stream
    may send nothing, or read nothing of its answer, before it is closed (``stream_idle_seconds``)."""

    listen: str
    plaintext: bool
    batch_scheduling: bool = True
    worker_memory_mb: int | str = "auto"
    stream_idle_seconds: int = 30

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate and key, and the CA whose client certificates it accepts."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None
    explicit: bool  # False: the paths are defaults under the state directory
    mutual: bool = True  # on the defaults: clients need a certificate from this server's CA
    # SHA-256 (hex) of the load balancers' own client certificates: a call whose TLS peer presents
    # one of them is identified by the certificate the balancer forwards (x-client-cert); a call
    # from anyone else that carries the header is refused.
    balancer_cert_sha256: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountsConfig:
    """Lockout and password hashing."""

    lock_threshold: int  # consecutive failed authentications that lock an account
    lock_minutes: int
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int


@dataclass(frozen=True)
class AuthorizationConfig:
    """Signature activation tokens (SAD)."""

    token_lifetime_seconds: int
    max_signatures: int


@dataclass(frozen=True)
class SmtpConfig:
    """Where e-mail goes. ``security`` is ``none``, ``starttls`` or ``tls``."""

    host: str
    port: int
    security: str
    username: str
    password_file: Path | None
    sender: str

    def password(self) -> Secret | None:
        """Raises: ConfigurationError: the password file is unreadable or open to others."""
        return read_secret_file(self.password_file, "smtp.password_file") if self.password_file else None


@dataclass(frozen=True)
class AuditConfig:
    """How often the head of the audit chain is sealed with the HSM's audit key."""

    seal_every_records: int
    seal_interval_seconds: int
    # The seal key's algorithm: "auto" (the best the token offers) or a key algorithm's name.
    seal_key_algorithm: str = "auto"


@dataclass(frozen=True)
class RetentionConfig:
    """How long what the store no longer needs is kept ([retention] section)."""

    # Activation tokens (and their digests) expired this long ago are removed: spent or not, a
    # token expires within minutes, so this is how long a token's row outlives its use.
    activation_grace_seconds: int = 86_400
    # Audit records older than this are removed once exported (``signserver audit export``);
    # None: the server never removes any (``signserver audit prune`` still can).
    audit_keep_days: int | None = None
    # Rows removed per transaction: each holds the write lock only that long.
    batch_rows: int = 1000
    # E-mails sent or given up this long ago leave the outbox (with their bodies).
    outbox_keep_days: int = 30


# Where the CA's policy identifiers hang (ca.policy_oid_arc): each profile's is this arc and the
# profile's number. The default is under RFC 5612's enterprise number for documentation (32473):
# a deployment sets its own registered arc. Not 2.25.<UUID>: its 128-bit arc is one that several
# decoders cannot read.
DEFAULT_POLICY_OID_ARC = "1.3.6.1.4.1.32473.1"


@dataclass(frozen=True)
class CaConfig:
    """The certification authority: names, key algorithms, and the addresses put in certificates."""

    name: str  # prefix of the CA certificates' common names
    organisation: str
    country: str
    base_url: str  # where the HTTP endpoints (CRL, OCSP, CA certificates) are reached
    cps_uri: str
    validity_days: int  # end-entity certificates
    root_key_algorithm: str
    issuing_key_algorithm: str
    crl_hours: int  # nextUpdate - thisUpdate
    # Per-profile settings from [ca.profiles.NAME] tables: validity_days, policy_oid, cps_uri.
    profile_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The OCSP responder's and TSA's key algorithms: "auto" (the best the token offers) or a name.
    ocsp_key_algorithm: str = "auto"
    tsa_key_algorithm: str = "auto"
    policy_oid_arc: str = DEFAULT_POLICY_OID_ARC

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")


@dataclass(frozen=True)
class PadesConfig:
    """Defaults of document signing; a request may choose otherwise."""

    level: str
    caption: str
    time_zone: str
    max_document_mb: int
    tsa_url: str | None  # an external RFC 3161 TSA instead of the built-in one
    trust_roots: Path | None  # more roots (PEM bundle) that verification trusts besides this CA
    # Where documents prepared in the two-step flow wait for CompleteSignature: a directory every
    # node shares (None: ``<state_dir>/prepared``, enough for the workers of one machine).
    spool_dir: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    """Limits of the CA's HTTP endpoints, per worker process ([http] section)."""

    threads: int = 4  # handler threads for CRLs, certificates and OCSP
    max_connections: int = 2048  # open connections, idle ones included; beyond, 503 at once
    max_connections_per_address: int = 256  # ... of those from one client address (an IPv6 /64)
    request_timeout_seconds: int = 10  # to receive a whole request, and again to send its answer
    tsa_threads: int = 1  # HSM time-stamps in flight at once, apart from the other endpoints' threads
    tsa_rate_per_second: int = 20  # time-stamp requests per client address (an IPv6 /64), sustained
    tsa_burst: int = 40  # ... and at once after a quiet spell
    # OCSP answers that cost an HSM signature (to a request with a nonce, or to a question none of
    # the minute's kept answers answers) per client address; kept answers are not counted. Relying
    # parties seldom send a nonce and ask about one or two certificates per signature checked, so
    # 10 a second is far beyond one person or office behind one address, and lets an application
    # checking documents in batches go on at 36,000 an hour; the burst fits within a client's share
    # of the requests' pool (a quarter of 4 threads and their waiting room: 33), so that a burst
    # the limit lets through is not refused 503 there.
    ocsp_rate_per_second: int = 10
    ocsp_burst: int = 30


@dataclass(frozen=True)
class CscConfig:
    """The Cloud Signature Consortium API's HTTPS front, served by every worker ([csc] section)."""

    listen: str = "127.0.0.1:8443"  # empty: no CSC front
    access_token_seconds: int = 3600  # lifetime of a bearer token from auth/login or oauth2/token
    # Where clients reach the front (behind a load balancer, its name), as the URLs that info hands
    # out use it; empty: https:// and the listen address (localhost for a wildcard address).
    public_url: str = ""

    def base_url(self) -> str:
        """The front's public address, without a trailing slash: never the request's Host header,
        which any client may set."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = split_address(self.listen or CscConfig.listen)
        if host in ("", "0.0.0.0", "::"):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        return f"https://{host}" if port == 443 else f"https://{host}:{port}"


@dataclass(frozen=True)
class DatabaseConfig:
    """Each worker process's connections ([database] section; the URL is ``Config.database_url``).

    On PostgreSQL, nodes x workers x (pool_size + max_overflow) must stay below the server's
    max_connections less its reserved ones (README, "PostgreSQL").
    """

    pool_size: int = 8  # connections kept open per process
    max_overflow: int = 8  # opened beyond them at peaks, closed when returned
    pool_timeout_seconds: int = 30  # how long a transaction waits for a free connection
    # PostgreSQL: a connection idle in the pool longer than this is checked with a round trip
    # before use (store/liveness.py); 0 checks every time.
    ping_after_idle_ms: int = 500


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics of a node, served by its supervisor for every worker ([metrics] section)."""

    listen: str = ""  # e.g. "127.0.0.1:9464"; empty: no metrics endpoint


@dataclass(frozen=True)
class LoggingConfig:
    """How the server logs ([logging] section)."""

    format: str = "text"  # "text", or "json": one JSON object per line
    calls: bool = False  # a line per call answered: method, status, latency, request id


@dataclass(frozen=True)
class Config:
    """The whole configuration, immutable once loaded."""

    state_dir: Path
    hsm: HsmConfig
    server: ServerConfig
    tls: TlsConfig
    database_url: str
    accounts: AccountsConfig
    authorization: AuthorizationConfig
    smtp: SmtpConfig
    audit: AuditConfig
    ca: CaConfig
    pades: PadesConfig
    http_listen: str  # CRL, OCSP and CA certificates over HTTP
    source: Path | None  # the file it was read from, if any
    http: HttpConfig = field(default_factory=HttpConfig)
    csc: CscConfig = field(default_factory=CscConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
