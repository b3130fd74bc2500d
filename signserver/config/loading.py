"""Loading the configuration: the TOML file, then ``SIGNSERVER_*`` overrides from the environment,
each key parsed and checked, with every section's embedded defaults."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Mapping

from signserver.addresses import is_loopback, split_address
from signserver.clock import time_zone
from signserver.config.sections import (DEFAULT_POLICY_OID_ARC, USER_PIN_ENV, AccountsConfig, AuditConfig,
                                        AuthorizationConfig, CaConfig, Config, CscConfig, DatabaseConfig,
                                        HsmConfig, HttpConfig, LoggingConfig, MetricsConfig, PadesConfig,
                                        RetentionConfig, ServerConfig, SmtpConfig, TlsConfig)
from signserver.config.values import (as_bool, as_choice, as_fingerprints, as_int, as_int_choice, as_memory_bound_mb,
                                      as_oid, as_str, as_str_or_empty)
from signserver.errors import ConfigurationError

log = logging.getLogger(__name__)

CONFIG_ENV = "SIGNSERVER_CONFIG"
# Variables of the prefix that are no setting: the configuration file, and the secrets commands
# read (never settings: a setting may be printed); SIGNSERVER_RA_* are the RA's settings.
OTHER_VARIABLES = frozenset({CONFIG_ENV, USER_PIN_ENV, "SIGNSERVER_HSM_SO_PIN", "SIGNSERVER_HSM_NEW_PIN",
                             "SIGNSERVER_HSM_CURRENT_SO_PIN", "SIGNSERVER_ACCOUNT_PASSWORD", "SIGNSERVER_ACCOUNT_OTP",
                             "SIGNSERVER_ACCOUNT_REVOCATION_PHRASE", "SIGNSERVER_ACCOUNT_RECOVERY_CODE",
                             "SIGNSERVER_API_KEY"})
OTHER_PREFIXES = ("SIGNSERVER_RA_", "SIGNSERVER_TEST_")
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


_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "state_dir": as_str,
    "hsm.module": as_str,
    "hsm.token_label": as_str,
    "hsm.user_pin_file": as_str,
    "hsm.softhsm2_conf": as_str,
    "hsm.login_when_pin_count_low": as_bool,
    "hsm.transport_key_bits": as_int_choice(2048, 3072, 4096),
    "server.listen": as_str,
    "server.plaintext": as_bool,
    "server.batch_scheduling": as_bool,
    "server.worker_memory_mb": as_memory_bound_mb,
    "server.stream_idle_seconds": as_int(1, 600),  # at most an upload's whole time (UPLOAD_SECONDS)
    "tls.cert_file": as_str,
    "tls.key_file": as_str,
    "tls.client_ca_file": as_str,
    "tls.mutual": as_bool,
    "tls.balancer_cert_sha256": as_fingerprints,
    "database.url": as_str,
    "database.pool_size": as_int(1, 1000),
    "database.max_overflow": as_int(0, 1000),
    "database.pool_timeout_seconds": as_int(1, 600),
    "database.ping_after_idle_ms": as_int(0, 3_600_000),
    "accounts.lock_threshold": as_int(1, 100),
    "accounts.lock_minutes": as_int(1, 525_600),
    "accounts.argon2_memory_kib": as_int(8, 4_194_304),
    "accounts.argon2_time_cost": as_int(1, 100),
    "accounts.argon2_parallelism": as_int(1, 64),
    "authorization.token_lifetime_seconds": as_int(10, 3600),
    "authorization.max_signatures": as_int(1, 10_000),
    "smtp.host": as_str,
    "smtp.port": as_int(1, 65535),
    "smtp.security": as_choice("none", "starttls", "tls"),
    "smtp.username": as_str_or_empty,
    "smtp.password_file": as_str,
    "smtp.sender": as_str,
    "audit.seal_every_records": as_int(1, 1_000_000),
    "ca.name": as_str,
    "ca.organisation": as_str,
    "ca.country": as_str,
    "ca.base_url": as_str,
    "ca.cps_uri": as_str,
    "ca.validity_days": as_int(1, 36_500),
    "ca.root_key_algorithm": as_str,
    "ca.issuing_key_algorithm": as_str,
    "ca.crl_hours": as_int(1, 8_760),
    "ca.ocsp_key_algorithm": as_choice("auto", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"),
    "ca.tsa_key_algorithm": as_choice("auto", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"),
    "ca.policy_oid_arc": as_oid,
    "audit.seal_key_algorithm": as_choice("auto", "ed25519", "ec-p256", "ec-p384", "rsa-2048", "rsa-3072",
                                           "rsa-4096"),
    "http.listen": as_str,
    "http.threads": as_int(1, 256),
    "http.max_connections": as_int(1, 1_000_000),
    "http.max_connections_per_address": as_int(1, 1_000_000),
    "http.request_timeout_seconds": as_int(1, 3600),
    "http.tsa_threads": as_int(1, 64),
    "http.tsa_rate_per_second": as_int(1, 100_000),
    "http.tsa_burst": as_int(1, 1_000_000),
    "http.ocsp_rate_per_second": as_int(1, 100_000),
    "http.ocsp_burst": as_int(1, 1_000_000),
    "csc.listen": as_str_or_empty,
    "metrics.listen": as_str_or_empty,
    "logging.format": as_choice("text", "json"),
    "logging.calls": as_bool,
    "csc.access_token_seconds": as_int(60, 86_400),
    "csc.public_url": as_str_or_empty,
    "pades.level": as_choice("B-B", "B-T", "B-LT", "B-LTA"),
    "pades.caption": as_str,
    "pades.time_zone": as_str,
    "pades.max_document_mb": as_int(1, 4096),
    "pades.tsa_url": as_str_or_empty,
    "pades.trust_roots": as_str,
    "pades.spool_dir": as_str,
    "audit.seal_interval_seconds": as_int(1, 86_400),
    "retention.activation_grace_seconds": as_int(0, 31_622_400),
    "retention.audit_keep_days": as_int(1, 36_600),
    "retention.batch_rows": as_int(10, 100_000),
    "retention.outbox_keep_days": as_int(1, 36_600),
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
_PROFILE_FIELDS = {"validity_days": as_int(1, 36_500), "policy_oid": as_oid, "cps_uri": as_str}


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


def _warn_of_unknown_variables(environ: Mapping[str, str]) -> None:
    """Say which ``SIGNSERVER_*`` variables are no setting (a mistyped name would otherwise be
    ignored without a word), with the setting it is closest to. Only names are said: a value may
    be a secret."""
    known = {env_name(key) for key in _KEYS} | OTHER_VARIABLES
    for name in sorted(environ):
        if name.startswith("SIGNSERVER_") and name not in known and not name.startswith(OTHER_PREFIXES):
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
            log.warning("the environment variable %s is no setting and is ignored%s", name,
                        f" (did you mean {close[0]}?)" if close else "")


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
    _warn_of_unknown_variables(environ)
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
    config = Config(
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
    _refuse_shared_addresses(config)
    _refuse_password_in_the_clear(config.smtp)
    return config


def _refuse_password_in_the_clear(smtp: SmtpConfig) -> None:
    """Refuse an SMTP login without TLS to a server off this machine: the password would cross
    the network in the clear (AUTH PLAIN and LOGIN are base64 only).

    Raises: ConfigurationError (smtp.security).
    """
    if smtp.security == "none" and smtp.username and not is_loopback(smtp.host):
        raise ConfigurationError("smtp.security", f"'none' with a username would send the SMTP password to "
                                                  f"{smtp.host} in the clear: use starttls or tls (or a relay on "
                                                  "this machine)")


def _refuse_shared_addresses(config: Config) -> None:
    """Every front binds its port with SO_REUSEPORT (so that the workers share it), and so would
    two fronts given one address: the kernel would then hand each a share of the other's
    connections, and a gRPC client would now and then reach the HTTP server.

    Raises: ConfigurationError: (naming the later setting) two fronts listen on one address; a
    wildcard address (0.0.0.0, ::) takes its port on every address.
    """
    fronts = [("server.listen", config.server.listen), ("http.listen", config.http_listen),
              ("csc.listen", config.csc.listen), ("metrics.listen", config.metrics.listen)]
    taken: list[tuple[str, str, int]] = []
    for setting, address in fronts:
        if not address:
            continue
        host, port = split_address(address)
        for earlier, earlier_host, earlier_port in taken:
            if port == earlier_port and port != 0 and _overlap(host, earlier_host):
                raise ConfigurationError(setting, f"{address} is also {earlier}'s address: each front needs "
                                                  "an address of its own")
        taken.append((setting, host, port))


def _overlap(one: str, other: str) -> bool:
    """Whether ports bound on hosts ``one`` and ``other`` take the same socket address: the same
    host, a wildcard address and any other, or ``localhost`` and a loopback address."""
    def parsed(host: str):
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return None  # a name, resolved when bound

    first, second = parsed(one), parsed(other)
    if one == other or (first is not None and first == second):
        return True
    if any(address is not None and address.is_unspecified for address in (first, second)) or "" in (one, other):
        return True
    return ((one == "localhost" and second is not None and second.is_loopback)
            or (other == "localhost" and first is not None and first.is_loopback))


def _database_url(url: str) -> str:
    """Raises: ConfigurationError: not a database signserver runs on (SQLite in a file, PostgreSQL
    through psycopg)."""
    # SQLite through Python's own sqlite3 only: a driver of its own would bring a second copy of
    # SQLite into a worker beside the one its checkpoint thread uses, and two copies in one
    # process break each other's locks (SQLite's "How To Corrupt", 2.2.1).
    if url.startswith(("sqlite://", "sqlite+pysqlite://")):
        # As SQLAlchemy's make_url reads it, without loading SQLAlchemy for commands that need no database.
        path = url.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
        if not path or path == ":memory:":
            # Each worker is a process of its own: an in-memory database would be one per worker.
            raise ConfigurationError("database.url", "SQLite needs a file: write the URL as sqlite:///PATH")
        return url
    if url.startswith("postgresql+psycopg://"):
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
        transport_key_bits=values.get("hsm.transport_key_bits", 3072),
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
    tsa_url = values.get("pades.tsa_url") or None  # empty: the built-in TSA, as when unset
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
    return ServerConfig(listen=listen, plaintext=plaintext,
                        batch_scheduling=values.get("server.batch_scheduling", True),
                        worker_memory_mb=values.get("server.worker_memory_mb", ServerConfig.worker_memory_mb),
                        stream_idle_seconds=values.get("server.stream_idle_seconds", ServerConfig.stream_idle_seconds))


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
