"""The one mapping from signserver's errors to CSC's error answers, and the body bound."""

from __future__ import annotations

import contextlib
import datetime
import json

from signserver import errors
from signserver.http.csc.errors import GENERIC_SERVER_ERROR, signserver_error_response


def body_of(response) -> dict:
    return json.loads(response.body)


def test_busy_answers_429_with_retry_after():
    for error in (errors.ServerBusy("the server is busy"), errors.AuthenticationBusy("busy")):
        response = signserver_error_response(error)
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert body_of(response)["error"] == "too_many_requests"
    # A refusal that knows how long its work takes asks for that wait, rounded up.
    assert signserver_error_response(errors.ServerBusy("busy", retry_seconds=24.5)).headers["retry-after"] == "25"


def test_unavailable_answers_503_and_faults_500_with_a_generic_description():
    unavailable = signserver_error_response(errors.HsmUnavailable("the token does not answer"))
    assert unavailable.status_code == 503 and "retry-after" in unavailable.headers
    fault = signserver_error_response(errors.HsmOperationFailed("CKR_GENERAL_ERROR at slot 3"))
    assert fault.status_code == 500
    assert body_of(fault)["error"] == "server_error" and body_of(fault)["error_description"] == GENERIC_SERVER_ERROR
    assert "CKR" not in fault.body.decode()
    assert body_of(fault)["error_reason"] == errors.HsmOperationFailed.reason  # the stable reason travels beside


def test_a_lock_says_until_when():
    until = datetime.datetime(2026, 12, 1, 10, 30, tzinfo=datetime.timezone.utc)
    response = signserver_error_response(errors.AccountLocked(until))
    assert response.status_code == 403 and body_of(response)["error"] == "access_denied"
    assert body_of(response)["locked_until"] == "2026-12-01T10:30:00+00:00"
    assert response.headers["retry-after"] == "Tue, 01 Dec 2026 10:30:00 GMT"


def _declared_body_answer(csc_server, path: str, length: int) -> bytes:
    import socket
    import ssl

    trust = ssl.create_default_context(cafile=str(csc_server.tls.cert_file))
    with socket.create_connection(("127.0.0.1", csc_server.port), timeout=30) as raw, \
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode())
        answer = b""
        while b"}" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def test_only_sign_doc_takes_a_document_sized_body(csc_server, csc_service):
    """A caller who has not logged in cannot make a worker read a document-sized body but where
    documents go."""
    from signserver.http.csc.limits import SMALL_BODY_BYTES, body_limit

    assert body_limit(csc_service.config.pades.max_document_mb) > 10 * SMALL_BODY_BYTES
    for path in ("/csc/v2/info", "/csc/v2/auth/login", "/csc/v2/signatures/signHash", "/csc/v1/signatures/signHash"):
        assert _declared_body_answer(csc_server, path, SMALL_BODY_BYTES + 1).startswith(b"HTTP/1.1 413"), path


def test_a_validity_period_of_any_size_is_refused_or_bounded_never_a_fault():
    from signserver.http.csc.operations import RESULT_SECONDS, keep_seconds

    assert keep_seconds(10 ** 400) == RESULT_SECONDS
    assert keep_seconds(1) == 1 and keep_seconds(1001) == 2


def test_a_body_over_the_bound_is_refused_before_it_is_read(csc_server, csc_service):
    from signserver.http.csc.limits import body_limit

    limit = body_limit(csc_service.config.pades.max_document_mb)
    # Only the head: the server answers without waiting for the body it declares.
    answer = _declared_body_answer(csc_server, "/csc/v2/credentials/info", limit + 1)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b'"invalid_request"' in answer


def test_openapi_document_describes_the_endpoints(csc_server):
    with csc_server.client() as client:
        document = client.get("/csc/v2/openapi.json").json()
    assert {"/csc/v2/credentials/authorize", "/csc/v2/signatures/signHash", "/oauth2/token",
            "/csc/v1/credentials/info"} <= set(document["paths"])


def _chunked_body_answer(csc_server, path: str, size: int) -> bytes:
    """The answer to a chunked (undeclared) JSON body of ``size`` bytes, sent while it is read."""
    import socket
    import ssl

    trust = ssl.create_default_context(cafile=str(csc_server.tls.cert_file))
    with socket.create_connection(("127.0.0.1", csc_server.port), timeout=30) as raw, \
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk, sent = b'{"credentialID": "' + b"x" * 65536, 0
        with contextlib.suppress(OSError):  # the server may close before the whole body is sent
            while sent < size:
                tls.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent, chunk = sent + len(chunk), b"x" * 65536
            tls.sendall(b"0\r\n\r\n")
        answer = b""
        while b"}" not in answer:
            received = tls.recv(4096)
            if not received:
                break
            answer += received
    return answer


def test_a_chunked_body_over_the_bound_is_answered_413_saying_so(csc_server):
    from signserver.http.csc.limits import SMALL_BODY_BYTES

    answer = _chunked_body_answer(csc_server, "/csc/v2/credentials/info", 2 * SMALL_BODY_BYTES)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"] == "invalid_request" and f"exceeds {SMALL_BODY_BYTES} bytes" in body["error_description"]


def test_openapi_document_describes_the_answers_the_endpoints_give(csc_server):
    """The refusals in CSC's shape (400, never FastAPI's 422), how each route is authenticated,
    and the token endpoint's form."""
    with csc_server.client() as client:
        document = client.get("/csc/v2/openapi.json").json()
    error = document["components"]["schemas"]["CscError"]
    assert {"error", "error_description"} <= set(error["required"])
    schemes = document["components"]["securitySchemes"]
    assert (schemes["bearer"]["type"], schemes["bearer"]["scheme"], schemes["basic"]["scheme"]) == (
        "http", "bearer", "basic")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            assert responses["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/CscError"}, (path, method)
            if path in ("/csc/v2/info", "/csc/v1/info"):
                assert "security" not in operation and "401" not in responses, path
            elif path.endswith(("/auth/login", "/oauth2/token")):
                assert {"basic": []} in operation["security"], path
            else:
                assert {"bearer": []} in operation["security"] and "401" in responses, path
    form = document["paths"]["/oauth2/token"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert form["schema"]["properties"]["grant_type"]["enum"] == ["client_credentials"]
    assert form["schema"]["required"] == ["grant_type"]
