"""An activation token issued by one worker is spent on another: the holder's package travels
with the token (sealed under it, in the shared database), not in the worker that opened it."""

from __future__ import annotations

import contextlib
import hashlib

import grpc
import pytest

from signserver.v1 import info_pb2, info_pb2_grpc, signing_pb2, signing_pb2_grpc
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, application, holder
from tests.signing.holders import assert_signed_by

TRIES = 40  # connections tried to reach both workers; each lands on one of two: all on one is 1 in 2**39


@pytest.fixture
def served(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=2).start()
    yield server
    server.stop()


def channels_per_worker(server: ServeProcess, credentials, stack: contextlib.ExitStack) -> dict[int, grpc.Channel]:
    """One open channel to each worker (a channel keeps the connection, hence the worker, it got)."""
    found: dict[int, grpc.Channel] = {}
    for _ in range(TRIES):
        channel = grpc.secure_channel(f"localhost:{server.port}", credentials,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
        worker = info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10).worker
        if worker in found:
            channel.close()
            continue
        found[worker] = stack.enter_context(channel)
        if len(found) == 2:
            return found
    raise AssertionError(f"reached only the workers {sorted(found)}")


def worker_of(channel: grpc.Channel) -> int:
    return info_pb2_grpc.InfoServiceStub(channel).ServerInfo(info_pb2.ServerInfoRequest(), timeout=10).worker


def test_a_token_issued_by_one_worker_is_spent_on_another(served):
    credentials = application(served, "across-app")
    credential = holder(served, "across.holder")
    digests = [hashlib.sha256(f"page {i}".encode()).digest() for i in range(3)]
    with contextlib.ExitStack() as stack:
        channels = channels_per_worker(served, credentials, stack)
        on_first = signing_pb2_grpc.SigningServiceStub(channels[0])
        on_second = signing_pb2_grpc.SigningServiceStub(channels[1])
        authorization = on_first.Authorize(signing_pb2.AuthorizeRequest(
            account="across.holder", password=PASSWORD, credential_id=credential,
            hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests), timeout=60)
        assert worker_of(channels[0]) == 0  # still the connection Authorize went over

        # Two of the three on the other worker, the third where the token was issued.
        signed = on_second.SignHash(signing_pb2.SignHashRequest(
            credential_id=credential, activation_token=authorization.activation_token,
            signature_algorithm="ecdsa-sha256", digests=digests[:2]), timeout=60)
        assert worker_of(channels[1]) == 1
        last = on_first.SignHash(signing_pb2.SignHashRequest(
            credential_id=credential, activation_token=authorization.activation_token,
            signature_algorithm="ecdsa-sha256", digests=digests[2:]), timeout=60)
        public = on_second.GetCredentialInfo(signing_pb2.GetCredentialInfoRequest(credential_id=credential),
                                             timeout=30).public_key
        assert_signed_by(public, [*signed.signatures, *last.signatures], digests)

        # Spent on one worker, spent for every worker.
        with pytest.raises(grpc.RpcError) as again:
            on_first.SignHash(signing_pb2.SignHashRequest(
                credential_id=credential, activation_token=authorization.activation_token,
                signature_algorithm="ecdsa-sha256", digests=digests[:1]), timeout=60)
        assert again.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "used" in again.value.details()
