"""Refusals carry structured details a program reads (google.rpc.Status through grpcio-status):
ErrorInfo with the error's stable reason, the help code and the lock's end; BadRequest naming the
field at fault; RetryInfo when the server is busy. And a call whose client gave up before its turn
is not started in the HSM."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import threading
import time
from dataclasses import replace

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.accounts import otp
from signserver.clock import ManualClock
from signserver.config import ServerConfig, TlsConfig
from signserver.errors import ServerBusy
from signserver.grpc_api.errors import rich_status
from signserver.grpc_api.server import bootstrap
from signserver.grpc_api.server import served_config as make_served_config
from signserver.grpc_api.stream_limits import DocumentLimits
from signserver.hsm.module import pkcs11_lock
from signserver.v1 import certificate_pb2, certificate_pb2_grpc, document_pb2_grpc, signing_pb2
from tests.ca.conftest import StampedStub
from tests.ca.test_certificate_service import channel_for, client_pair, create
from tests.conftest import PASSWORD, enrol, service_with, service_with_ca
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_signing_api import SHA256, Client, code_of
from tests.grpc_api.test_stream_limits import LimitedServer, StalledStreams, refused_one_of

UNKNOWN = "nobody-has-this-name"
WRONG_PASSWORD = "Wrong-pass-123"
LATE_CALL_TIMEOUT_SECONDS = 2.0


@pytest.fixture(scope="module")
def clock():
    return ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))


@pytest.fixture(scope="module")
def world(config, tmp_path_factory, clock):
    """A server (plain TLS, API keys) and its service, with an application's client."""
    service = service_with(config, tmp_path_factory.mktemp("details") / "signserver.db", clock)
    _, api_key = service.applications.create("details-app")
    # No health probe after the first: each one queues in the pool whose calls the tests count.
    with ServerThread(config, service, health_interval=3600) as server, server.channel() as channel:
        yield service, server, Client(channel, api_key)


def details_of(error: grpc.RpcError) -> dict[str, object]:
    """The details of a refusal, by type; the rich status must agree with the call's own status."""
    status = rpc_status.from_call(error)
    assert status is not None, "the refusal carries no google.rpc.Status"
    assert (status.code, status.message) == (error.code().value[0], error.details())
    return details_in(status)


def details_in(status) -> dict[str, object]:
    """A google.rpc.Status's details, by type."""
    found = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                found[kind.__name__] = unpacked = kind()
                detail.Unpack(unpacked)
    return found


def authorize(client, clock, account, holder, digests=(bytes(32),), **overrides):
    created, seed = holder
    fields = dict(account=account, password=PASSWORD, otp=otp.code_at(seed, clock.now()),
                  credential_id=created.credential.id, hash_algorithm=SHA256, digests=list(digests))
    fields.update(overrides)
    return client.call(client.signing, "Authorize", **fields)


def test_a_locked_account_gives_its_reason_and_the_end_of_its_lock(world, clock):
    service, _, client = world
    holder = enrol(service)
    name = holder[0].account.username
    for _ in range(5):
        code_of(lambda: authorize(client, clock, name, holder, password=WRONG_PASSWORD))
    locked = code_of(lambda: authorize(client, clock, name, holder))
    until = clock.now() + datetime.timedelta(minutes=30)
    assert locked.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert locked.details().startswith(f"the account is locked until {until.isoformat(timespec='seconds')}")
    info = details_of(locked)["ErrorInfo"]
    assert (info.reason, info.domain) == ("ACCOUNT_LOCKED", "signserver")
    assert dict(info.metadata) == {"locked_until": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert datetime.datetime.fromisoformat(info.metadata["locked_until"]) == until


def test_a_wrong_password_and_an_unknown_account_give_the_same_details(world, clock):
    service, _, client = world
    holder = enrol(service)
    wrong_password = code_of(lambda: authorize(client, clock, holder[0].account.username, holder,
                                               password=WRONG_PASSWORD))
    unknown_account = code_of(lambda: authorize(client, clock, UNKNOWN, holder))
    wrong_otp = code_of(lambda: authorize(client, clock, holder[0].account.username, holder, otp="000000"))
    refusals = [(e.code(), e.details(), rpc_status.from_call(e)) for e in (wrong_password, unknown_account, wrong_otp)]
    assert refusals[0] == refusals[1] == refusals[2]
    info = details_of(wrong_password)["ErrorInfo"]
    assert (info.reason, dict(info.metadata)) == ("AUTHENTICATION_FAILED", {})


@pytest.mark.parametrize("method, fields, field, message", [
    ("Authorize", dict(hash_algorithm=0), "hash_algorithm", "hash_algorithm must be SHA256, SHA384 or SHA512"),
    ("Authorize", dict(digests=[bytes(20)]), "digests", "digest 0 has 20 bytes; a SHA256 digest has 32"),
    ("Authorize", dict(account=""), "account", "account is required"),
    ("SignHash", dict(signature_algorithm="no-such-algorithm"), "signature_algorithm", None),
    ("SignHash", dict(credential_id="x" * 65), "credential_id", "credential_id has at most 64 characters"),
    ("SignHash", dict(digests=[bytes(32), bytes(32)]), "digests", "the same digest appears twice"),
])
def test_a_malformed_request_names_its_field(world, clock, method, fields, field, message):
    service, _, client = world
    fields = dict(fields)
    if method == "Authorize":
        holder = enrol(service)
        account = fields.pop("account", holder[0].account.username)
        refused = code_of(lambda: authorize(client, clock, account, holder, **fields))
    else:
        request = dict(credential_id="some-credential", activation_token="some-token",
                       signature_algorithm="ecdsa-sha256", digests=[bytes(32)])
        request.update(fields)
        refused = code_of(lambda: client.call(client.signing, "SignHash", **request))
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    if message is not None:
        assert refused.details() == message  # the message stays as it was
    found = details_of(refused)
    assert found["ErrorInfo"].reason in {"INVALID_ARGUMENT", "UNSUPPORTED_ALGORITHM"}
    violations = [(v.field, v.description) for v in found["BadRequest"].field_violations]
    assert violations == [(field, refused.details())]


def test_a_busy_server_says_when_to_try_again(config, tmp_path):
    service = service_with(config, tmp_path / "signserver.db", ManualClock(datetime.datetime.now(datetime.timezone.utc)))
    _, api_key = service.applications.create("busy-app", otp_required=False)
    with LimitedServer(config, service, DocumentLimits(streams_per_application=1)) as server, \
            server.channel() as channel:
        streams = StalledStreams(document_pb2_grpc.DocumentServiceStub(channel), api_key)
        try:
            refused, _ = refused_one_of([streams.open(header=False) for _ in range(2)])
        finally:
            streams.release()
    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    found = details_of(refused)
    assert found["ErrorInfo"].reason == "SERVER_BUSY"
    assert found["RetryInfo"].retry_delay.ToTimedelta() == datetime.timedelta(seconds=1)


def test_a_refusal_that_knows_how_long_its_work_takes_says_so():
    """A verification starved of CPU until its deadline: trying again within a second would only
    take its place for another deadline's length."""
    busy = ServerBusy("the document was not verified within 25 s", retry_seconds=24.5)
    found = details_in(rich_status(grpc.StatusCode.RESOURCE_EXHAUSTED, str(busy), busy))
    assert found["RetryInfo"].retry_delay.ToTimedelta() == datetime.timedelta(seconds=25)


@pytest.fixture(scope="module")
def ra(config, tmp_path_factory, clock):
    """CertificateService over mutual TLS, as `serve` sets it up, and an RA's stub."""
    service = service_with_ca(config, tmp_path_factory.mktemp("ra") / "signserver.db", clock)
    state = tmp_path_factory.mktemp("served")
    tls = TlsConfig(cert_file=state / "tls" / "server.pem", key_file=state / "tls" / "server-key.pem",
                    client_ca_file=None, explicit=False, mutual=True)
    raw = replace(config, state_dir=state, tls=tls, server=ServerConfig("127.0.0.1:0", False))
    bootstrap(raw, service)
    _, certificate, key = client_pair(service, "client-ra", "ra-operator-details")
    with ServerThread(make_served_config(raw), service) as server, channel_for(server, certificate, key) as channel:
        yield service, StampedStub(certificate_pb2_grpc.CertificateServiceStub(channel), clock)


def test_a_refusal_with_a_help_code_carries_it_in_the_details(ra):
    service, stub = ra
    create(stub, "details-holder")
    issued = stub.IssueCertificate(certificate_pb2.IssueCertificateRequest(
        account="details-holder", profile="cloud-signature-government"), timeout=60)
    service.accounts.update_holder("details-holder", "test", title="Chefe")
    refused = code_of(lambda: stub.RenewCertificate(certificate_pb2.RenewCertificateRequest(serial=issued.serial),
                                                    timeout=60))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert ("help-code", "AC-AB-0015") in tuple(refused.trailing_metadata())  # as before
    info = details_of(refused)["ErrorInfo"]
    assert (info.reason, dict(info.metadata)) == ("CERTIFICATE_REFUSED", {"help_code": "AC-AB-0015"})


def wait_until(condition, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.01)


@contextlib.contextmanager
def loop_held(server: ServerThread):
    """The server's event loop busy with other work (as on a loaded worker) until the block ends:
    it hears of nothing, cancellations included, meanwhile."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(30)

    server._loop.call_soon_threadsafe(hold)
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()


def test_a_call_whose_deadline_passed_while_it_queued_for_the_hsm_is_not_signed(world, clock):
    service, server, client = world
    hsm_pool = server._server._hsm  # what the test waits on: how many calls the pool holds
    holders = [enrol(service) for _ in range(3)]
    digests = [hashlib.sha256(b"document %d" % i).digest() for i in range(5)]  # a call for the pool
    requests = []
    for holder in holders:
        token = authorize(client, clock, holder[0].account.username, holder, digests)
        requests.append(signing_pb2.SignHashRequest(
            credential_id=holder[0].credential.id, activation_token=token.activation_token,
            signature_algorithm="ecdsa-sha256", digests=digests))
    *busy, late = requests
    lock, locked = pkcs11_lock(), True
    lock.acquire()  # the HSM is busy: the first two calls take the pool's two threads and wait
    try:
        ahead = [client.signing.SignHash.future(r, metadata=client.metadata, timeout=60) for r in busy]
        late_call = client.signing.SignHash.future(late, metadata=client.metadata, timeout=LATE_CALL_TIMEOUT_SECONDS)
        wait_until(lambda: hsm_pool.pending == 3, "the late call queueing for the HSM")
        # The server's deadline counts from the call's arrival: after the client's start (by as
        # much as a loaded machine delays it), and before now. So it has passed by this time.
        server_deadline_passed = time.monotonic() + LATE_CALL_TIMEOUT_SECONDS + 0.05
        with loop_held(server):
            assert code_of(late_call.result).code() is grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(max(0.0, server_deadline_passed - time.monotonic()))
            lock.release()
            locked = False
            # The HSM is free while the loop is still busy: the pool takes the late call on its
            # own, before the loop could hear that its client gave up.
            wait_until(lambda: hsm_pool._pool._work_queue.empty(), "the pool taking the late call")
    finally:
        if locked:
            lock.release()
    assert [len(call.result().signatures) for call in ahead] == [5, 5]
    # Nothing was signed for the late call: its token's digests are still there to sign.
    signed = client.signing.SignHash(late, metadata=client.metadata, timeout=60)
    assert len(signed.signatures) == 5
