"""A real CSC front (uvicorn over HTTPS on a free loopback port) on a service of its own, with an
initialised CA, an application and certified holders; shared by the CSC tests of a module."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import ssl
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signserver.accounts import otp
from signserver.accounts.model import AccountKind
from signserver.blocking_calls import BlockingCalls
from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock
from signserver.grpc_api.tls import ensure_server_certificate
from signserver.hsm.algorithms import KeyAlgorithm
from signserver.hsm.module import pkcs11_lock_is_free
from signserver.http.csc.context import CscContext
from signserver.http.csc.serving import CscFront
from signserver.secret import Secret
from signserver.service import SignService
from tests.conftest import PASSWORD, enrol, service_with_ca


class CscServerThread:
    """A CscFront on its own event loop in a background thread, with the pools a worker has."""

    def __init__(self, service: SignService, tls, document_threads: int = 2):
        self.context = CscContext(service=service,
                                  hsm=BlockingCalls("csc-hsm", threads=2, free_now=pkcs11_lock_is_free),
                                  accounts=BlockingCalls("csc-accounts", threads=4),
                                  documents=BlockingCalls("csc-documents", threads=document_threads))
        self.tls = tls
        self._front = CscFront("127.0.0.1:0", tls, self.context)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "CscServerThread":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._front.start(), self._loop).result(30)
        self.url = f"https://127.0.0.1:{self.port}"
        return self

    def begin_stop(self) -> concurrent.futures.Future:
        """Begin the stop a worker makes on SIGTERM: document jobs not yet started are refused from
        now on, and the front stops accepting connections and lets requests in flight finish.
        Returns once the refusal holds; the future is done when the front has stopped."""
        self.context.documents.stop_starting()
        return asyncio.run_coroutine_threadsafe(self._front.stop(), self._loop)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._front.stop(), self._loop).result(30)
        for pool in (self.context.hsm, self.context.accounts, self.context.documents):
            pool.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def client(self, **options) -> httpx.Client:
        """An HTTPS client trusting the server's certificate (no credentials)."""
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.tls.cert_file)),
                            timeout=60, **options)


@dataclass
class Holder:
    """An enrolled account with a certified cloud-signature credential."""

    username: str
    password: str
    seed: str
    credential_id: str  # the certified credential
    certificate: x509.Certificate
    clock: ManualClock

    def otp(self) -> str:
        """A fresh one-time password: the clock moves on a time step first (each step's code
        is accepted once)."""
        self.clock.advance(seconds=30)
        return otp.code_at(self.seed, self.clock.now())


@pytest.fixture(scope="module")
def csc_clock() -> ManualClock:
    # Starts at the real time: validators check certificates against their own clock.
    return ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))


@pytest.fixture(scope="module")
def csc_service(config, tmp_path_factory, csc_clock) -> SignService:
    """A service with its own database and an initialised CA."""
    service = service_with_ca(config, tmp_path_factory.mktemp("csc") / "signserver.db", csc_clock)
    return service


@pytest.fixture(scope="module")
def csc_server(config, csc_service, tmp_path_factory):
    """The running front; client certificates from the service's CA are accepted when presented."""
    # TLS material of its own: a `signserver serve` of another test rewrites the state directory's.
    folder = tmp_path_factory.mktemp("csc-tls")
    tls = replace(config.tls, cert_file=folder / "server.pem", key_file=folder / "server-key.pem", explicit=False)
    ensure_server_certificate(tls, "127.0.0.1")
    bundle = folder / "client-ca.pem"
    bundle.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in csc_service.ca.chain()))
    with CscServerThread(csc_service, replace(tls, client_ca_file=bundle, mutual=False)) as server:
        yield server


@pytest.fixture(scope="module")
def csc_application(csc_service):
    """An application serving every account, OTP required: (Application, API key)."""
    return csc_service.applications.create("csc-app")


def certified_holder(service: SignService, clock: ManualClock,
                     key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> Holder:
    """Enrol an account and issue it a cloud-signature certificate (a new credential)."""
    created, seed = enrol(service, kind=AccountKind.CORPORATE, organisation="Example Lda", department="Legal",
                          title="Director", revocation_phrase=Secret("Phrase2026ok"), key_algorithm=key_algorithm)
    issued = service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    return Holder(username=created.account.username, password=PASSWORD, seed=seed,
                  credential_id=issued.credential_id, certificate=service.ca.signing_certificate(issued.credential_id),
                  clock=clock)


@pytest.fixture
def holder(csc_service, csc_clock) -> Holder:
    """A fresh certified holder for each test (its lockout and OTP steps are its own)."""
    return certified_holder(csc_service, csc_clock)


def basic(name: str, api_key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{api_key}".encode()).decode()}


@pytest.fixture(scope="module")
def access_token(csc_server, csc_application) -> str:
    """A bearer token of the application, from auth/login."""
    application, api_key = csc_application
    with csc_server.client() as client:
        answer = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key), json={})
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


@pytest.fixture
def csc_client(csc_server, access_token):
    """An HTTPS client of the application, its bearer token on every request."""
    with csc_server.client(headers={"Authorization": f"Bearer {access_token}"}) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ca_root(service: SignService) -> x509.Certificate:
    return service.ca.chain()[-1]


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def client_certificate_context(server: CscServerThread, service: SignService, application_name: str,
                               folder: Path) -> ssl.SSLContext:
    """Register ``application_name`` with a fresh client certificate from the service's CA (creating
    the application when it does not exist): a TLS context trusting the server and presenting it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from signserver.accounts.applications import certificate_fingerprint

    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate("client-asp", application_name, key.public_key(), "operator:test")
    service.applications.set_client_certificate(application_name, certificate_fingerprint(issued.certificate))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client.pem").write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "client-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(cafile=str(server.tls.cert_file))
    context.load_cert_chain(folder / "client.pem", folder / "client-key.pem")
    return context
