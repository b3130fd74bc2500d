"""A stopping worker finishes the document jobs under way and refuses those not yet started, with
nothing done: its grace then waits only for work under way, and a refused client tries again on
another worker at once instead of having its job started late and cut off when the grace ends."""

from __future__ import annotations

import hashlib
import io
import json
import time

import grpc
from sqlalchemy import text

from signserver.grpc_api.stream_limits import DocumentLimits
from signserver.hsm.module import pkcs11_lock
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2_grpc
from tests.conftest import service_with
from tests.grpc_api.test_error_details import details_of
from tests.grpc_api.test_stream_limits import LimitedServer, sign_requests, signing_holder


def ending(responses) -> tuple[str, str]:
    """("signed", the signed PDF's SHA-256) or (the status code's name, the refusal's reason)."""
    body, digest = io.BytesIO(), None
    try:
        for response in responses:
            if response.WhichOneof("part") == "result":
                digest = response.result.sha256
            else:
                body.write(response.chunk)
    except grpc.RpcError as error:
        return error.code().name, details_of(error)["ErrorInfo"].reason
    assert hashlib.sha256(body.getvalue()).digest() == digest
    return "signed", digest.hex()


def test_a_stopping_server_finishes_the_job_under_way_and_refuses_the_queued_ones(config, tmp_path, clock):
    service = service_with(config, tmp_path / "signserver.db", clock)
    account, credential = signing_holder(service)
    api_key = service.applications.create("stopping-app", otp_required=False)[1]
    # One signing job of an application at a time: the others wait for their turn.
    server = LimitedServer(config, service, DocumentLimits(document_jobs_per_application=1)).__enter__()
    try:
        with server.channel() as channel:
            stub = document_pb2_grpc.DocumentServiceStub(channel)
            with pkcs11_lock():  # the first job to start waits for the HSM in the documents pool
                calls = [stub.SignPdf(sign_requests(account, credential, sample_pdf(1, f"document {i}")),
                                      metadata=[("x-api-key", api_key)], timeout=60) for i in range(3)]
                time.sleep(2.0)  # uploaded: one job under way, two waiting for their turn
                stopped = server.begin_stop(grace=60)
            outcomes = sorted(ending(call) for call in calls)
            stopped.result(60)
    finally:
        server.__exit__(None, None, None)

    assert [kind for kind, _ in outcomes] == ["UNAVAILABLE", "UNAVAILABLE", "signed"]
    assert [reason for _, reason in outcomes[:2]] == ["SERVER_STOPPING", "SERVER_STOPPING"]
    with service.database.engine.connect() as conn:
        details = conn.execute(text("SELECT detail FROM audit_log WHERE event = 'signature.pdf'")).scalars().all()
    assert [json.loads(d)["signed"] for d in details] == [outcomes[2][1]]  # the refused jobs did nothing
