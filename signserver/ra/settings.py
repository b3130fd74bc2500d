"""The RA's settings: the ``[ra]`` section of the same TOML file as the core's (and the top-level
``state_dir``), with environment overrides ``SIGNSERVER_RA_<KEY>`` (``SIGNSERVER_STATE_DIR`` for the
state directory). The RA reads nothing else of the file; the core ignores the section."""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from signserver.addresses import is_loopback, join_address, split_address
from signserver.ra.errors import SettingsError
from signserver.ra.serving_address import running_pages_url, serving_file

log = logging.getLogger(__name__)

CONFIG_ENV = "SIGNSERVER_CONFIG"
STATE_DIR_ENV = "SIGNSERVER_STATE_DIR"
DEFAULT_CONFIG_FILE = Path("signserver.toml")
ENV_PREFIX = "SIGNSERVER_RA_"
# Read by the RA's commands rather than its settings (the operator a command acts as).
OTHER_VARIABLES = frozenset({"SIGNSERVER_RA_OPERATOR"})

SMTP_SECURITY = ("none", "starttls", "tls")


@dataclass(frozen=True)
class RaSettings:
    state_dir: Path = Path("var")
    listen: str = "127.0.0.1:8450"
    tls_cert: Path | None = None  # the RA API's certificate (PEM); required for a listen beyond loopback
    tls_key: Path | None = None
    database_url: str = ""  # empty: sqlite under <state_dir>/ra/ra.sqlite
    core_address: str = "127.0.0.1:50051"
    core_server_name: str = ""  # the name in the core's certificate, when the address is not it
    core_timeout_seconds: float = 30.0  # each call to the core's CertificateService
    client_cert: Path | None = None  # the RA client certificate (PEM), for mutual TLS with the core
    client_key: Path | None = None
    ca_roots: Path | None = None  # the CAs trusted for the core's certificate (PEM)
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_sender: str = "ra@localhost"
    # "none", "starttls" or "tls"; over TLS the server's certificate and host name are checked
    # (against smtp_ca, else the system's CAs). A login without TLS only to a server on this machine.
    smtp_security: str = "none"
    smtp_username: str = ""
    smtp_password_file: Path | None = None  # the SMTP password alone in a file only its owner reads
    smtp_ca: Path | None = None  # the CAs trusted for the SMTP server's certificate (PEM); default: the system's
    registry_url: str = "http://127.0.0.1:8451"
    registry_timeout_seconds: float = 10.0
    registry_attempts: int = 3
    registry_client_id: str = ""
    registry_api_key_file: Path | None = None  # the registry's API key, when it asks for one
    registry_ca: Path | None = None  # the CAs trusted for the registry's certificate (PEM); default: the system's
    registry_client_cert: Path | None = None  # the RA's certificate for a registry that asks for mutual TLS
    registry_client_key: Path | None = None
    face_threshold: float = 0.8
    notice_days: int = 30
    code_seconds: int = 300
    code_attempts: int = 5
    code_sends: int = 5  # codes sent to one address in a renewal, in all; then an operator reopens it
    code_failures: int = 10  # wrong codes typed for one address in a renewal, in all; likewise
    registry_lookups: int = 5  # the registry's lookups of one renewal, in all
    face_comparisons: int = 5  # the face comparisons of one renewal, in all
    reuse_days: int = 30
    background_seconds: float = 5.0  # how often the background passes (outbox, notices, retries) run
    operators: tuple[str, ...] = field(default=())  # when set, the only names an operator may act under
    # The holder signs the application document with the cloud-signature credential through the
    # core's DocumentService, where the RA is an application (its own ASP client certificate).
    application_client_cert: Path | None = None
    application_client_key: Path | None = None
    # The roots an application uploaded already signed (an external eID) must chain to (PEM files).
    application_trust_roots: tuple[Path, ...] = field(default=())
    application_font: Path | None = None  # a CJK OpenType face; default: the system's Noto Sans CJK TC
    # The pages (signserver/ra/web): the address people reach them at (links in e-mails), the
    # sessions' expiry, the attempts a form allows per client address and per account in 10 minutes.
    # Empty: http://localhost:PORT (https with tls_cert) of the port listened on.
    public_url: str = ""
    web_session_idle_seconds: int = 900  # since the session's last use
    web_session_max_seconds: int = 28800  # since signing in
    web_attempts_per_address: int = 20
    web_attempts_per_account: int = 10
    secret_key_file: Path | None = None  # the RA's secret key (seals operators' OTP seeds); default under state_dir
    # The CA (PEM) of the RA certificates an operator may sign in with: with tls_cert and tls_key,
    # the RA asks browsers for an optional client certificate.
    operator_client_ca: Path | None = None
    # Operators' passwords: argon2id's memory (KiB) and passes; OWASP's by default.
    operator_argon2_memory_kib: int = 19_456
    operator_argon2_time_cost: int = 2
    # The names shown to people (signserver/ra/branding.py): the service's (the pages' header and
    # title, the e-mails) and the certification service provider's (whom the holder applies to and
    # contacts). Empty: the neutral default of each language; a set name is used in every language.
    service_name: str = ""
    provider_name: str = ""

    def __post_init__(self) -> None:
        if self.secret_key_file is None:  # frozen: set once, here
            object.__setattr__(self, "secret_key_file", self.state_dir / "ra-secret.key")
        if not self.public_url:
            # The address listened on; with port 0 (any free port) known only once bound: listening_on.
            try:
                port = self.port
            except ValueError:
                port = 0
            if port:
                object.__setattr__(self, "public_url", self._own_url(port))
        self._check_smtp()

    def _own_url(self, port: int) -> str:
        return f"{'https' if self.tls_cert is not None else 'http'}://localhost:{port}"

    def listening_on(self, port: int) -> "RaSettings":
        """These settings once ``port`` is bound for a listen on port 0 (any free port): ``listen``
        names it, and so does ``public_url`` when it was not set."""
        return replace(self, listen=join_address(self.host, port), public_url=self.public_url or self._own_url(port))

    def pages_url(self) -> str:
        """The pages' address for the links of the e-mails: ``public_url`` (by default that of the
        port listened on); with ``listen`` on port 0 and no public_url, the address the running
        `signserver ra serve` recorded (signserver/ra/serving_address.py).

        Raises: SettingsError: neither is known (no RA of this state directory runs): a notice
        without its link would leave the holder no way to the pages.
        """
        if self.public_url:
            return self.public_url
        recorded = running_pages_url(self.state_dir)
        if not recorded:
            raise SettingsError(f"ra.public_url: not set, and no `signserver ra serve` of this state directory "
                                f"runs to say which port it took for ra.listen {self.listen} "
                                f"({serving_file(self.state_dir)}): start the RA, or set ra.public_url to the "
                                "address holders reach its pages at. Nothing was done: a notice without its "
                                "link would leave the holder no way to the pages")
        return recorded

    def _check_smtp(self) -> None:
        """Raises: SettingsError: an unknown smtp_security; smtp_username without
        smtp_password_file or the other way round; smtp_ca without TLS; a login without TLS to a
        server off this machine (AUTH PLAIN and LOGIN are base64 only: the password would cross
        the network in the clear)."""
        if self.smtp_security not in SMTP_SECURITY:
            raise SettingsError(f"ra.smtp_security: expected one of {', '.join(SMTP_SECURITY)}, "
                                f"not {self.smtp_security!r}")
        if bool(self.smtp_username) != (self.smtp_password_file is not None):
            raise SettingsError("ra.smtp_username and ra.smtp_password_file: set both (a login) or neither")
        if self.smtp_ca is not None and self.smtp_security == "none":
            raise SettingsError("ra.smtp_ca: the CAs for the SMTP server's certificate take ra.smtp_security "
                                "starttls or tls")
        if self.smtp_security == "none" and self.smtp_username and not is_loopback(self.smtp_host):
            raise SettingsError(f"ra.smtp_security: 'none' with ra.smtp_username would send the SMTP password to "
                                f"{self.smtp_host} in the clear: use starttls or tls (or a relay on this machine)")

    @property
    def application_client_files(self) -> tuple[Path, Path]:
        """The RA's application client certificate and key; by default those `signserver ca
        issue-client --role asp ra-application` writes under the state directory."""
        clients = self.state_dir / "clients"
        return (self.application_client_cert or clients / "ra-application.pem",
                self.application_client_key or clients / "ra-application-key.pem")

    @property
    def client_files(self) -> tuple[Path, Path, Path]:
        """The RA's client certificate, its key and the roots trusted for the core; by default
        those `signserver ca issue-client --role ra ra` writes under the state directory."""
        clients = self.state_dir / "clients"
        return (self.client_cert or clients / "ra.pem", self.client_key or clients / "ra-key.pem",
                self.ca_roots or clients / "ca.pem")

    @property
    def api_tls(self) -> tuple[Path, Path] | None:
        """The RA API's certificate and key, or None when it is served without TLS (on loopback only).

        Raises: SettingsError: one of tls_cert and tls_key without the other, or a listen address
        beyond loopback without them (the API carries passwords, one-time passwords and phrases).
        """
        if (self.tls_cert is None) != (self.tls_key is None):
            raise SettingsError("ra.tls_cert and ra.tls_key: set both (the RA API's certificate and its key) "
                                "or neither")
        if self.tls_cert is not None:
            return self.tls_cert, self.tls_key
        if not is_loopback(self.host):
            raise SettingsError(f"ra.listen: {self.listen} is beyond loopback, where the RA API carries holders' "
                                "passwords and codes: set ra.tls_cert and ra.tls_key, or listen on 127.0.0.1")
        return None

    @property
    def registry_client_files(self) -> tuple[Path, Path] | None:
        """The RA's client certificate and key for the registry, or None.

        Raises: SettingsError: one of registry_client_cert and registry_client_key without the other.
        """
        if (self.registry_client_cert is None) != (self.registry_client_key is None):
            raise SettingsError("ra.registry_client_cert and ra.registry_client_key: set both or neither")
        if self.registry_client_cert is None:
            return None
        return self.registry_client_cert, self.registry_client_key

    def check_operator(self, name: str) -> str:
        """``name`` (stripped) as the operator acting, when ``operators`` is empty or names it.

        Raises: SettingsError: the name is empty, or ``operators`` is set and does not name it.
        """
        name = name.strip()
        if not name:
            raise SettingsError("an operator name is required (--operator or SIGNSERVER_RA_OPERATOR)")
        if self.operators and name not in self.operators:
            raise SettingsError(f"operator {name!r} is not one of ra.operators; ask an administrator to add the name")
        return name

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'ra' / 'ra.sqlite'}"

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"ra.{key}: expected a string, not {value!r}")
    return value


def _listen(key: str, value: Any) -> str:
    """HOST:PORT, port 0 for any free port (the one bound is printed at start)."""
    text = _text(key, value)
    try:
        split_address(text)
    except ValueError as exc:
        raise SettingsError(f"ra.{key}: {exc}") from None
    return text


def _address(key: str, value: Any) -> str:
    """HOST:PORT with a port of its own (not 0)."""
    text = _listen(key, value)
    if split_address(text)[1] == 0:
        raise SettingsError(f"ra.{key}: expected HOST:PORT with a port 1-65535, for example 127.0.0.1:8450")
    return text


def _path(key: str, value: Any) -> Path:
    return Path(_text(key, value)).expanduser()


def _url(key: str, value: Any) -> str:
    text = _text(key, value)
    if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", text):
        raise SettingsError(f"ra.{key}: expected an http:// or https:// URL, not {text!r}")
    return text.rstrip("/")


def _database(key: str, value: Any) -> str:
    text = _text(key, value)
    if not re.match(r"(sqlite|postgresql(\+psycopg)?)://", text):
        raise SettingsError(f"ra.{key}: expected a sqlite:/// or postgresql+psycopg:// URL")
    return text


def _integer(low: int, high: int) -> Callable[[str, Any], int]:
    def parse(key: str, value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise SettingsError(f"ra.{key}: expected a whole number from {low} to {high}, not {value!r}")
        return value
    return parse


def _number(low: float, high: float) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not low <= number <= high:
            raise SettingsError(f"ra.{key}: expected a number from {low} to {high}, not {value!r}")
        return number
    return parse


def _paths(key: str, value: Any) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsError(f"ra.{key}: expected a list of file paths")
    return tuple(Path(item).expanduser() for item in value)


def _name(key: str, value: Any) -> str:
    text = _text(key, value).strip()
    if len(text) > 200 or not text.isprintable():
        raise SettingsError(f"ra.{key}: expected a name of at most 200 printable characters")
    return text


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise SettingsError(f"ra.{key}: expected one of {', '.join(choices)}, not {value!r}")
        return value
    return parse


def _names(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsError(f"ra.{key}: expected a list of names")
    return tuple(value)


_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "listen": _listen,
    "tls_cert": _path,
    "tls_key": _path,
    "database_url": _database,
    "core_address": _address,
    "core_server_name": _text,
    "core_timeout_seconds": _number(0.5, 300),
    "client_cert": _path,
    "client_key": _path,
    "ca_roots": _path,
    "smtp_host": _text,
    "smtp_port": _integer(1, 65535),
    "smtp_sender": _text,
    "smtp_security": _choice(*SMTP_SECURITY),
    "smtp_username": _text,
    "smtp_password_file": _path,
    "smtp_ca": _path,
    "registry_url": _url,
    "registry_timeout_seconds": _number(0.1, 300),
    "registry_attempts": _integer(1, 10),
    "registry_client_id": _text,
    "registry_api_key_file": _path,
    "registry_ca": _path,
    "registry_client_cert": _path,
    "registry_client_key": _path,
    "face_threshold": _number(0.0, 1.0),
    "notice_days": _integer(1, 3650),
    "code_seconds": _integer(30, 3600),
    "code_attempts": _integer(1, 20),
    "code_sends": _integer(1, 50),
    "code_failures": _integer(1, 100),
    "registry_lookups": _integer(1, 100),
    "face_comparisons": _integer(1, 100),
    "reuse_days": _integer(0, 365),
    "background_seconds": _number(0.05, 3600),
    "operators": _names,
    "application_client_cert": _path,
    "application_client_key": _path,
    "application_trust_roots": _paths,
    "application_font": _path,
    "public_url": _url,
    "web_session_idle_seconds": _integer(60, 86400),
    "web_session_max_seconds": _integer(300, 7 * 86400),
    "web_attempts_per_address": _integer(1, 10000),
    "web_attempts_per_account": _integer(1, 1000),
    "secret_key_file": _path,
    "operator_client_ca": _path,
    "operator_argon2_memory_kib": _integer(8, 4_194_304),
    "operator_argon2_time_cost": _integer(1, 100),
    "service_name": _name,
    "provider_name": _name,
}
_PATHS = ("client_cert", "client_key", "ca_roots", "registry_api_key_file", "application_client_cert",
          "application_client_key", "application_font", "tls_cert", "tls_key", "registry_ca",
          "registry_client_cert", "registry_client_key", "secret_key_file", "operator_client_ca",
          "smtp_password_file", "smtp_ca")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> RaSettings:
    """Read ``path`` (else ``$SIGNSERVER_CONFIG``, else ./signserver.toml when it exists), then the
    environment. Relative paths in the file are relative to the file.

    Raises: SettingsError: the file is missing or not TOML, or a key is unknown or its value bad
    (the message names the key).
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with Path(path).open("rb") as handle:
                raw = tomllib.load(handle)
        except FileNotFoundError:
            raise SettingsError(f"no configuration file at {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    section = raw.get("ra", {})
    if not isinstance(section, dict):
        raise SettingsError("ra: expected a table [ra]")
    base = Path(path).parent if path is not None else Path(".")
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in _KEYS:
            raise SettingsError(f"ra.{key}: unknown setting; known: {', '.join(sorted(_KEYS))}")
        values[key] = _KEYS[key](key, value)
        if key in _PATHS and not values[key].is_absolute():
            values[key] = base / values[key]
        if key == "application_trust_roots":
            values[key] = tuple(p if p.is_absolute() else base / p for p in values[key])
    for key, parse in _KEYS.items():
        if ENV_PREFIX + key.upper() in environ:
            values[key] = parse(key, environ[ENV_PREFIX + key.upper()])
    _warn_of_unknown_variables(environ)
    state_dir = Path("var")  # as the core: relative to the working directory unless the file says
    if "state_dir" in raw:
        state_dir = Path(str(raw["state_dir"])).expanduser()
        state_dir = state_dir if state_dir.is_absolute() else base / state_dir
    if environ.get(STATE_DIR_ENV):
        state_dir = Path(environ[STATE_DIR_ENV])
    return RaSettings(state_dir=state_dir, **values)


def _warn_of_unknown_variables(environ: Mapping[str, str]) -> None:
    """Say which ``SIGNSERVER_RA_*`` variables are no setting (a mistyped name would otherwise be
    ignored without a word; the core leaves these names to the RA), with the setting it is
    closest to. Only names are said: a value may be a secret."""
    known = sorted({ENV_PREFIX + key.upper() for key in _KEYS} | OTHER_VARIABLES)
    for name in sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        log.warning("the environment variable %s is no setting of the registration authority and is ignored%s",
                    name, f" (did you mean {close[0]}?)" if close else "")
