"""DocumentService over gRPC: PDFs streamed in chunks both ways."""

from __future__ import annotations

import hashlib
import io

import grpc
import pytest

from signserver.hsm.algorithms import HashAlgorithm
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.conftest import PASSWORD
from tests.grpc_api.conftest import ServerThread


@pytest.fixture(scope="module")
def api(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("document-app", otp_required=False)
    with ServerThread(config, service) as server, server.channel() as channel:
        yield document_pb2_grpc.DocumentServiceStub(channel), [("x-api-key", api_key)], created


def sign_request(created, data: bytes, chunk=64 * 1024, **stamp):
    yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
        account=created.account.username, password=PASSWORD, credential_id=created.credential.id, level="B-LT",
        stamp=document_pb2.Stamp(**stamp)))
    for start in range(0, len(data), chunk):
        yield document_pb2.SignPdfRequest(chunk=data[start:start + chunk])


def collect(responses) -> tuple[document_pb2.SignPdfResult, bytes]:
    result, body = None, io.BytesIO()
    for response in responses:
        if response.WhichOneof("part") == "result":
            result = response.result
        else:
            body.write(response.chunk)
    return result, body.getvalue()


def test_sign_and_verify_streamed(api):
    stub, metadata, created = api
    data = sample_pdf(50)
    result, signed = collect(stub.SignPdf(sign_request(created, data, caption="數碼簽署"), metadata=metadata,
                                          timeout=120))
    assert result.size == len(signed) and result.sha256 == hashlib.sha256(signed).digest()
    assert signed.startswith(data[:8]) and len(signed) > len(data)
    report = stub.VerifyPdf(iter([document_pb2.VerifyPdfRequest(chunk=signed[i:i + 100_000])
                                  for i in range(0, len(signed), 100_000)]), metadata=metadata, timeout=120)
    assert len(report.signatures) == 1
    signature = report.signatures[0]
    assert signature.intact and signature.valid and signature.trusted and signature.level == "B-LT"


@pytest.mark.parametrize("data,stamp,fragment", [
    (b"%PDF-1.7 but nothing else", {}, "not a readable PDF"),
    (None, {"page": 9}, "out of range"),
    (None, {"field_name": "X", "x1": 10, "y1": 10, "x2": 9000, "y2": 50}, "off the page"),
])
def test_bad_documents(api, data, stamp, fragment):
    stub, metadata, created = api
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub.SignPdf(sign_request(created, data or sample_pdf(1), **stamp), metadata=metadata, timeout=60))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and fragment in refused.value.details()


def test_header_must_come_first(api):
    stub, metadata, _ = api
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub.SignPdf(iter([document_pb2.SignPdfRequest(chunk=b"%PDF")]), metadata=metadata, timeout=30))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "header" in refused.value.details()


def test_wrong_password_is_unauthenticated(api):
    stub, metadata, created = api

    def requests():
        yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
            account=created.account.username, password="Wrong-pass-1", credential_id=created.credential.id))
        yield document_pb2.SignPdfRequest(chunk=sample_pdf(1))

    with pytest.raises(grpc.RpcError) as refused:
        collect(stub.SignPdf(requests(), metadata=metadata, timeout=60))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_two_step_flow(api, pades_world):
    """Prepare (no factors), the holder authorises exactly the returned digest, complete."""
    stub, metadata, created = api
    service = pades_world[0]
    app = service.applications.authenticate(api_key=metadata[0][1])
    data = sample_pdf(2)

    def prepare():
        def requests():
            yield document_pb2.PrepareSignatureRequest(header=document_pb2.SignPdfHeader(
                credential_id=created.credential.id, level="B-T"))
            yield document_pb2.PrepareSignatureRequest(chunk=data)
        return stub.PrepareSignature(requests(), metadata=metadata, timeout=60)

    def authorize(digest: bytes) -> str:
        return service.signer.authorize(app, created.account.username, Secret(PASSWORD), None, created.credential.id,
                                        HashAlgorithm.SHA256, [digest]).token

    def complete(document_id: str, token: str):
        return collect(stub.CompleteSignature(document_pb2.CompleteSignatureRequest(
            document_id=document_id, activation_token=token), metadata=metadata, timeout=60))

    prepared = prepare()
    assert len(prepared.digest) == 32 and prepared.document_id
    with pytest.raises(grpc.RpcError) as refused:  # a token for another digest
        complete(prepared.document_id, authorize(bytes(32)))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

    prepared = prepare()  # the refusal used up the prepared document
    token = authorize(prepared.digest)
    result, signed = complete(prepared.document_id, token)
    assert result.sha256 == hashlib.sha256(signed).digest()
    report = service.pades.verify_pdf(io.BytesIO(signed)).signatures[0]
    assert report.valid and report.trusted and report.level == "B-T"
    with pytest.raises(grpc.RpcError) as again:
        complete(prepared.document_id, token)
    assert again.value.code() is grpc.StatusCode.NOT_FOUND


def test_policy_can_require_the_two_step_flow(pades_world, config):
    service, _, created, _ = pades_world
    _, api_key = service.applications.create("two-step-app", otp_required=False, one_call_signing=False)
    with ServerThread(config, service) as server, server.channel() as channel:
        stub = document_pb2_grpc.DocumentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            collect(stub.SignPdf(sign_request(created, sample_pdf(1)), metadata=[("x-api-key", api_key)],
                                 timeout=60))
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED and "two-step" in refused.value.details()
    assert service.accounts.get(created.account.username).failed_attempts == 0
