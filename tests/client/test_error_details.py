"""How the client reads what a server says about a refusal: google.rpc details (ErrorInfo reason
and metadata, RetryInfo, BadRequest) and, from a server without them, the help-code trailer.

The server here is a real gRPC server over TLS that answers each call with a refusal chosen by the
test, so that every shape of the wire contract is pinned, whatever the errors a signserver can be
brought to produce; test_client.py covers the real signserver.
"""

from __future__ import annotations

import datetime
import io
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from signserver.client import (
    AccountLocked,
    ActivationRefused,
    CredentialUnusable,
    InvalidArgument,
    PermissionRefused,
    ServerBusy,
    SignServerClient,
    SignServerClientError,
)
from signserver.client.models import Authorization
from signserver.config import TlsConfig
from signserver.grpc_api.tls import ensure_server_certificate
from signserver.v1 import document_pb2, signing_pb2


def packed(message) -> any_pb2.Any:
    value = any_pb2.Any()
    value.Pack(message)
    return value


class ScriptedServer:
    """Authorize, SignHash and SignPdf answer with what ``answer`` holds: a google.rpc Status,
    a (code, message, trailers) triple, or SignPdf responses."""

    def __init__(self, tls: TlsConfig):
        self.answer = None
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        unary = {name: grpc.unary_unary_rpc_method_handler(self._refuse, request_deserializer=request.FromString)
                 for name, request in (("Authorize", signing_pb2.AuthorizeRequest),
                                       ("SignHash", signing_pb2.SignHashRequest))}
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("signserver.v1.SigningService", unary),
            grpc.method_handlers_generic_handler("signserver.v1.DocumentService", {
                "SignPdf": grpc.stream_stream_rpc_method_handler(
                    self._sign_pdf, request_deserializer=document_pb2.SignPdfRequest.FromString,
                    response_serializer=document_pb2.SignPdfResponse.SerializeToString)}),
        ))
        credentials = grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())])
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        self._server.start()

    def _refuse(self, request, context):
        if isinstance(self.answer, status_pb2.Status):
            context.abort_with_status(rpc_status.to_status(self.answer))
        code, message, trailers = self.answer
        context.set_trailing_metadata(trailers)
        context.abort(code, message)

    def _sign_pdf(self, requests, context):
        for _ in requests:
            pass
        yield from self.answer

    def stop(self) -> None:
        self._server.stop(None)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    state = tmp_path_factory.mktemp("scripted")
    tls = TlsConfig(cert_file=state / "server.pem", key_file=state / "server-key.pem", client_ca_file=None,
                    explicit=False)
    ensure_server_certificate(tls, "127.0.0.1")
    server = ScriptedServer(tls)
    with SignServerClient(f"127.0.0.1:{server.port}", root_certificates=tls.cert_file.read_bytes(),
                          api_key="ssk_test", timeout=30) as client:
        yield server, client
    server.stop()


def authorize(client):
    return client.authorize("holder", "Macau-2017-sign", digests=[bytes(32)])


TOKEN = Authorization(activation_token="t", credential_id="c", expires_at=None, signatures=1)


def test_error_info_gives_reason_help_code_and_lock_end(scripted):
    server, client = scripted
    info = error_details_pb2.ErrorInfo(reason="ACCOUNT_LOCKED", domain="signserver",
                                       metadata={"help_code": "AC-AB-0099", "locked_until": "2026-11-21T03:00:00Z"})
    server.answer = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="the account is locked",
                                      details=[packed(info)])
    with pytest.raises(AccountLocked) as locked:
        authorize(client)
    error = locked.value
    assert (error.code, error.message, error.reason, error.help_code) == (
        "FAILED_PRECONDITION", "the account is locked", "ACCOUNT_LOCKED", "AC-AB-0099")
    assert error.locked_until == datetime.datetime(2026, 11, 21, 3, 0, tzinfo=datetime.timezone.utc)


def test_help_code_trailer_without_details(scripted):
    server, client = scripted
    server.answer = (grpc.StatusCode.FAILED_PRECONDITION, "AC-AB-0015: revoke the old certificate first",
                     (("help-code", "AC-AB-0015"),))
    with pytest.raises(SignServerClientError) as refused:
        authorize(client)
    assert type(refused.value) is SignServerClientError
    assert refused.value.help_code == "AC-AB-0015" and refused.value.reason is None


def test_a_credential_that_may_not_sign_has_its_own_error(scripted):
    server, client = scripted
    info = error_details_pb2.ErrorInfo(reason="CREDENTIAL_UNUSABLE", domain="signserver")
    server.answer = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="the certificate is revoked",
                                      details=[packed(info)])
    with pytest.raises(CredentialUnusable) as refused:
        authorize(client)
    assert (refused.value.code, refused.value.reason) == ("FAILED_PRECONDITION", "CREDENTIAL_UNUSABLE")
    server.answer = (grpc.StatusCode.UNAVAILABLE, "the server is stopping; try again", ())
    with pytest.raises(ServerBusy):  # the server's own UNAVAILABLE: it was reached, and asks to try again
        authorize(client)


def test_retry_info_on_a_busy_server(scripted):
    server, client = scripted
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))
    server.answer = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy", details=[packed(retry)])
    with pytest.raises(ServerBusy) as busy:
        authorize(client)
    assert busy.value.retry_after == 1.5


def test_bad_request_names_the_fields(scripted):
    server, client = scripted
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="account", description="account is required")])
    server.answer = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="account is required",
                                      details=[packed(bad)])
    with pytest.raises(InvalidArgument) as refused:
        authorize(client)
    [violation] = refused.value.field_violations
    assert (violation.field, violation.description) == ("account", "account is required")


def test_activation_refusal_by_reason_or_by_method(scripted):
    server, client = scripted
    info = error_details_pb2.ErrorInfo(reason="ACTIVATION_REFUSED", domain="signserver")
    server.answer = status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message="refused", details=[packed(info)])
    with pytest.raises(ActivationRefused):
        authorize(client)
    server.answer = (grpc.StatusCode.PERMISSION_DENIED, "refused", ())
    with pytest.raises(PermissionRefused) as refused:
        authorize(client)
    assert type(refused.value) is PermissionRefused  # Authorize's refusal is about the application
    with pytest.raises(ActivationRefused):  # SignHash's only refusal is the token's
        client.sign_hashes(TOKEN, [bytes(32)], "ecdsa-sha256")


def test_a_document_that_does_not_match_its_digest_is_not_kept(scripted, tmp_path):
    server, client = scripted
    body = b"%PDF-1.7 signed"
    server.answer = [document_pb2.SignPdfResponse(result=document_pb2.SignPdfResult(size=len(body), sha256=bytes(32))),
                     document_pb2.SignPdfResponse(chunk=body)]
    target = tmp_path / "signed.pdf"
    with pytest.raises(SignServerClientError) as lost:
        client.sign_pdf(io.BytesIO(b"%PDF-1.7"), target, account="holder", password="x", credential_id="c")
    assert lost.value.code == "DATA_LOSS"
    assert list(tmp_path.iterdir()) == []


def test_lock_end_from_the_message_of_a_server_without_details(scripted):
    server, client = scripted
    server.answer = (grpc.StatusCode.FAILED_PRECONDITION, "the account is locked until 2026-11-21T03:00:00+00:00 "
                     "after too many failed attempts; try again then", ())
    with pytest.raises(AccountLocked) as locked:
        authorize(client)
    assert locked.value.reason is None
    assert locked.value.locked_until == datetime.datetime(2026, 11, 21, 3, 0, tzinfo=datetime.timezone.utc)
