"""Every handle the token calls invalid is a lost session, retried once on fresh handles, and a
token that stays gone is UNAVAILABLE with a message that names no PKCS#11 error. The server's
token is SoftHSM's, whose token folder is moved away while the server runs."""

from __future__ import annotations


import grpc
import pkcs11.exceptions as p11
import pytest

from signserver.errors import HsmUnavailable
from signserver.hsm.translate import is_session_lost, translate
from signserver.pades.sample import sample_pdf
from signserver.v1 import document_pb2, document_pb2_grpc
from tests.conftest import requires_softhsm
from tests.grpc_api.serve_process import with_own_token
from tests.grpc_api.test_certificate_service_callers import reason_of
from tests.grpc_api.test_workers import PASSWORD, application, holder

HANDLE_ERRORS = sorted((cls for name, cls in vars(p11).items() if name.endswith("HandleInvalid")),
                       key=lambda cls: cls.__name__)


def test_every_handle_error_python_pkcs11_has_is_known():
    assert {cls.__name__ for cls in HANDLE_ERRORS} >= {
        "KeyHandleInvalid", "ObjectHandleInvalid", "SessionHandleInvalid", "UnwrappingKeyHandleInvalid",
        "WrappingKeyHandleInvalid"}


@pytest.mark.parametrize("error", HANDLE_ERRORS, ids=lambda cls: cls.__name__)
def test_an_invalid_handle_is_a_lost_session_and_reads_unavailable(error):
    assert is_session_lost(error())
    translated = translate(error(), "sign with a holder key")
    assert type(translated) is HsmUnavailable
    assert str(translated) == "cannot sign with a holder key: the token does not answer; try again later"


@pytest.fixture
def served_own_token(tmp_path, font_cache):
    state = tmp_path / "state"
    server = with_own_token(state, tmp_path / "run", font_cache).start()
    yield server, state
    server.stop()


@requires_softhsm("SoftHSM's token folder, moved away")
def test_a_token_gone_mid_run_refuses_signing_as_unavailable_and_signs_once_back(served_own_token):
    server, state = served_own_token
    credentials = application(server, "gone-app")
    credential = holder(server, "gone.holder")

    def sign():
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            def requests():
                yield document_pb2.SignPdfRequest(header=document_pb2.SignPdfHeader(
                    account="gone.holder", password=PASSWORD, credential_id=credential, level="B-B"))
                yield document_pb2.SignPdfRequest(chunk=sample_pdf(1, "doc"))
            return list(document_pb2_grpc.DocumentServiceStub(channel).SignPdf(requests(), timeout=60))

    assert sign()
    tokens = state / "softhsm" / "tokens"
    tokens.rename(tokens.with_name("tokens.gone"))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            sign()
    finally:
        tokens.with_name("tokens.gone").rename(tokens)
    error = refused.value
    assert (error.code(), reason_of(error)) == (grpc.StatusCode.UNAVAILABLE, "HSM_UNAVAILABLE"), (
        error.details(), server.text()[-3000:])
    # What the token answered, and where its module is, are the operator's (in the log), not the caller's.
    assert "HandleInvalid" not in error.details() and "reported" not in error.details()
    assert ".so" not in error.details() and "PKCS#11" not in error.details(), error.details()
    assert sign()
