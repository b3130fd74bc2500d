"""A caller's identity follows the CA: a client certificate this CA revoked, or one expired, stops
working within seconds on new and open connections, for applications and RAs alike; an API key
beside a certificate must be the same application's."""

from __future__ import annotations

import datetime
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event

from signserver.accounts.applications import certificate_fingerprint
from signserver.ca.client_status import STATUS_SECONDS, presented
from signserver.clock import ManualClock
from signserver.config import Config, ServerConfig, TlsConfig
from signserver.grpc_api.server import bootstrap, served_config
from signserver.service import SignService
from signserver.v1 import (account_pb2, account_pb2_grpc, certificate_pb2, certificate_pb2_grpc, info_pb2, info_pb2_grpc,
                           signing_pb2, signing_pb2_grpc)
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread

PEM = serialization.Encoding.PEM
WAIT_SECONDS = 10.0  # far above STATUS_SECONDS, so a loaded machine does not fail the tests


def real_now() -> datetime.datetime:
    # TLS checks certificates against the real time: the server's clock starts there.
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


@dataclass
class Ca:
    config: Config  # as `serve` serves it: mutual TLS with this CA's client certificates
    database: Path
    holder: str


@dataclass
class World:
    service: SignService
    clock: ManualClock
    server: ServerThread
    holder: str


@pytest.fixture(scope="module")
def ca(config, tmp_path_factory) -> Ca:
    state = tmp_path_factory.mktemp("identity")
    tls = TlsConfig(cert_file=state / "tls" / "server.pem", key_file=state / "tls" / "server-key.pem",
                    client_ca_file=None, explicit=False, mutual=True)
    raw = replace(config, state_dir=state, tls=tls, server=ServerConfig("127.0.0.1:0", False))
    setup = service_with(config, state / "signserver.db", ManualClock(real_now()))
    bootstrap(raw, setup)
    holder, _ = enrol(setup)
    served = served_config(raw)
    assert served.tls.client_ca_file is not None
    return Ca(config=served, database=state / "signserver.db", holder=holder.account.username)


@pytest.fixture
def world(ca, config) -> World:
    """A server over the shared CA database, with a clock of its own that the test may move."""
    clock = ManualClock(real_now())
    service = service_with(config, ca.database, clock)
    with ServerThread(ca.config, service) as server:
        yield World(service=service, clock=clock, server=server, holder=ca.holder)


def client_pair(service: SignService, profile: str, days: int = 825):
    name = f"{profile}-{uuid.uuid4().hex[:8]}"
    key = ec.generate_private_key(ec.SECP256R1())
    issued = service.ca.issue_service_certificate(profile, name, key.public_key(), "operator:test", days=days)
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return issued, issued.certificate.public_bytes(PEM), key_pem


def application_pair(service: SignService, days: int = 825):
    """A client certificate registered to a new application; returns the issued certificate, its
    PEM, its key's PEM and the application's API key."""
    issued, certificate, key = client_pair(service, "client-asp", days)
    _, api_key = service.applications.create(f"app-{uuid.uuid4().hex[:8]}",
                                              client_certificate_sha256=certificate_fingerprint(issued.certificate))
    return issued, certificate, key, api_key


def channel_for(server: ServerThread, certificate: bytes, key: bytes) -> grpc.Channel:
    root = server.config.tls.cert_file.read_bytes() + server.config.tls.client_ca_file.read_bytes()
    credentials = grpc.ssl_channel_credentials(root, private_key=key, certificate_chain=certificate)
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def account_status(channel: grpc.Channel, account: str, api_key: str | None = None):
    """A call any authenticated application may make about any account name."""
    return account_pb2_grpc.AccountServiceStub(channel).GetAccountStatus(
        account_pb2.GetAccountStatusRequest(account=account),
        metadata=[("x-api-key", api_key)] if api_key else [], timeout=30)


def list_certificates(channel: grpc.Channel, account: str):
    return certificate_pb2_grpc.CertificateServiceStub(channel).ListCertificates(
        certificate_pb2.ListCertificatesRequest(account=account), timeout=30)


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def refused_within(call, seconds: float = WAIT_SECONDS) -> grpc.RpcError:
    """Call until the server refuses with UNAUTHENTICATED; fail when it has not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                return error
            raise
        assert time.monotonic() < deadline, f"still accepted {seconds} s later"
        time.sleep(0.1)


# --- applications ---------------------------------------------------------------------------


def test_a_revoked_application_certificate_stops_working_on_open_and_new_connections(world):
    issued, certificate, key, _ = application_pair(world.service)
    with channel_for(world.server, certificate, key) as channel:
        assert account_status(channel, world.holder).status  # the caches now know it
        world.service.ca.revoke(issued.serial, "keyCompromise", "operator:test")
        refused = refused_within(lambda: account_status(channel, world.holder))
        assert "revoked" in refused.details()
        authorize = signing_pb2_grpc.SigningServiceStub(channel).Authorize
        assert refusal(lambda: authorize(signing_pb2.AuthorizeRequest(account=world.holder), timeout=30)).code() \
            is grpc.StatusCode.UNAUTHENTICATED
    with channel_for(world.server, certificate, key) as fresh:
        assert refusal(lambda: account_status(fresh, world.holder)).code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_revocation_by_another_worker_is_seen_within_seconds(world, ca, config):
    issued, certificate, key, _ = application_pair(world.service)
    with channel_for(world.server, certificate, key) as channel:
        assert account_status(channel, world.holder).status
        # Another worker's service (or another node's) revokes it in the shared database: this
        # server's caches learn it only from the records.
        other = service_with(config, ca.database, ManualClock(real_now()))
        other.ca.revoke(issued.serial, "affiliationChanged", "operator:test")
        refused_within(lambda: account_status(channel, world.holder))


def test_an_expired_application_certificate_is_refused_at_once(world):
    _, certificate, key, _ = application_pair(world.service, days=1)
    with channel_for(world.server, certificate, key) as channel:
        assert account_status(channel, world.holder).status
        world.clock.advance(days=2)  # the server's time: TLS, on the real time, still accepts it
        refused = refusal(lambda: account_status(channel, world.holder))
        assert refused.code() is grpc.StatusCode.UNAUTHENTICATED and "expired" in refused.details()
    with channel_for(world.server, certificate, key) as fresh:
        assert refusal(lambda: account_status(fresh, world.holder)).code() is grpc.StatusCode.UNAUTHENTICATED


def test_an_api_key_beside_a_certificate_must_be_the_same_applications(world):
    _, certificate, key, own_key = application_pair(world.service)
    other, other_key = world.service.applications.create(f"app-{uuid.uuid4().hex[:8]}")
    _, unregistered, unregistered_key = client_pair(world.service, "client-asp")
    with channel_for(world.server, certificate, key) as channel:
        assert account_status(channel, world.holder, api_key=own_key).status
        mismatch = refusal(lambda: account_status(channel, world.holder, api_key=other_key))
        unknown = refusal(lambda: account_status(channel, world.holder, api_key="ssk_" + "x" * 43))
    with channel_for(world.server, unregistered, unregistered_key) as channel:
        nobody = refusal(lambda: account_status(channel, world.holder, api_key=other_key))
    for refused in (mismatch, unknown, nobody):
        assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
        assert other.name not in refused.details()
    # One sentence for every case: it does not tell which of the two is whose, or unknown.
    assert mismatch.details() == unknown.details() == nobody.details()


def test_a_certificate_status_is_read_once_in_a_few_seconds_not_per_call(world):
    _, certificate, key, _ = application_pair(world.service)
    reads = _count_reads(world.service, ("certificates", "authorities", "applications"))
    with channel_for(world.server, certificate, key) as channel:
        started = time.monotonic()
        for _ in range(30):
            account_status(channel, world.holder)
        elapsed = time.monotonic() - started
    # One read of the status and one of the application per period of each cache, at most.
    periods = int(elapsed // STATUS_SECONDS) + 1
    assert len(reads) <= 4 * periods, reads


# --- registration authorities ---------------------------------------------------------------


def test_a_revoked_ra_certificate_stops_working_on_an_open_connection(world):
    issued, certificate, key = client_pair(world.service, "client-ra")
    with channel_for(world.server, certificate, key) as channel:
        list_certificates(channel, world.holder)
        world.service.ca.revoke(issued.serial, "keyCompromise", "operator:test")
        assert "revoked" in refused_within(lambda: list_certificates(channel, world.holder)).details()
    with channel_for(world.server, certificate, key) as fresh:
        assert refusal(lambda: list_certificates(fresh, world.holder)).code() is grpc.StatusCode.UNAUTHENTICATED


def ra_request(request, clock):
    """``request`` as an RA sends it: a fresh nonce, and the time it was made."""
    request.nonce = secrets.token_urlsafe(24)
    request.requested_at.FromDatetime(clock.now().astimezone(datetime.timezone.utc).replace(tzinfo=None))
    return request


def test_an_ra_revokes_holders_certificates_only(world):
    """Applications' and RAs' client certificates and the CA's service certificates are revoked
    by the CA's operator (`signserver ca revoke`), never through the RA's CertificateService:
    an RA could otherwise lock out every application, or another RA."""
    application, app_certificate, app_key, _ = application_pair(world.service)
    _, ra_certificate, ra_key = client_pair(world.service, "client-ra")
    other_ra, _, _ = client_pair(world.service, "client-ra")
    tsa = format(world.service.pades.tsa.certificate().serial_number, "x")
    with channel_for(world.server, ra_certificate, ra_key) as channel:
        revoke = certificate_pb2_grpc.CertificateServiceStub(channel).RevokeCertificate
        for serial in (application.serial, other_ra.serial, tsa):
            refused = refusal(lambda: revoke(ra_request(certificate_pb2.RevokeCertificateRequest(
                serial=serial, reason="keyCompromise"), world.clock), timeout=30))
            assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT and "not issued to a holder" in refused.details()
            assert world.service.ca.get(serial).status == "valid"
    with channel_for(world.server, app_certificate, app_key) as channel:
        assert account_status(channel, world.holder).status


def test_a_revoked_certificate_gets_no_server_information(world):
    issued, certificate, key, _ = application_pair(world.service)
    with channel_for(world.server, certificate, key) as channel:
        server_info = info_pb2_grpc.InfoServiceStub(channel).ServerInfo
        assert server_info(info_pb2.ServerInfoRequest(), timeout=30).version
        world.service.ca.revoke(issued.serial, "keyCompromise", "operator:test")
        assert "revoked" in refused_within(lambda: server_info(info_pb2.ServerInfoRequest(), timeout=30)).details()


def test_an_expired_ra_certificate_is_refused_at_once(world):
    _, certificate, key = client_pair(world.service, "client-ra", days=1)
    with channel_for(world.server, certificate, key) as channel:
        list_certificates(channel, world.holder)
        world.clock.advance(days=2)
        refused = refusal(lambda: list_certificates(channel, world.holder))
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED and "expired" in refused.details()


def test_an_ra_certificate_status_is_read_once_in_a_few_seconds_not_per_call(world):
    _, certificate, _ = client_pair(world.service, "client-ra")
    reads = _count_reads(world.service, ("certificates", "authorities"))
    started = time.monotonic()
    for _ in range(30):
        assert world.service.ca.identify_ra(certificate).startswith("client-ra-")
    periods = int((time.monotonic() - started) // STATUS_SECONDS) + 1
    assert len(reads) <= 2 * periods, reads


def test_the_event_loop_knows_a_certificate_checked_moments_ago(world):
    _, certificate, _, _ = application_pair(world.service)
    client, status = presented(certificate), world.service.ca.client_status
    assert status.known_valid(client) is False  # never read: the records must be asked first
    assert status.check(client) is True  # issued by this CA
    assert status.known_valid(client) is True


def _count_reads(service: SignService, tables: tuple[str, ...]) -> list[str]:
    """The SQL statements the service runs from now on for calls (not its background thread's
    e-mail and expiry jobs) that read one of ``tables``."""
    reads: list[str] = []

    def seen(_conn, _cursor, statement, *_):
        if threading.current_thread().name == "background":
            return
        if any(f"FROM {table}" in statement for table in tables):
            reads.append(statement)

    event.listen(service.database.engine, "before_cursor_execute", seen)
    return reads
