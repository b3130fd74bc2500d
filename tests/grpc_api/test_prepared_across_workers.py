"""The two-step flow across worker processes: a document prepared by one worker is completed by
another, once."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import grpc
import pytest

from signserver.pades.sample import sample_pdf
from signserver.v1 import (document_pb2, document_pb2_grpc, info_pb2, info_pb2_grpc, signing_pb2,
                           signing_pb2_grpc)
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, application, holder


@pytest.fixture
def served(state_dir, tmp_path):
    spool = tmp_path / "prepared"
    server = ServeProcess(state_dir, tmp_path, workers=2, SIGNSERVER_PADES_SPOOL_DIR=str(spool)).start()
    server.spool = spool
    yield server
    server.stop()


def channel_per_worker(server: ServeProcess, credentials) -> dict[int, grpc.Channel]:
    """A connection to each worker: the kernel hands each new connection to one of them."""
    channels: dict[int, grpc.Channel] = {}
    for _ in range(40):  # all 40 on one worker by chance: 1 in 2**39
        channel = grpc.secure_channel(f"localhost:{server.port}", credentials,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        worker = info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10).worker
        if worker in channels:
            channel.close()
        else:
            channels[worker] = channel
        if len(channels) == 2:
            return channels
    raise AssertionError("every connection reached the same worker")


def children(server: ServeProcess, worker: int) -> list[int]:
    """The child processes of worker ``worker`` (each of its threads lists those it started)."""
    pid = int(server.wait_for(rf"worker {worker} \(pid (\d+)\) serving on"))
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return found


def prepare(channel, credential: str, level: str) -> document_pb2.PrepareSignatureResponse:
    def requests():
        yield document_pb2.PrepareSignatureRequest(header=document_pb2.SignPdfHeader(
            credential_id=credential, level=level))
        yield document_pb2.PrepareSignatureRequest(chunk=sample_pdf(3))
    return document_pb2_grpc.DocumentServiceStub(channel).PrepareSignature(requests(), timeout=120)


def authorize(channel, account: str, credential: str, digest: bytes) -> str:
    return signing_pb2_grpc.SigningServiceStub(channel).Authorize(signing_pb2.AuthorizeRequest(
        account=account, password=PASSWORD, credential_id=credential, hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256,
        digests=[digest]), timeout=60).activation_token


def complete(channel, document_id: str, token: str) -> bytes:
    result, body = None, bytearray()
    for response in document_pb2_grpc.DocumentServiceStub(channel).CompleteSignature(
            document_pb2.CompleteSignatureRequest(document_id=document_id, activation_token=token), timeout=120):
        if response.WhichOneof("part") == "result":
            result = response.result
        else:
            body += response.chunk
    assert result.sha256 == hashlib.sha256(body).digest()
    return bytes(body)


def verify(channel, signed: bytes) -> document_pb2.VerifyPdfResponse:
    return document_pb2_grpc.DocumentServiceStub(channel).VerifyPdf(
        iter([document_pb2.VerifyPdfRequest(chunk=signed)]), timeout=120)


def test_a_document_prepared_by_one_worker_is_completed_by_the_other_once(served):
    credentials = application(served, "two-step-app")
    credential = holder(served, "two.step")
    channels = channel_per_worker(served, credentials)
    try:
        # Prepared on worker 0, authorised and completed on worker 1, at a long-term level.
        prepared = prepare(channels[0], credential, "B-LT")
        token = authorize(channels[1], "two.step", credential, prepared.digest)
        signed = complete(channels[1], prepared.document_id, token)
        # A worker starts its verifiers' forkserver at its first verification, not before.
        assert children(served, 0) == []
        verdict = verify(channels[0], signed)
        assert verdict.verdict, verdict.reason
        assert children(served, 0) != [] and children(served, 1) == []
        assert [report.level for report in verdict.signatures] == ["B-LT"]
        with pytest.raises(grpc.RpcError) as again:
            complete(channels[0], prepared.document_id, token)
        assert again.value.code() is grpc.StatusCode.NOT_FOUND

        # Both workers at once, each with its own token for the digest: one signature.
        prepared = prepare(channels[1], credential, "B-B")
        tokens = [authorize(channels[0], "two.step", credential, prepared.digest) for _ in range(2)]
        start, outcomes = threading.Barrier(2), []

        def race(worker: int) -> None:
            start.wait()
            try:
                outcomes.append(verify(channels[worker], complete(channels[worker], prepared.document_id,
                                                                  tokens[worker])).verdict)
            except grpc.RpcError as error:
                outcomes.append(error.code().name)

        threads = [threading.Thread(target=race, args=(worker,)) for worker in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert sorted(outcomes, key=str) == ["NOT_FOUND", True], outcomes
        assert list(served.spool.iterdir()) == []  # both documents gone, with their files
    finally:
        for channel in channels.values():
            channel.close()
