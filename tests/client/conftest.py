"""One server, one CA, one holder with a certificate, and one application, for the client's tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from signserver.accounts.model import AccountKind, NewAccount
from signserver.ca.authority import CertificateRequest
from signserver.clock import SystemClock
from signserver.client import SignServerClient
from signserver.service import SignService
from tests.conftest import enrol, service_with_ca
from tests.grpc_api.conftest import ServerThread


@dataclass
class ClientWorld:
    service: SignService
    server: ServerThread
    holder: NewAccount
    otp_seed: str
    api_key: str  # an application that does not require the OTP
    otp_api_key: str  # one that does

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def root_certificates(self) -> bytes:
        return self.server.config.tls.cert_file.read_bytes()

    def client(self, api_key: str | None = None) -> SignServerClient:
        return SignServerClient(self.address, root_certificates=self.root_certificates,
                                api_key=api_key or self.api_key, timeout=120)


@pytest.fixture(scope="module")
def world(config, tmp_path_factory):
    """Real time: the signed documents' certificates are checked against the real clock."""
    service = service_with_ca(config, tmp_path_factory.mktemp("client") / "signserver.db", SystemClock())
    holder, seed = enrol(service, holder_name="Weng Sam LUZIA KUAN", kind=AccountKind.CORPORATE,
                         organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", holder.account.username), "ra:test")
    _, api_key = service.applications.create("client-app", otp_required=False)
    _, otp_api_key = service.applications.create("client-otp-app")
    with ServerThread(config, service) as server:
        yield ClientWorld(service, server, holder, seed, api_key, otp_api_key)


@pytest.fixture(scope="module")
def client(world):
    with world.client() as client:
        yield client
