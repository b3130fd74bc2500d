"""Each worker of `signserver serve` has a bound on its memory: a request that needs more is refused
with RESOURCE_EXHAUSTED, and the worker goes on serving the other calls."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from signserver.client import ServerBusy, ServerUnreachable
from signserver.client.errors import from_rpc_error
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc, info_pb2, info_pb2_grpc
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import application, holder

BOUND_MB = 320  # a worker at rest holds about 190-240 MiB of data
# A PrepareSignature of this many pages (a 186 MB document, within the default 200 MB) adds about
# 110 MiB to a worker's data; several at once need more than BOUND_MB.
LARGE_PAGES = 60_000
AT_ONCE = 4
CHUNK = 1 << 20


@pytest.fixture(scope="module")
def large_document() -> bytes:
    return sample_pdf(LARGE_PAGES)


def serve(state_dir, folder: Path, workers: int, bound: str) -> ServeProcess:
    return ServeProcess(state_dir, folder, workers=workers, SIGNSERVER_SERVER_WORKER_MEMORY_MB=bound).start()


def data_limit(pid: int) -> tuple[str, str]:
    """The soft and hard "Max data size" in /proc/<pid>/limits."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max data size"))
    soft, hard = line.split()[3:5]
    return soft, hard


def prepare(channel: grpc.Channel, credential: str, document: bytes) -> document_pb2.PrepareSignatureResponse:
    def requests():
        yield document_pb2.PrepareSignatureRequest(header=document_pb2.SignPdfHeader(credential_id=credential,
                                                                                      level="B-B"))
        for start in range(0, len(document), CHUNK):
            yield document_pb2.PrepareSignatureRequest(chunk=document[start:start + CHUNK])
    return document_pb2_grpc.DocumentServiceStub(channel).PrepareSignature(requests(), timeout=300)


def served_again(server: ServeProcess, credentials, credential: str, seconds: float = 60) -> bool:
    """Whether a small document is prepared within ``seconds``: at once, or by the fresh worker
    that replaces one that kept its memory near the bound."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            try:
                info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=30)
                return bool(prepare(channel, credential, sample_pdf(2)).document_id)
            except grpc.RpcError as exc:
                # Only what the client tells its application to try again: the worker busy, or
                # being replaced (a call that reaches it as it stops may be cancelled by gRPC's
                # core before it is taken up, see signserver.client.errors; then, until the fresh
                # worker listens, no connection is made).
                assert isinstance(from_rpc_error(exc, "PrepareSignature"), (ServerBusy, ServerUnreachable)), exc
        time.sleep(0.5)
    return False


def test_every_worker_carries_the_configured_bound_and_says_so(state_dir, tmp_path):
    server = serve(state_dir, tmp_path, workers=2, bound=str(BOUND_MB))
    try:
        pids = server.worker_pids()
        assert len(set(pids)) == 2
        for pid in pids:
            assert data_limit(pid) == (str(BOUND_MB << 20), str(BOUND_MB << 20))
        server.wait_for(rf"worker \d+ \(pid \d+\): memory bound {BOUND_MB} MiB of data", count=2)
        with open(f"/proc/{server.process.pid}/limits") as supervisor:  # the supervisor itself is not bound
            assert re.search(r"Max data size\s+unlimited", supervisor.read())
    finally:
        server.stop()


def test_none_leaves_the_workers_unbounded(state_dir, tmp_path):
    server = serve(state_dir, tmp_path, workers=1, bound="none")
    try:
        assert data_limit(server.worker_pids()[0]) == ("unlimited", "unlimited")
        server.wait_for(r"worker 0 \(pid \d+\): no memory bound \(server.worker_memory_mb = 0\)")
    finally:
        server.stop()


def test_requests_past_the_bound_are_refused_as_resource_exhausted_and_the_worker_serves_on(
        state_dir, tmp_path, large_document):
    server = serve(state_dir, tmp_path, workers=1, bound=str(BOUND_MB))
    try:
        credentials = application(server, "memory-app")
        credential = holder(server, "memory.holder")
        worker = server.worker_pids()[0]
        outcomes: list[object] = []

        def one():
            with grpc.secure_channel(f"localhost:{server.port}", credentials,
                                     options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                try:
                    outcomes.append(prepare(channel, credential, large_document))
                except grpc.RpcError as exc:
                    outcomes.append(exc)

        threads = [threading.Thread(target=one) for _ in range(AT_ONCE)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)

        refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert len(outcomes) == AT_ONCE
        assert {o.code() for o in refused} <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, \
            [(o.code(), o.details()) for o in refused]
        assert refused, "every large request fitted within the bound: nothing was tested"
        for refusal in refused:
            assert "memory" in refusal.details()
            status = rpc_status.from_call(refusal)
            assert status is not None and status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            [detail] = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.reason == "MEMORY_EXHAUSTED"

        # The worker (or, when it kept its memory near the bound, the one that replaced it) serves
        # the next calls: a refusal for memory ends the call, not the worker's other calls.
        log = server.text()
        assert "exited with -" not in log, log[-4000:]
        # One line at ERROR for each refusal, naming the bound, and nothing of the document.
        assert len(re.findall(r"ERROR .*(reached the worker's memory bound|a stream was refused)", log)) \
            == len(refused), log[-4000:]
        assert "Traceback" not in log and "sample document" not in log
        assert f"worker 0 (pid {worker})" in log
        assert served_again(server, credentials, credential)
        assert "exited with -" not in server.text()  # never killed: replaced, if at all, after finishing its calls
    finally:
        server.stop()
