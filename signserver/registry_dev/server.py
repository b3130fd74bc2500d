"""Serving the reference registry: ``main`` (the program) and :class:`RunningRegistry` (the same
server in a thread, for tests and development tools)."""

from __future__ import annotations

import argparse
import logging
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from signserver.registry_dev.app import RegistryState, registry_app
from signserver.registry_dev.identities import FixtureError, load_identities

log = logging.getLogger(__name__)

SAMPLE_FIXTURES = Path(__file__).parent / "fixtures" / "registry.toml"


class StartError(Exception):
    """The registry cannot start: the sentence says why (a setting, a file, an address)."""


@dataclass(frozen=True)
class TlsFiles:
    """HTTPS for the registry: its certificate and key (PEM), and the CA whose client
    certificates it then requires (mutual TLS), if any."""

    certificate: Path
    private_key: Path
    client_ca: Path | None = None


def read_api_keys(path: Path) -> tuple[str, ...]:
    """The API keys in ``path``: one a line; blank lines and lines starting with # are skipped.

    Raises: StartError: the file is unreadable or holds no key.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartError(f"API key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    keys = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise StartError(f"API key file {path} holds no key")
    return keys


def split_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) as (host, port); port 0 picks a free one.

    Raises: StartError: the address is malformed.
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise StartError(f"--listen {address!r}: expected HOST:PORT")
    return host, int(port)


def bound_socket(address: str) -> socket.socket:
    """A listening socket on ``address``.

    Raises: StartError: the address is malformed or cannot be bound.
    """
    host, port = split_listen(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise StartError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


def uvicorn_config(state: RegistryState, tls: TlsFiles | None) -> uvicorn.Config:
    """uvicorn's settings for the app over ``state`` (HTTPS when ``tls`` is given)."""
    options: dict[str, object] = {}
    if tls is not None:
        options = {"ssl_certfile": str(tls.certificate), "ssl_keyfile": str(tls.private_key)}
        if tls.client_ca is not None:
            options.update(ssl_ca_certs=str(tls.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return uvicorn.Config(registry_app(state), lifespan="off", log_config=None, access_log=False,
                          server_header=False, timeout_graceful_shutdown=2, **options)


class RunningRegistry:
    """The reference registry served by uvicorn in a background thread on ``listen`` (port 0: a
    free one). Use as a context manager; ``url`` is its base URL, ``state`` its identities, fault
    switch and request log.

    Raises (on enter): StartError: the address cannot be bound or the TLS files cannot be used.
    """

    def __init__(self, state: RegistryState, *, listen: str = "127.0.0.1:0", tls: TlsFiles | None = None):
        self.state = state
        self._listen, self._tls = listen, tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def __enter__(self) -> "RunningRegistry":
        sock = bound_socket(self._listen)
        try:
            config = uvicorn_config(self.state, self._tls)
            config.load()  # reads the TLS files now, where an error can still be reported
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise StartError(f"TLS files: {exc}") from None
        host, port = sock.getsockname()[:2]
        self.url = f"{'https' if self._tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="registry-dev", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not self._server.started:
            raise StartError(f"the registry did not start on {self.url}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (requests in flight get a short grace)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="signserver ra registry-dev",
        description="A reference identity registry with a face comparison, for development and tests "
                    "(the contract: docs/registry-contract.md).")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve on (port 0: any free one)")
    parser.add_argument("--fixtures", type=Path, default=SAMPLE_FIXTURES, metavar="FILE",
                        help="identities and photos (TOML; default: the shipped sample)")
    parser.add_argument("--api-key-file", type=Path, metavar="FILE",
                        help="API keys the RA must present (Authorization: Bearer), one a line; none: no authentication")
    parser.add_argument("--certificate", type=Path, metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--private-key", type=Path, metavar="PEM", help="the certificate's private key")
    parser.add_argument("--client-ca", type=Path, metavar="PEM",
                        help="require client certificates issued by this CA (mutual TLS)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    arguments = parser.parse_args(argv)
    if (arguments.certificate is None) != (arguments.private_key is None):
        parser.error("--certificate and --private-key go together")
    if arguments.client_ca is not None and arguments.certificate is None:
        parser.error("--client-ca needs --certificate and --private-key")
    return arguments


def main(argv: list[str]) -> int:
    """Serve the reference registry until interrupted (SIGINT/SIGTERM). Prints
    ``registry-dev listening on URL`` once it accepts requests. Returns 0, or 2 when it cannot
    start (the reason on stderr)."""
    arguments = _arguments(argv)
    logging.basicConfig(level=arguments.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tls = (TlsFiles(arguments.certificate, arguments.private_key, arguments.client_ca)
           if arguments.certificate is not None else None)
    try:
        identities = load_identities(arguments.fixtures)
        api_keys = read_api_keys(arguments.api_key_file) if arguments.api_key_file is not None else ()
        sock = bound_socket(arguments.listen)
    except (FixtureError, StartError) as exc:
        print(f"registry-dev: {exc}", file=sys.stderr)
        return 2
    if not api_keys:
        log.warning("no --api-key-file: the registry answers anyone")
    state = RegistryState(identities, api_keys)
    try:
        config = uvicorn_config(state, tls)
        config.load()
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        print(f"registry-dev: TLS files: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    server = uvicorn.Server(config)
    print(f"registry-dev listening on {url} ({len(identities)} identities)", flush=True)
    server.run(sockets=[sock])
    return 0
