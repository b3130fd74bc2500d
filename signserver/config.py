"""Configuration: one TOML file plus ``SIGNSERVER_*`` environment overrides.

Every key has an embedded default, so a checkout runs with no file at all: a SoftHSM token and
the server's files under ``./var``. The environment overrides the file: ``SIGNSERVER_STATE_DIR``
for the top-level ``state_dir`` and ``SIGNSERVER_<SECTION>_<KEY>`` for the others (for example
``SIGNSERVER_SERVER_LISTEN``). Secrets never live in the file: the token's user PIN comes from
``SIGNSERVER_HSM_USER_PIN`` or from the file named by ``hsm.user_pin_file``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from signserver.addresses import is_loopback, split_address
from signserver.clock import time_zone
from signserver.errors import ConfigurationError
from signserver.secret import Secret

CONFIG_ENV = "SIGNSERVER_CONFIG"
USER_PIN_ENV = "SIGNSERVER_HSM_USER_PIN"
DEFAULT_CONFIG_FILE = Path("signserver.toml")

# Where distributions put SoftHSM's module; the first that exists is the default.
SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


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

    def user_pin(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Return the token's user PIN from the environment, else from ``user_pin_file``.

        Raises:
            ConfigurationError: neither source holds a PIN.
        """
        environ = os.environ if environ is None else environ
        if environ.get(USER_PIN_ENV):
            return Secret(environ[USER_PIN_ENV])
        return read_secret_file(self.user_pin_file, "hsm.user_pin_file")


@dataclass(frozen=True)
class ServerConfig:
    """Where the gRPC server listens and whether it may go without TLS."""

    listen: str
    plaintext: bool

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


# Where the CA's policy identifiers hang (ca.policy_oid_arc): each profile's is this arc and the
# profile's number. The default is under RFC 5612's enterprise number for documentation (32473):
# a deployment sets its own registered arc. Not 2.25.<UUID>: its 128-bit arc is one that several
# decoders cannot read.
DEFAULT_POLICY_OID_ARC = "1.3.6.1.4.1.32473.1"
# The largest arc every decoder reads: some keep arcs in signed 32-bit integers.
MAX_OID_ARC = 2**31 - 1


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
    request_timeout_seconds: int = 10  # to receive a whole request, and again to send its answer
    tsa_threads: int = 1  # HSM time-stamps in flight at once, apart from the other endpoints' threads
    tsa_rate_per_second: int = 20  # time-stamp requests per client address (an IPv6 /64), sustained
    tsa_burst: int = 40  # ... and at once after a quiet spell


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


def read_secret_file(path: Path, key: str) -> Secret:
    """Read a secret kept alone in a file (surrounding whitespace stripped).

    Raises:
        ConfigurationError: the file is missing, unreadable, empty, or readable by others.
    """
    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(key, f"no file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(key, f"cannot read {path}: {exc}") from None
    if mode & 0o077:
        raise ConfigurationError(key, f"{path} is readable by other users; chmod 600 it")
    if not value:
        raise ConfigurationError(key, f"{path} is empty")
    return Secret(value)


# --- parsing -----------------------------------------------------------------------------

def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, "must be a non-empty string")
    return value.strip()


def _as_fingerprints(key: str, value: Any) -> tuple[str, ...]:
    """SHA-256 fingerprints in hex (colons allowed): a list, or one string of them separated by
    commas or spaces (as an environment variable gives them).

    Raises: ConfigurationError: one is not 64 hex digits."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigurationError(key, "must be a SHA-256 fingerprint in hex, or a list of them")
    fingerprints = tuple(item.replace(":", "").strip().lower() for item in items)
    for fingerprint in fingerprints:
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise ConfigurationError(key, f"{fingerprint!r} is not a SHA-256 fingerprint (64 hex digits)")
    return fingerprints


def _as_str_or_empty(key: str, value: Any) -> str:
    """A string where empty means "none" (``csc.listen = ""``: no CSC front)."""
    return "" if isinstance(value, str) and not value.strip() else _as_str(key, value)


def _as_oid(key: str, value: Any) -> str:
    """A dotted object identifier whose every arc fits in 31 bits.

    Raises: ConfigurationError: not one."""
    parsed = _as_str(key, value)
    # ASCII digits, no leading zeros, and under 0 and 1 a second arc below 40 (X.660): what every
    # encoder, cryptography's among them, takes.
    arcs = parsed.split(".")
    if (not re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", parsed, flags=re.ASCII)
            or (arcs[0] in ("0", "1") and int(arcs[1]) > 39)):
        raise ConfigurationError(key, "must be a dotted object identifier such as 1.3.6.1.4.1.32473.1")
    if any(int(arc) > MAX_OID_ARC for arc in parsed.split(".")):
        raise ConfigurationError(key, f"every arc must be at most {MAX_OID_ARC}: larger ones (such as a 2.25 UUID "
                                      "arc) are more than some decoders read")
    return parsed


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(key, f"must be true or false, not {value!r}")


def _as_int(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigurationError(key, f"must be a whole number, not {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ConfigurationError(key, f"must be a whole number, not {value!r}") from None
        if not low <= number <= high:
            raise ConfigurationError(key, f"must be between {low} and {high}, not {number}")
        return number
    return parse


def _as_choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigurationError(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value
    return parse


_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "state_dir": _as_str,
    "hsm.module": _as_str,
    "hsm.token_label": _as_str,
    "hsm.user_pin_file": _as_str,
    "hsm.softhsm2_conf": _as_str,
    "hsm.login_when_pin_count_low": _as_bool,
    "server.listen": _as_str,
    "server.plaintext": _as_bool,
    "tls.cert_file": _as_str,
    "tls.key_file": _as_str,
    "tls.client_ca_file": _as_str,
    "tls.mutual": _as_bool,
    "tls.balancer_cert_sha256": _as_fingerprints,
    "database.url": _as_str,
    "database.pool_size": _as_int(1, 1000),
    "database.max_overflow": _as_int(0, 1000),
    "database.pool_timeout_seconds": _as_int(1, 600),
    "database.ping_after_idle_ms": _as_int(0, 3_600_000),
    "accounts.lock_threshold": _as_int(1, 100),
    "accounts.lock_minutes": _as_int(1, 525_600),
    "accounts.argon2_memory_kib": _as_int(8, 4_194_304),
    "accounts.argon2_time_cost": _as_int(1, 100),
    "accounts.argon2_parallelism": _as_int(1, 64),
    "authorization.token_lifetime_seconds": _as_int(10, 3600),
    "authorization.max_signatures": _as_int(1, 10_000),
    "smtp.host": _as_str,
    "smtp.port": _as_int(1, 65535),
    "smtp.security": _as_choice("none", "starttls", "tls"),
    "smtp.username": _as_str,
    "smtp.password_file": _as_str,
    "smtp.sender": _as_str,
    "audit.seal_every_records": _as_int(1, 1_000_000),
    "ca.name": _as_str,
    "ca.organisation": _as_str,
    "ca.country": _as_str,
    "ca.base_url": _as_str,
    "ca.cps_uri": _as_str,
    "ca.validity_days": _as_int(1, 36_500),
    "ca.root_key_algorithm": _as_str,
    "ca.issuing_key_algorithm": _as_str,
    "ca.crl_hours": _as_int(1, 8_760),
    "ca.ocsp_key_algorithm": _as_choice("auto", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"),
    "ca.tsa_key_algorithm": _as_choice("auto", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"),
    "ca.policy_oid_arc": _as_oid,
    "audit.seal_key_algorithm": _as_choice("auto", "ed25519", "ec-p256", "ec-p384", "rsa-2048", "rsa-3072",
                                           "rsa-4096"),
    "http.listen": _as_str,
    "http.threads": _as_int(1, 256),
    "http.max_connections": _as_int(1, 1_000_000),
    "http.request_timeout_seconds": _as_int(1, 3600),
    "http.tsa_threads": _as_int(1, 64),
    "http.tsa_rate_per_second": _as_int(1, 100_000),
    "http.tsa_burst": _as_int(1, 1_000_000),
    "csc.listen": _as_str_or_empty,
    "metrics.listen": _as_str_or_empty,
    "logging.format": _as_choice("text", "json"),
    "logging.calls": _as_bool,
    "csc.access_token_seconds": _as_int(60, 86_400),
    "csc.public_url": _as_str,
    "pades.level": _as_choice("B-B", "B-T", "B-LT", "B-LTA"),
    "pades.caption": _as_str,
    "pades.time_zone": _as_str,
    "pades.max_document_mb": _as_int(1, 4096),
    "pades.tsa_url": _as_str,
    "pades.trust_roots": _as_str,
    "pades.spool_dir": _as_str,
    "audit.seal_interval_seconds": _as_int(1, 86_400),
    "retention.activation_grace_seconds": _as_int(0, 31_622_400),
    "retention.audit_keep_days": _as_int(1, 36_600),
    "retention.batch_rows": _as_int(10, 100_000),
}

# Keys that must never be written in the file, with where they belong instead.
_SECRET_KEYS = {
    "hsm.user_pin": f"put the PIN in the file named by hsm.user_pin_file or in {USER_PIN_ENV}",
    "hsm.so_pin": "the SO PIN is only needed by `signserver hsm` commands, which prompt for it",
    "smtp.password": "put it in the file named by smtp.password_file",
}


def env_name(key: str) -> str:
    """The environment variable that overrides a configuration key."""
    return "SIGNSERVER_" + key.replace(".", "_").upper()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(CONFIG_ENV, f"no configuration file at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(str(path), f"not valid TOML: {exc}") from None
    flat = _flatten(raw)
    for key in flat:
        if key in _SECRET_KEYS:
            raise ConfigurationError(key, f"secrets do not belong in {path}: {_SECRET_KEYS[key]}")
        if key not in _KEYS and not key.startswith(_PROFILE_PREFIX) and not key.startswith(_RA_PREFIX):
            raise ConfigurationError(key, f"unknown key in {path}")
    return flat


_PROFILE_PREFIX = "ca.profiles."
_RA_PREFIX = "ra."  # the registration authority's section: a separate program reads it
_PROFILE_FIELDS = {"validity_days": _as_int(1, 36_500), "policy_oid": _as_oid, "cps_uri": _as_str}


def _profile_settings(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``ca.profiles.NAME.FIELD`` keys as {NAME: {FIELD: value}}; the profile names are checked
    by the CA, which knows them."""
    settings: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if not key.startswith(_PROFILE_PREFIX):
            continue
        name, _, field_name = key[len(_PROFILE_PREFIX):].rpartition(".")
        if not name or field_name not in _PROFILE_FIELDS:
            raise ConfigurationError(key, f"a profile setting is one of {', '.join(_PROFILE_FIELDS)}")
        parsed = _PROFILE_FIELDS[field_name](key, value)
        settings.setdefault(name, {})[field_name] = parsed
    return settings


def _default_module() -> str | None:
    return next((c for c in SOFTHSM_MODULE_CANDIDATES if Path(c).is_file()), None)


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the configuration from ``path`` (else ``$SIGNSERVER_CONFIG``, else
    ``./signserver.toml`` when it exists), then apply environment overrides.

    Raises:
        ConfigurationError: a value is invalid; the error names the key and the reason.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    values = _read_file(path) if path is not None else {}
    for key in _KEYS:
        if env_name(key) in environ:
            values[key] = environ[env_name(key)]
    profile_settings = _profile_settings(values)
    values = {key: _KEYS[key](key, value) for key, value in values.items() if key in _KEYS}

    # Relative paths in a file are relative to that file; from the environment, to the cwd.
    base = path.parent if path is not None else Path(".")

    def path_of(key: str, default: Path) -> Path:
        if key not in values:
            return default
        given = Path(values[key]).expanduser()
        from_env = env_name(key) in environ
        return given if given.is_absolute() or from_env else base / given

    state_dir = path_of("state_dir", Path("var"))
    return Config(
        state_dir=state_dir,
        hsm=_hsm_config(values, state_dir, path_of),
        server=_server_config(values),
        tls=_tls_config(values, state_dir, path_of),
        database_url=_database_url(values.get("database.url", f"sqlite:///{state_dir / 'signserver.db'}")),
        accounts=AccountsConfig(
            lock_threshold=values.get("accounts.lock_threshold", 5),
            lock_minutes=values.get("accounts.lock_minutes", 30),
            argon2_memory_kib=values.get("accounts.argon2_memory_kib", 19_456),
            argon2_time_cost=values.get("accounts.argon2_time_cost", 2),
            argon2_parallelism=values.get("accounts.argon2_parallelism", 1),
        ),
        authorization=AuthorizationConfig(
            token_lifetime_seconds=values.get("authorization.token_lifetime_seconds", 300),
            max_signatures=values.get("authorization.max_signatures", 100),
        ),
        smtp=SmtpConfig(
            host=values.get("smtp.host", "localhost"),
            port=values.get("smtp.port", 25),
            security=values.get("smtp.security", "none"),
            username=values.get("smtp.username", ""),
            password_file=path_of("smtp.password_file", Path()) if "smtp.password_file" in values else None,
            sender=values.get("smtp.sender", "signserver@localhost"),
        ),
        audit=AuditConfig(
            seal_every_records=values.get("audit.seal_every_records", 100),
            seal_interval_seconds=values.get("audit.seal_interval_seconds", 60),
            seal_key_algorithm=values.get("audit.seal_key_algorithm", "auto"),
        ),
        ca=_ca_config(values, profile_settings),
        pades=_pades_config(values, path_of),
        http_listen=_address(values, "http.listen", "127.0.0.1:8080"),
        source=path,
        http=_http_config(values),
        csc=_csc_config(values),
        metrics=MetricsConfig(listen=_address(values, "metrics.listen", "") if values.get("metrics.listen") else ""),
        logging=LoggingConfig(format=values.get("logging.format", LoggingConfig.format),
                              calls=values.get("logging.calls", LoggingConfig.calls)),
        database=DatabaseConfig(**{item.name: values.get(f"database.{item.name}", item.default)
                                   for item in fields(DatabaseConfig)}),
        retention=RetentionConfig(**{item.name: values.get(f"retention.{item.name}", item.default)
                                     for item in fields(RetentionConfig)}),
    )


def _database_url(url: str) -> str:
    """Raises: ConfigurationError: not a database signserver runs on (SQLite, PostgreSQL through psycopg)."""
    if url.startswith(("sqlite://", "sqlite+", "postgresql+psycopg://")):
        return url
    if url.startswith(("postgresql://", "postgres://", "postgresql+")):
        raise ConfigurationError("database.url", "PostgreSQL is reached through psycopg 3: write the URL as "
                                                 "postgresql+psycopg://USER@HOST:PORT/DATABASE")
    raise ConfigurationError("database.url", "must be a sqlite:/// or a postgresql+psycopg:// URL")


def _csc_config(values: dict[str, Any]) -> CscConfig:
    listen = values.get("csc.listen", CscConfig.listen)
    return CscConfig(listen=_address(values, "csc.listen", listen) if listen else "",
                     access_token_seconds=values.get("csc.access_token_seconds", CscConfig.access_token_seconds),
                     public_url=_public_url(values.get("csc.public_url", "")))


def _public_url(url: str) -> str:
    """Raises: ConfigurationError: not an https:// URL of a host (a path is allowed, no query)."""
    if not url:
        return ""
    if not re.fullmatch(r"https://[^/?#\s]+(/[^?#\s]*)?", url):
        raise ConfigurationError("csc.public_url", "must be an https:// URL, e.g. https://sign.example.mo "
                                                   "(a path is allowed; no query or fragment)")
    return url.rstrip("/")


def _http_config(values: dict[str, Any]) -> HttpConfig:
    defaults = HttpConfig()
    return HttpConfig(**{item.name: values.get(f"http.{item.name}", getattr(defaults, item.name))
                         for item in fields(HttpConfig)})


def _hsm_config(values: dict[str, Any], state_dir: Path, path_of) -> HsmConfig:
    if "hsm.module" in values:
        module: Path | None = path_of("hsm.module", Path())
        if not module.is_file():
            raise ConfigurationError("hsm.module", f"no PKCS#11 module at {module}")
    else:
        default = _default_module()
        module = Path(default) if default else None
    label = values.get("hsm.token_label", "signserver")
    if len(label.encode("utf-8")) > 32:
        raise ConfigurationError("hsm.token_label", "a PKCS#11 token label has at most 32 bytes")
    return HsmConfig(
        module=module,
        token_label=label,
        user_pin_file=path_of("hsm.user_pin_file", state_dir / "hsm" / "user-pin"),
        softhsm2_conf=path_of("hsm.softhsm2_conf", state_dir / "softhsm" / "softhsm2.conf"),
        login_when_pin_count_low=values.get("hsm.login_when_pin_count_low", False),
    )


def _address(values: dict[str, Any], key: str, default: str) -> str:
    address = values.get(key, default)
    try:
        split_address(address)
    except ValueError as exc:
        raise ConfigurationError(key, str(exc)) from None
    return address


def _ca_config(values: dict[str, Any], profile_settings: dict[str, dict[str, Any]]) -> CaConfig:
    base_url = values.get("ca.base_url", "http://127.0.0.1:8080")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigurationError("ca.base_url", "must be an http:// or https:// address")
    country = values.get("ca.country", "MO")
    if len(country) != 2 or not country.isalpha() or not country.isupper():
        raise ConfigurationError("ca.country", "must be a two-letter country code such as MO")
    for key, default in (("ca.root_key_algorithm", "rsa-3072"), ("ca.issuing_key_algorithm", "rsa-3072")):
        if values.get(key, default) not in ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"):
            raise ConfigurationError(key, "must be rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384")
    return CaConfig(
        name=values.get("ca.name", "signserver"),
        organisation=values.get("ca.organisation", "signserver"),
        country=country,
        base_url=base_url,
        cps_uri=values.get("ca.cps_uri", base_url.rstrip("/") + "/cps"),
        validity_days=values.get("ca.validity_days", 1095),
        root_key_algorithm=values.get("ca.root_key_algorithm", "rsa-3072"),
        issuing_key_algorithm=values.get("ca.issuing_key_algorithm", "rsa-3072"),
        crl_hours=values.get("ca.crl_hours", 24),
        profile_settings=profile_settings,
        ocsp_key_algorithm=values.get("ca.ocsp_key_algorithm", "auto"),
        tsa_key_algorithm=values.get("ca.tsa_key_algorithm", "auto"),
        policy_oid_arc=values.get("ca.policy_oid_arc", DEFAULT_POLICY_OID_ARC),
    )


def _pades_config(values: dict[str, Any], path_of) -> PadesConfig:
    zone = values.get("pades.time_zone", "Asia/Macau")
    if time_zone(zone) is None:
        raise ConfigurationError("pades.time_zone", f"unknown time zone {zone!r}")
    tsa_url = values.get("pades.tsa_url")
    if tsa_url and not tsa_url.startswith(("http://", "https://")):
        raise ConfigurationError("pades.tsa_url", "must be an http:// or https:// address")
    roots = path_of("pades.trust_roots", Path()) if "pades.trust_roots" in values else None
    if roots is not None and not roots.is_file():
        raise ConfigurationError("pades.trust_roots", f"no file at {roots}")
    return PadesConfig(level=values.get("pades.level", "B-LT"), caption=values.get("pades.caption", "Assinatura digital"),
                       time_zone=zone, max_document_mb=values.get("pades.max_document_mb", 200),
                       tsa_url=tsa_url, trust_roots=roots,
                       spool_dir=path_of("pades.spool_dir", Path()) if "pades.spool_dir" in values else None)


def _server_config(values: dict[str, Any]) -> ServerConfig:
    listen = values.get("server.listen", "127.0.0.1:50051")
    try:
        host, _ = split_address(listen)
    except ValueError as exc:
        raise ConfigurationError("server.listen", str(exc)) from None
    plaintext = values.get("server.plaintext", False)
    if plaintext and not is_loopback(host):
        raise ConfigurationError(
            "server.plaintext",
            f"plaintext is allowed only on a loopback address, not on {host}; "
            "configure TLS for other addresses",
        )
    return ServerConfig(listen=listen, plaintext=plaintext)


def _tls_config(values: dict[str, Any], state_dir: Path, path_of) -> TlsConfig:
    explicit = "tls.cert_file" in values or "tls.key_file" in values
    if ("tls.cert_file" in values) != ("tls.key_file" in values):
        missing = "tls.key_file" if "tls.cert_file" in values else "tls.cert_file"
        raise ConfigurationError(missing, "tls.cert_file and tls.key_file go together")
    cert = path_of("tls.cert_file", state_dir / "tls" / "server.pem")
    key = path_of("tls.key_file", state_dir / "tls" / "server-key.pem")
    client_ca = path_of("tls.client_ca_file", Path()) if "tls.client_ca_file" in values else None
    for name, file in (("tls.cert_file", cert), ("tls.key_file", key), ("tls.client_ca_file", client_ca)):
        if file is not None and (explicit or name == "tls.client_ca_file") and not file.is_file():
            raise ConfigurationError(name, f"no file at {file}")
    return TlsConfig(cert_file=cert, key_file=key, client_ca_file=client_ca, explicit=explicit,
                     mutual=values.get("tls.mutual", True),
                     balancer_cert_sha256=values.get("tls.balancer_cert_sha256", ()))
