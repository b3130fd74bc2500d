"""What the client raises when a call does not reach the server, does not end in time, or cannot
be sent: an error that says so, never one that reads as a busy server to try again."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time

import pytest

from signserver.client import (
    DeadlineExceeded,
    InvalidArgument,
    PdfOptions,
    ServerBusy,
    ServerNotTrusted,
    ServerUnreachable,
    SignServerClient,
    SignServerClientError,
    Stamp,
)
from signserver.pades.sample import sample_pdf
from tests.conftest import PASSWORD
from tests.grpc_api.conftest import ServerThread

# Calls sent while a stopping server's loop is busy: gRPC's core takes up one or two of them before
# the stop, and cancels the others.
CALLS_AS_IT_STOPS = 6


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed(tmp_path) -> bytes:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp_path / "other-key.pem"), "-out", str(tmp_path / "other.pem"),
                    "-subj", "/CN=someone else", "-days", "2"], check=True, capture_output=True)
    return (tmp_path / "other.pem").read_bytes()


class FailingReader(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise OSError("the disk went away")


def test_a_server_nobody_listens_for_is_unreachable_not_busy(world):
    address = f"127.0.0.1:{unused_port()}"
    with SignServerClient(address, root_certificates=world.root_certificates, api_key=world.api_key,
                          timeout=10) as client, pytest.raises(ServerUnreachable) as refused:
        client.credential_info(world.holder.credential.id)
    assert not isinstance(refused.value, ServerBusy)
    assert refused.value.code == "UNAVAILABLE" and address in str(refused.value)


def test_a_server_certificate_that_does_not_verify_is_said_so(world, tmp_path):
    with SignServerClient(world.address, root_certificates=self_signed(tmp_path), api_key=world.api_key,
                          timeout=10) as client, pytest.raises(ServerNotTrusted) as refused:
        client.credential_info(world.holder.credential.id)
    assert isinstance(refused.value, ServerUnreachable) and not isinstance(refused.value, ServerBusy)
    assert "certificate" in str(refused.value)


def test_a_server_name_the_certificate_does_not_carry_is_said_so(world):
    with SignServerClient(world.address, root_certificates=world.root_certificates, api_key=world.api_key,
                          timeout=10, server_name="elsewhere.example.mo") as client, \
            pytest.raises(ServerNotTrusted) as refused:
        client.credential_info(world.holder.credential.id)
    assert "elsewhere.example.mo" in str(refused.value)


def test_a_call_over_its_timeout_is_a_deadline_error(world):
    with SignServerClient(world.address, root_certificates=world.root_certificates, api_key=world.api_key,
                          timeout=0.000_001) as client, pytest.raises(DeadlineExceeded) as refused:
        client.credential_info(world.holder.credential.id)
    assert refused.value.code == "DEADLINE_EXCEEDED"


def test_a_document_that_cannot_be_read_raises_the_read_error(world, client):
    with pytest.raises(OSError, match="the disk went away"):
        client.verify_pdf(FailingReader())
    with pytest.raises(OSError, match="the disk went away"):
        client.prepare_pdf(FailingReader(), credential_id=world.holder.credential.id)
    with pytest.raises(OSError, match="the disk went away"):
        client.sign_pdf(FailingReader(), io.BytesIO(), account=world.holder.account.username, password=PASSWORD,
                        credential_id=world.holder.credential.id)


def test_a_request_over_the_message_limit_is_refused_as_such_not_as_busy(world, client):
    options = PdfOptions(stamp=Stamp(seal_image=b"\x89PNG\r\n\x1a\n" + bytes(5 << 20)))
    with pytest.raises(InvalidArgument) as refused:
        client.prepare_pdf(io.BytesIO(sample_pdf()), credential_id=world.holder.credential.id, options=options)
    assert not isinstance(refused.value, ServerBusy) and "larger than" in refused.value.message


def test_a_call_that_reaches_a_stopping_server_before_it_is_started_is_busy(config, world):
    """gRPC's core cancels the calls a stopping server has not yet taken up (CANCELLED, and no
    reason: grpc/grpc#41785): the application is told to try again, as for UNAVAILABLE."""
    server = ServerThread(config, world.service).__enter__()
    outcomes: list[object] = []
    try:
        clients = [SignServerClient(f"127.0.0.1:{server.port}", root_certificates=world.root_certificates,
                                    api_key=world.api_key, timeout=30) for _ in range(CALLS_AS_IT_STOPS)]
        for client in clients:  # connected, and served
            assert client.credential_info(world.holder.credential.id).credential.id == world.holder.credential.id

        def call(client: SignServerClient) -> None:
            try:
                outcomes.append(client.credential_info(world.holder.credential.id))
            except SignServerClientError as exc:
                outcomes.append(exc)

        server.hold_loop(1.0)
        threads = [threading.Thread(target=call, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the calls have reached the server's core, which holds them
        server.begin_stop(grace=5).result(30)
        for thread in threads:
            thread.join(30)
        for client in clients:
            client.close()
    finally:
        server.__exit__(None, None, None)

    refused = [o for o in outcomes if isinstance(o, SignServerClientError)]
    assert len(outcomes) == CALLS_AS_IT_STOPS
    assert all(isinstance(o, ServerBusy) for o in refused), [(type(o).__name__, o.code, o.message) for o in refused]
    assert refused, "every call was served: none was held as the server stopped, nothing was tested"
