"""Document streams are bounded: per worker and per application, closed when idle, holding no
spool file before data arrives, refused while descriptors run short; and a flood of stalled
streams under a 1,024-descriptor limit leaves the HSM, the database and other clients served."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from signserver.accounts.model import AccountKind
from signserver.ca.authority import CertificateRequest

from signserver.descriptors import open_descriptors
from signserver.hsm.module import pkcs11_lock
from signserver.pades.sample import sample_pdf
from signserver.grpc_api.server import GrpcServer
from signserver.grpc_api.stream_limits import DocumentLimits
from signserver.v1 import document_pb2, document_pb2_grpc, info_pb2, info_pb2_grpc, signing_pb2, signing_pb2_grpc
from tests.conftest import enrol, service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, application, holder

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_LIMIT = 1024


class LimitedServer(ServerThread):
    """A ServerThread whose server has the document limits given."""

    def __init__(self, config, service, limits: DocumentLimits, **server_options):
        super().__init__(config, service)
        self._server = GrpcServer(self.config, service, health_interval=0.2, background=False,
                                  document_limits=limits, **server_options)

    def channel_with(self, options: list) -> grpc.Channel:
        """A channel of its own (no subchannel shared with other channels) with the options given."""
        options = [*options, ("grpc.use_local_subchannel_pool", 1)]
        if self.config.server.plaintext:
            return grpc.insecure_channel(f"127.0.0.1:{self.port}", options=options)
        root = self.config.tls.cert_file.read_bytes()
        return grpc.secure_channel(f"127.0.0.1:{self.port}", grpc.ssl_channel_credentials(root), options=options)


class StalledStreams:
    """SignPdf streams (sync client: one thread each) that send their header, if asked, then wait
    until released."""

    def __init__(self, stub, api_key: str):
        self._stub = stub
        self._metadata = [("x-api-key", api_key)]
        self._release = threading.Event()
        self.calls = []

    def open(self, header: bool = True):
        def requests():
            if header:
                yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                    account="nobody", password="Not-checked-1", credential_id="none"))
            self._release.wait(60)

        call = self._stub.SignPdf(requests(), metadata=self._metadata, timeout=60)
        self.calls.append(call)
        return call

    def release(self) -> None:
        self._release.set()


def outcome(call, timeout: float = 30) -> grpc.RpcError:
    """The status a streaming call ended with (waits at most ``timeout`` seconds)."""
    ended = threading.Event()
    call.add_done_callback(lambda _: ended.set())
    assert ended.wait(timeout), "the call did not end"
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    return caught.value


@pytest.fixture
def limited(config, tmp_path, clock):
    """Start a server with the limits given; yields (service, server, stub, make_app)."""
    service = service_with(config, tmp_path / "signserver.db", clock)
    servers = []

    def start(**limits):
        server = LimitedServer(config, service, DocumentLimits(**limits)).__enter__()
        servers.append(server)
        channel = server.channel()
        start.server = server
        return document_pb2_grpc.DocumentServiceStub(channel)

    def api_key(name: str) -> str:
        return service.applications.create(name, otp_required=False)[1]

    yield service, start, api_key
    for server in servers:
        server.__exit__(None, None, None)


def test_a_stream_that_sends_nothing_for_the_idle_time_is_refused(limited):
    _, start, api_key = limited
    stub = start(idle_seconds=1.0)
    streams = StalledStreams(stub, api_key("idle-app"))
    after_header, without_header = streams.open(header=True), streams.open(header=False)
    try:
        for call in (after_header, without_header):
            refused = outcome(call, timeout=20)
            assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "nothing arrived on the stream for 1 s" in refused.details()
    finally:
        streams.release()


def refused_one_of(calls) -> tuple[grpc.RpcError, list]:
    """The one call of ``calls`` that is refused (the server may take them in any order), and the
    others, still open."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(call.done() for call in calls):
        time.sleep(0.05)
    time.sleep(0.5)  # had another been refused, it would be by now
    done = [call for call in calls if call.done()]
    assert len(done) == 1, f"{len(done)} of {len(calls)} calls ended"
    return outcome(done[0]), [call for call in calls if not call.done()]


def test_streams_are_bounded_per_application_and_per_worker(limited):
    _, start, api_key = limited
    stub = start(streams_per_application=2, streams_per_worker=3)
    first, second, third = (StalledStreams(stub, api_key(f"busy-app-{i}")) for i in range(3))
    try:
        refused, held = refused_one_of([first.open() for _ in range(3)])
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "as many document streams under way as it may have at once (2)" in refused.details()
        # Two other applications ask for the worker's last place: whichever the server takes first
        # gets it (the first application's limit does not hold it back); the other is refused.
        refused, others = refused_one_of([second.open(), third.open()])
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "3 document streams" in refused.details()
        held.extend(others)
        assert len(held) == 3
    finally:
        for streams in (first, second, third):
            streams.release()
    for call in held:  # released without a document: refused for that, not for the limit
        assert outcome(call).code() is grpc.StatusCode.INVALID_ARGUMENT


def test_stalled_streams_hold_no_spool_file(limited):
    _, start, api_key = limited
    stub = start(streams_per_application=40, streams_per_worker=40)
    streams = StalledStreams(stub, api_key("lazy-app"))
    streams.open()
    time.sleep(0.5)  # the connection and the server's threads are up
    before = open_descriptors()
    try:
        calls = [streams.open() for _ in range(30)]
        time.sleep(1.0)
        assert not any(call.done() for call in calls)
        assert open_descriptors() - before < 10  # 60 spool files if opened with the header
    finally:
        streams.release()


def test_streams_are_refused_while_descriptors_run_short(limited):
    _, start, api_key = limited
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    stub = start(descriptor_reserve=soft)  # as if every descriptor but the reserve were taken
    streams = StalledStreams(stub, api_key("short-app"))
    try:
        refused = outcome(streams.open(), timeout=10)
    finally:
        streams.release()
    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "file descriptors" in refused.details()


class LimitedServeProcess(ServeProcess):
    """`signserver serve` started under the RLIMIT_NOFILE given (soft and hard)."""

    def __init__(self, state_dir: Path, folder: Path, workers: int, soft: int, hard: int, **env: str):
        super().__init__(state_dir, folder, workers, **env)
        self.limits = soft, hard

    def start(self) -> "LimitedServeProcess":
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            ["prlimit", "--nofile={}:{}".format(*self.limits), str(Path(sys.executable).parent / "signserver"),
             "serve", "--workers", str(self.workers)], env=self.env, stderr=self.log, stdout=self.log)
        self.port = self.wait_for(r"worker \d+ \(pid \d+\) serving on 127\.0\.0\.1:(\d+)", count=self.workers)
        return self

    def worker_open_file_limits(self) -> list[str]:
        """The soft and hard open-file limits of the (first) worker, as /proc shows them."""
        limits = Path(f"/proc/{self.worker_pids()[0]}/limits").read_text()
        return next(line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files"))


def test_serve_raises_the_open_file_limit_to_the_hard_limit(state_dir, tmp_path):
    server = LimitedServeProcess(state_dir, tmp_path, workers=1, soft=512, hard=4096).start()
    try:
        assert server.worker_open_file_limits() == ["4096", "4096"]
    finally:
        server.stop()


def bystander_is_served(server: ServeProcess, credentials, account: str, credential: str) -> None:
    """Health, ServerInfo, and an Authorize then a SignHash, each answered at once."""
    with grpc.secure_channel(f"localhost:{server.port}", credentials,
                             options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10).version
        signing = signing_pb2_grpc.SigningServiceStub(channel)
        digest = hashlib.sha256(b"bystander").digest()
        token = signing.Authorize(signing_pb2.AuthorizeRequest(
            account=account, password=PASSWORD, credential_id=credential,
            hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=10)
        signed = signing.SignHash(signing_pb2.SignHashRequest(
            credential_id=credential, activation_token=token.activation_token, signature_algorithm="ecdsa-sha256",
            digests=[digest]), timeout=10)
        assert len(signed.signatures) == 1


# The stalled streams' idle time here: long enough for the bystander's calls to go in while every
# admitted stream is still held (checked below), short enough not to wait out the default's 30 s.
STALLED_IDLE_SECONDS = 8


def test_two_thousand_stalled_streams_under_1024_descriptors_leave_a_bystander_served(state_dir, tmp_path):
    server = LimitedServeProcess(state_dir, tmp_path, workers=1, soft=DESCRIPTOR_LIMIT, hard=DESCRIPTOR_LIMIT,
                                 SIGNSERVER_SERVER_STREAM_IDLE_SECONDS=str(STALLED_IDLE_SECONDS)).start()
    try:
        assert server.worker_open_file_limits() == [str(DESCRIPTOR_LIMIT)] * 2
        application(server, "flooding-app")
        flooder_cert, flooder_key = server.client_files
        bystander = application(server, "bystander-app")
        credential = holder(server, "bystander.holder")

        started = time.monotonic()
        client = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "grpc_api" / "stalled_streams_client.py"), str(server.port),
             str(server.folder / "ca.pem"), str(flooder_cert), str(flooder_key), "2000", "4"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert client.stdout.readline().strip() == "stalled"
            for _ in range(3):
                bystander_is_served(server, bystander, "bystander.holder", credential)
            # Served while the streams the server admitted were all held: none can end sooner.
            assert time.monotonic() - started < STALLED_IDLE_SECONDS
            outcomes = json.loads(client.stdout.readline())
        finally:
            client.kill() if client.poll() is None else None
            client.wait(30)
        assert sum(outcomes.values()) == 2000 and "OK" not in outcomes  # every stream ended
        # At most the application's share of streams was held, each until its idle time ran out;
        # every other stream was refused at once, holding nothing.
        log = server.text()
        closed_idle = log.count("SignPdf refused with INVALID_ARGUMENT: nothing arrived on the stream for "
                                f"{STALLED_IDLE_SECONDS} s")
        assert closed_idle == outcomes.get("INVALID_ARGUMENT") <= DocumentLimits().streams_per_application
        refused = log.count("SignPdf refused with RESOURCE_EXHAUSTED")
        # Every other stream ended at once: refused by the server, or ended by gRPC's client itself
        # when the refusal overtook the header being written (CANCELLED or INTERNAL on the client's
        # side, see stalled_streams_client.py); none was held until a deadline.
        ended_by_client = outcomes.get("CANCELLED", 0) + outcomes.get("INTERNAL", 0)
        assert refused + ended_by_client >= 2000 - closed_idle and refused >= 1600, (refused, outcomes)
        bystander_is_served(server, bystander, "bystander.holder", credential)
        assert "Too many open files" not in log and " ERROR " not in log
    finally:
        server.stop()


def trickle(header: document_pb2.SignPdfHeader | None, released: threading.Event, every: float = 0.3,
            verify: bool = False):
    """Requests of a stream that sends its header (if any), then one byte every ``every`` seconds
    until released."""
    if header is not None:
        yield document_pb2.SignPdfRequest(header=header)
    while not released.wait(every):
        yield document_pb2.VerifyPdfRequest(chunk=b"%") if verify else document_pb2.SignPdfRequest(chunk=b"%")


def test_an_upload_that_trickles_is_closed_at_its_total_deadline(limited):
    _, start, api_key = limited
    stub = start(idle_seconds=1.0, upload_seconds=2.0)
    released = threading.Event()
    header = document_pb2.SignPdfHeader(account="nobody", password="Not-checked-1", credential_id="none")
    began = time.monotonic()
    try:
        call = stub.SignPdf(trickle(header, released), metadata=[("x-api-key", api_key("trickling-app"))], timeout=60)
        refused = outcome(call, timeout=20)
    finally:
        released.set()
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "took longer than 2 s in all" in refused.details()
    assert time.monotonic() - began < 15  # cut at the deadline, not when the client stopped


def test_an_upload_that_trickles_holds_no_verification_place(limited):
    service, start, api_key = limited
    service.ca.initialise("operator:test")  # verification trusts this CA
    stub = start(verifications_per_worker=1, verifications_per_application=1)
    released = threading.Event()
    try:
        trickling = stub.VerifyPdf.future(trickle(None, released, verify=True),
                                          metadata=[("x-api-key", api_key("trickling-app"))], timeout=60)
        time.sleep(1.0)  # the trickling upload is under way
        assert not trickling.done()
        report = stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=sample_pdf(1))]),
                                metadata=[("x-api-key", api_key("other-app"))], timeout=30)
        assert report.verdict is False and "no signatures" in report.reason
        assert not trickling.done()
    finally:
        released.set()


def signing_holder(service) -> tuple[str, str]:
    """A holder with a cloud-signature certificate: (account, credential id)."""
    service.ca.initialise("operator:test")
    created, _ = enrol(service, password=PASSWORD, kind=AccountKind.CORPORATE, organisation="Example Lda")
    service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra:test")
    return created.account.username, created.credential.id


def large_pdf(megabytes: int) -> bytes:
    """A one-page PDF carrying ``megabytes`` MB of random (incompressible) stream data."""
    writer = IncrementalPdfFileWriter(io.BytesIO(sample_pdf(1)), strict=False)
    filler = writer.add_object(generic.StreamObject(stream_data=os.urandom(megabytes << 20)))
    writer.root["/Filler"] = filler
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def sign_requests(account: str, credential: str, data: bytes):
    yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
        account=account, password=PASSWORD, credential_id=credential, level="B-B"))
    for begin in range(0, len(data), 1 << 20):
        yield document_pb2.SignPdfRequest(chunk=data[begin:begin + (1 << 20)])


def refusal(stub, api_key: str) -> grpc.RpcError:
    """How a new SignPdf stream of the application ends, however long the server takes to refuse
    it (a stream admitted instead sends nothing and is closed when idle)."""
    streams = StalledStreams(stub, api_key)
    call = streams.open(header=False)
    try:
        return outcome(call)
    finally:
        call.cancel()
        streams.release()


def refused_at_once(stub, api_key: str) -> grpc.RpcError | None:
    """The refusal of a new SignPdf stream of the application, or None if it was admitted (it
    then sends nothing and is closed when idle)."""
    streams = StalledStreams(stub, api_key)
    call = streams.open(header=False)
    try:
        time.sleep(0.5)
        return outcome(call) if call.done() else None
    finally:
        call.cancel()
        streams.release()


def test_a_client_that_stops_reading_the_signed_document_is_cut_off(limited):
    service, start, api_key = limited
    account, credential = signing_holder(service)
    stub = start(idle_seconds=1.0, streams_per_application=1)
    key = api_key("slow-reader-app")
    # Without BDP probing the client's flow-control window stays small: the server's writes wait
    # as soon as the client stops reading.
    with start.server.channel_with([("grpc.http2.bdp_probe", 0)]) as channel:
        responses = document_pb2_grpc.DocumentServiceStub(channel).SignPdf(
            sign_requests(account, credential, large_pdf(8)), metadata=[("x-api-key", key)], timeout=120)
        assert next(responses).WhichOneof("part") == "result"  # signed; then the client stops reading
        deadline = time.monotonic() + 20
        while (refused := refused_at_once(stub, key)) is not None and time.monotonic() < deadline:
            assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused is None, "the stream of the client that stopped reading still holds its place"
        responses.cancel()


def test_a_cancelled_signing_keeps_its_place_until_its_job_ends(limited):
    service, start, api_key = limited
    account, credential = signing_holder(service)
    stub = start(streams_per_application=1)
    key = api_key("cancelling-app")
    documents = start.server._server.pools.documents
    with pkcs11_lock():  # the signing job will wait for the HSM, in a thread of the documents pool
        call = stub.SignPdf(sign_requests(account, credential, sample_pdf(1)), metadata=[("x-api-key", key)],
                            timeout=60)
        deadline = time.monotonic() + 20
        while documents.pending == 0:  # uploaded; the job runs and waits for the HSM
            assert time.monotonic() < deadline, "the signing job never started"
            time.sleep(0.01)
        assert refusal(stub, key).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        call.cancel()
        time.sleep(1.0)
        refused = refusal(stub, key)  # the job still runs: the application's place is still taken
        assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "as many document streams under way" in refused.details()
        assert documents.pending == 1
    deadline = time.monotonic() + 20  # the job ends once the HSM is free, and the place with it
    while refused_at_once(stub, key) is not None:
        assert time.monotonic() < deadline, "the place was never given back"


def test_an_idle_connection_is_closed(config, fresh_service):
    with LimitedServer(config, fresh_service, DocumentLimits(), connection_idle_seconds=0.5) as server, \
            server.channel_with([]) as channel:
        info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10)
        assert channel._channel.check_connectivity_state(False) == 2  # READY
        deadline = time.monotonic() + 10
        while channel._channel.check_connectivity_state(False) == 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert channel._channel.check_connectivity_state(False) != 2  # the server closed it
