"""The RA running as its own process, for the tests that drive it from outside (tests/ra/test_ra_process.py
over its JSON API and commands, tests/browser through its pages): a real served core (mutual TLS)
with the RA's and the ra-application's client certificates, the reference registry and an SMTP
inbox on loopback, `signserver ra serve` started and stopped, the operator's `signserver ra`
commands, and the holder's steps over the JSON API.

The fixtures here (``inbox``, ``eid``, ``ra_files``, ``core``, ``ra_process``) are imported by the
modules that use them; they need the CA's fixtures (``served``, ``ca_service``, ``ca_clock``) and
the reference registry's (``registry``) beside them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signserver.client import CertificateClient, NewAccount, NotFound
from tests import cli_forkserver
from tests import conftest
from tests.ca.test_certificate_service import client_pair
from tests.conftest import empty_database_url, LOOPBACK_TLS, smtp_on_loopback
from tests.ra.conftest import KUAN, photo
from tests.ra.test_application import ExternalEid, otp_now

SIGNSERVER = Path(sys.executable).parent / "signserver"
PASSWORD = "Current-pass-1"
OPERATOR = "dsaj-operator"  # the name the operator's commands act under (SIGNSERVER_RA_OPERATOR)


class Inbox(conftest.Inbox):
    """The SMTP server's inbox, waited on for a message."""

    def wait_for(self, recipient: str, subject_part: str, after: int = 0, timeout: float = 60):
        """The first message from index ``after`` on to ``recipient`` whose subject holds
        ``subject_part``. Raises: AssertionError: none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages[after:]:
                if message["To"] == recipient and subject_part in message["Subject"]:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no e-mail '{subject_part}' to {recipient}")


@pytest.fixture(scope="module")
def inbox():
    handler = Inbox()
    controller = smtp_on_loopback(handler)
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture(scope="module")
def eid(ca_clock):
    """The external eID the qualified certificate's holder signs the application with."""
    return ExternalEid(ca_clock.now())


@pytest.fixture(scope="module")
def ra_files(served, ca_service, tmp_path_factory, eid):
    """The RA's files: its client certificate and key as the core's RA (ra.pem), as the core's
    ra-application application (ra-application.pem), the external eID's root and the core's roots."""
    folder = tmp_path_factory.mktemp("ra-tls")
    _, certificate, key = client_pair(ca_service, "client-ra", "ra-process-tests")
    (folder / "ra.pem").write_bytes(certificate)
    (folder / "ra-key.pem").write_bytes(key)
    # The RA is also an application of the core: the holder signs the application through it.
    issued, certificate, key = client_pair(ca_service, "client-asp", "ra-application-process")
    ca_service.applications.set_client_certificate(
        "ra-application-process", hashlib.sha256(issued.certificate.public_bytes(serialization.Encoding.DER)).hexdigest())
    (folder / "ra-application.pem").write_bytes(certificate)
    (folder / "ra-application-key.pem").write_bytes(key)
    eid.root_file(folder).rename(folder / "eid-root.pem")
    (folder / "roots.pem").write_bytes(served.config.tls.cert_file.read_bytes()
                                       + served.config.tls.client_ca_file.read_bytes())
    return folder


@pytest.fixture(scope="module")
def core(served, ra_files, ca_clock):
    """The core's CertificateService as the RA reaches it (the RA's client certificate)."""
    with CertificateClient(f"localhost:{served.port}", root_certificates=(ra_files / "roots.pem").read_bytes(),
                           client_certificate=(ra_files / "ra.pem").read_bytes(),
                           client_key=(ra_files / "ra-key.pem").read_bytes(), timeout_seconds=60,
                           clock=ca_clock) as client:
        yield client


class Served:
    """An app served by uvicorn in a thread on a free loopback port (over TLS with ``tls``:
    uvicorn's TLS options and HTTP protocol, as the RA serves)."""

    def __init__(self, app, tls: tuple[dict, object] | None = None):
        options, protocol = tls or ({}, "auto")
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                                     http=protocol, **options))
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen()
        port = self._socket.getsockname()[1]
        self.url = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> "Served":
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.01)
        assert self._server.started, "the RA's pages did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()


class Ran(NamedTuple):
    """What a `signserver ra` command run in this process gave."""

    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def ra_in_process(config: Path, capsys, operator: str):
    """A function that runs `signserver ra --config CONFIG ARGS --operator OPERATOR` in this
    process; its ``secrets`` are written, one a line, to a pipe whose reading end is given with
    --secrets-fd."""
    from signserver.ra import cli

    def run(*arguments: str, secrets: tuple[str, ...] | None = None) -> Ran:
        capsys.readouterr()
        extra, fd = [], None
        if secrets is not None:
            fd, writer = os.pipe()
            os.write(writer, "".join(f"{s}\n" for s in secrets).encode())
            os.close(writer)
            extra = ["--secrets-fd", str(fd)]
        try:
            code = cli.main(["--config", str(config), *arguments, *extra, "--operator", operator])
        finally:
            if fd is not None:
                os.close(fd)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)
    return run


def wait_until_answering(process: subprocess.Popen | cli_forkserver.ForkedProcess, base: str, verify,
                         log: Path) -> None:
    """Wait until the RA at ``base`` answers /healthz (``verify``: httpx's TLS verification).

    Raises: AssertionError: it exited or did not answer within 60 seconds (it is then killed; its
    output is in the message)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the RA did not start: " + log.read_text())
        time.sleep(0.1)


LISTENING = re.compile(r"signserver RA listening on https?://\S+:(\d+)$", re.MULTILINE)


def bound_port(process: subprocess.Popen | cli_forkserver.ForkedProcess, log: Path, timeout: float = 60) -> int:
    """The port a `signserver ra serve` started with ``listen = "HOST:0"`` says it listens on
    (its line "signserver RA listening on URL", in ``log``).

    Raises: AssertionError: it exited or said nothing within ``timeout`` seconds (it is then
    killed; its output is in the message)."""
    deadline = time.monotonic() + timeout
    while True:
        found = LISTENING.search(log.read_text() if log.exists() else "")
        if found:
            return int(found.group(1))
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the RA did not say where it listens: " + (log.read_text() if log.exists() else ""))
        time.sleep(0.05)


def start_ra(folder: Path, served, ra_files, registry, inbox, database: str = "") -> cli_forkserver.ForkedProcess:
    """`signserver ra serve` on a port it binds itself (listen port 0), once it answers; its own
    database (``database``, else a new one for ``folder``). The process carries ``base``
    (http://127.0.0.1:PORT), ``public_url`` (http://localhost:PORT, the RA's own default for the
    port it bound: a browser keeps Secure cookies on plain HTTP for localhost), ``config``, ``env``,
    ``database`` and ``log`` (the process's output). ``config`` keeps port 0 and no public_url: the
    `signserver ra` commands run with it link their notices to the port the running RA recorded.

    Raises: AssertionError: the RA did not answer within 60 seconds (its output is in the message).
    """
    database = database or empty_database_url(folder / "ra.sqlite")
    config = folder / "signserver.toml"
    settings = _ra_settings(served, ra_files, registry, inbox, database)
    config.write_text(f'{settings}listen = "127.0.0.1:0"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_")}
    env["SIGNSERVER_RA_OPERATOR"] = OPERATOR
    log = folder / f"ra-{time.monotonic_ns()}.log"  # a file, not a pipe: nobody reads a pipe while the tests run
    process = cli_forkserver.popen([str(SIGNSERVER), "--config", str(config), "ra", "serve"], env=env, cwd=folder,
                                   output=log)
    port = bound_port(process, log)
    base, public_url = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    wait_until_answering(process, base, LOOPBACK_TLS, log)
    process.base, process.config, process.env, process.database = base, config, env, database
    process.public_url, process.log = public_url, log
    return process


def _ra_settings(served, ra_files, registry, inbox, database: str) -> str:
    """The RA's settings file but its listen address and public_url (the [ra] section ends it)."""
    return f"""
state_dir = "state"
[ra]
database_url = "{database}"
core_address = "localhost:{served.port}"
client_cert = "{ra_files / 'ra.pem'}"
client_key = "{ra_files / 'ra-key.pem'}"
ca_roots = "{ra_files / 'roots.pem'}"
application_client_cert = "{ra_files / 'ra-application.pem'}"
application_client_key = "{ra_files / 'ra-application-key.pem'}"
application_trust_roots = ["{ra_files / 'eid-root.pem'}"]
smtp_host = "127.0.0.1"
smtp_port = {inbox.port}
smtp_sender = "ra@example.mo"
registry_url = "{registry.url}"
registry_timeout_seconds = 2
registry_attempts = 1
core_timeout_seconds = 10
face_threshold = 0.8
notice_days = 3650
background_seconds = 0.2
"""


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process is still there after 30 seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)


@pytest.fixture(scope="module")
def ra_process(served, ra_files, registry, inbox, tmp_path_factory):
    process = start_ra(tmp_path_factory.mktemp("ra-process"), served, ra_files, registry, inbox)
    yield process
    stop(process)


def ra_command(ra_process, *arguments: str, input: str | None = None) -> dict | list:
    """`signserver ra --json ARGUMENTS` against the RA's settings, as the operator OPERATOR, with
    ``input`` on its standard input (for --secrets-fd 0); its output read as JSON.

    Raises: AssertionError: the command failed (its error output is the message)."""
    result = cli_forkserver.run([str(SIGNSERVER), "--config", str(ra_process.config), "ra", "--json", *arguments],
                                env=ra_process.env, input=input, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def register(ra_process, account: str, emails: tuple[str, ...] = KUAN.emails) -> None:
    """The RA's record of the holder of ``account``: KUAN's registered identity (as the reference
    registry holds it) and ``emails``."""
    ra_command(ra_process, "holder", account, "--id-type", KUAN.id_type, "--id-number", KUAN.id_number,
               "--name", KUAN.name, "--birth-date", KUAN.birth_date.isoformat(),
               *[f"--email={address}" for address in emails])


def create_account(core, account: str, password: str = PASSWORD, emails: tuple[str, ...] = KUAN.emails):
    """A new account for KUAN in the core, its keys P-256 (the RA never sees a key: RSA-2048, the
    server's default, would only cost the token a tenth of a second or more per account); returns
    the NewAccountResult (its OTP URI, recovery code)."""
    return core.create_account(NewAccount(account=account, holder_name=KUAN.name, emails=emails,
                                          password=password, kind="government", organisation="DSAJ",
                                          department="Legal", revocation_phrase="OldPhrase2024",
                                          key_algorithm="ec-p256"))


def password_set(core, account: str) -> int:
    """When the password the core holds for ``account`` was set (epoch seconds), as the RA's
    sign-in page keeps it in a holder's session; the account is made first when the core has none,
    as only an account can sign in."""
    try:
        standing = core.holder_standing(account)
    except NotFound:
        create_account(core, account)
        standing = core.holder_standing(account)
    return int(standing.password_changed_at.timestamp())


def issue(core, account: str, profile: str):
    """A certificate of ``profile`` for ``account``: a key in the core for the cloud-signature
    profiles, else a request made on the holder's card."""
    csr = None if profile.startswith("cloud-signature") else card_csr()
    return core.issue_certificate(account, profile, csr=csr)


def enrol(core, account: str, profile: str):
    """A new account with one certificate of ``profile``; returns the certificate issued."""
    create_account(core, account)
    return issue(core, account, profile)


def card_csr() -> bytes:
    """A PKCS#10 request (DER) for a key made on the holder's card."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, KUAN.name)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))


def confirm_with_notice(ra_process, inbox, serial: str, recipient: str = KUAN.emails[0]) -> tuple[dict, str]:
    """The operator confirms the renewal of ``serial`` (`signserver ra confirm-renewal`); returns the
    renewal as the command shows it and the text of the notice e-mail that goes out at once."""
    seen = len(inbox.messages)
    confirmed = ra_command(ra_process, "confirm-renewal", serial)
    notice = inbox.wait_for(recipient, "Certificate renewal notice", seen).get_content()
    return confirmed, notice


# --- the holder's steps over the JSON API --------------------------------------------------------

TOKENS: dict[str, str] = {}  # renewal id -> the holder token its notice e-mail carried
TOKEN_LINE = re.compile(r"Access key:\s*([A-Za-z0-9_\-]{20,})")  # the notice's holder token


def confirm(ra_process, inbox, serial: str) -> dict:
    """The operator confirms the renewal of ``serial``; the holder token of the notice that goes
    out at once is kept for the holder's calls (``post``, ``get``)."""
    confirmed, notice = confirm_with_notice(ra_process, inbox, serial)
    remember_token(confirmed["id"], notice)
    return confirmed


def remember_token(renewal_id: str, notice: str) -> None:
    """Keep the holder token of the renewal's notice for the holder's calls (``post``, ``get``).
    Raises: AssertionError: the notice carries none."""
    found = TOKEN_LINE.search(notice)
    assert found, notice
    TOKENS[renewal_id] = found.group(1)


def holder_headers(path: str) -> dict[str, str]:
    """``Authorization: Bearer`` with the holder token of the renewal ``path`` names, if known."""
    named = re.match(r"/renewals/(\w+)", path)
    token = TOKENS.get(named.group(1), "") if named else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def post(ra_process, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(ra_process.base + path, timeout=60, headers={**holder_headers(path), **(headers or {})},
                      **kwargs, verify=LOOPBACK_TLS)


def get(ra_process, path: str, timeout: float = 30) -> httpx.Response:
    return httpx.get(ra_process.base + path, timeout=timeout, headers=holder_headers(path), verify=LOOPBACK_TLS)


def verify_identity(ra_process, inbox, renewal_id: str, emails: tuple[str, ...] = KUAN.emails) -> dict:
    """Consent, the code sent to each of ``emails`` (the holder's), the registry, the photo and the
    agreement, over the JSON API: the renewal then awaits its application."""
    base = f"/renewals/{renewal_id}"
    assert post(ra_process, base + "/consent").status_code == 200
    for address in emails:
        seen = len(inbox.messages)
        assert post(ra_process, base + "/codes", json={"address": address}).json() == \
            {"sent": True, "already_verified": False}
        code = re.search(r"\b(\d{6})\b", inbox.wait_for(address, "Verification code", seen).get_content()).group(1)
        assert post(ra_process, base + "/codes/verify", json={"address": address, "code": code}).status_code == 200
    assert post(ra_process, base + "/registry").json()["steps"]["registry_match"] is True
    face = post(ra_process, base + "/face", content=photo("kuan-weng-sam.png"), headers={"Content-Type": "image/png"})
    assert face.status_code == 200 and face.json()["steps"]["face"] is True
    agreed = post(ra_process, base + "/agreement", json={"accepted": True})
    assert agreed.status_code == 200
    assert agreed.json()["state"] == "awaiting_application" and agreed.json()["pending_list"] == "identity"
    return agreed.json()


def application_document(ra_process, renewal_id: str) -> bytes:
    response = get(ra_process, f"/renewals/{renewal_id}/application", timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.content).hexdigest()
    return response.content


def sign_application(ra_process, renewal_id: str, account: str, ca_service, ca_clock) -> dict:
    """The holder signs the application with the cloud-signature credential (password and OTP)."""
    application_document(ra_process, renewal_id)
    signed = post(ra_process, f"/renewals/{renewal_id}/application/sign",
                  json={"password": PASSWORD, "otp": otp_now(ca_service, ca_clock, account)})
    assert signed.status_code == 200, signed.text
    return signed.json()
