"""The asynchronous mode (operationMode "A", signatures/signPolling) over real HTTPS.

The work an operation waits for is held deterministically: the test fills the pool the work
needs (the HSM pool for signHash, the documents pool for signDoc) with calls that wait for it,
so a poll sees the operation running, then its outcome once the pool is let go.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from signserver.hsm.algorithms import HashAlgorithm
from signserver.http.csc.limits import OPERATIONS_PER_APPLICATION
from signserver.http.csc.operations import NOT_READY, OPERATION_SECONDS, RESULT_SECONDS
from signserver.pades.sample import sample_pdf
from signserver.secret import Secret
from tests.csc.conftest import CscServerThread, b64, basic
from tests.held_pools import threads_held
from tests.csc.test_documents import assert_csc_error, document, sad_for

POLL = "/csc/v2/signatures/signPolling"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
SHA256 = "2.16.840.1.101.3.4.2.1"


def held(server: CscServerThread, pool, threads: int = 2):
    """Every thread of ``pool`` (a BlockingCalls of the server) busy until the block ends."""
    return threads_held(server._loop, pool, threads)


def running(answer) -> bool:
    """Whether a poll says "not yet completed", as the CSC API says it (400, its own sentence)."""
    return answer.status_code == 400 and answer.json().get("error_description") == NOT_READY


def outcome(client, response_id: str, timeout: float = 60.0):
    """Poll until the operation is no longer running (the server answers at once each time)."""
    end = time.monotonic() + timeout
    while True:
        answer = client.post(POLL, json={"responseID": response_id})
        if not running(answer) or time.monotonic() > end:
            return answer
        time.sleep(0.02)  # polling: what a CSC client does


@pytest.fixture(scope="module")
def other_client(csc_server, csc_service):
    """An HTTPS client of a second application."""
    application, api_key = csc_service.applications.create("csc-other-app")
    with csc_server.client() as client:
        token = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key)).json()["access_token"]
    with csc_server.client(headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


@pytest.fixture(scope="module")
def second_worker(csc_server, csc_service):
    """Another front on the same service and database: a second worker."""
    with CscServerThread(csc_service, csc_server.tls) as server:
        yield server


def started(answer) -> str:
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"responseID"}
    return answer.json()["responseID"]


def test_sign_hash_answers_a_response_id_then_not_ready_then_the_signatures(
        csc_server, csc_client, csc_service, csc_application, holder, other_client):
    digest = hashlib.sha256(b"to be signed").digest()
    sad = csc_service.authorize_credential(csc_application[0], holder.credential_id, Secret(holder.password),
                                           holder.otp(), HashAlgorithm.SHA256, [digest]).token
    with held(csc_server, csc_server.context.hsm):
        response_id = started(csc_client.post("/csc/v2/signatures/signHash", json={
            "credentialID": holder.credential_id, "SAD": sad, "hashes": [b64(digest)], "hashAlgorithmOID": SHA256,
            "signAlgo": ECDSA_SHA256, "operationMode": "A"}))
        pending = csc_client.post(POLL, json={"responseID": response_id})
        # CSC API v2, signatures/signPolling: 400 invalid_request with the spec's sentence.
        assert_csc_error(pending, 400, "invalid_request")
        assert running(pending) and pending.json()["responseID"] == response_id
        assert pending.headers["retry-after"] == "1"
        assert_csc_error(other_client.post(POLL, json={"responseID": response_id}), 400, "invalid_request")
    answer = outcome(csc_client, response_id)
    assert answer.status_code == 200, answer.text
    [signature] = answer.json()["signatures"]
    holder.certificate.public_key().verify(base64.b64decode(signature), b"to be signed", ec.ECDSA(hashes.SHA256()))
    # The outcome stays for other polls (the answer may have been lost), still to its application only.
    assert csc_client.post(POLL, json={"responseID": response_id}).json() == answer.json()
    assert_csc_error(other_client.post(POLL, json={"responseID": response_id}), 400, "invalid_request")


def test_sign_doc_answers_at_once_and_any_worker_answers_the_poll(
        csc_server, second_worker, csc_client, csc_service, csc_application, holder, access_token):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    with held(csc_server, csc_server.context.documents):
        response_id = started(csc_client.post("/csc/v2/signatures/signDoc", json={
            "credentialID": holder.credential_id, "SAD": sad, "documents": [document(pdf, "Ades-B-T")],
            "operationMode": "A"}))
        assert running(csc_client.post(POLL, json={"responseID": response_id}))
    with second_worker.client(headers={"Authorization": f"Bearer {access_token}"}) as elsewhere:
        answer = outcome(elsewhere, response_id)
    assert answer.status_code == 200, answer.text
    [signed] = answer.json()["DocumentWithSignature"]
    [report] = csc_service.pades.verify_pdf(io.BytesIO(base64.b64decode(signed))).signatures
    assert report.intact and report.valid and report.trusted and report.level == "B-T", report.summary


def test_a_failed_operation_answers_its_error_when_polled(csc_client, csc_service, csc_application, holder):
    sad = sad_for(csc_service, csc_application[0], holder, sample_pdf(1))
    response_id = started(csc_client.post("/csc/v2/signatures/signDoc", json={
        "credentialID": holder.credential_id, "SAD": sad, "documents": [document(sample_pdf(2))],  # not that document
        "operationMode": "A"}))
    assert_csc_error(outcome(csc_client, response_id), 400, "invalid_request")


def test_an_unknown_response_id_is_refused(csc_client):
    unknown = csc_client.post(POLL, json={"responseID": "no-such-operation"})
    assert_csc_error(unknown, 400, "invalid_request")
    assert unknown.json()["error_description"].startswith("Invalid parameter responseID") and not running(unknown)
    assert_csc_error(csc_client.post(POLL, json={}), 400, "invalid_request")


def test_a_malformed_asynchronous_request_is_refused_at_once(csc_client, holder):
    answer = csc_client.post("/csc/v2/signatures/signDoc", json={
        "credentialID": holder.credential_id, "SAD": "x" * 43, "operationMode": "A",
        "documents": [document(sample_pdf(1)) | {"signature_format": "X"}]})
    assert_csc_error(answer, 400, "invalid_request")


def test_a_poll_may_name_the_operation_requestid_as_the_csc_api_does(csc_client, csc_service, csc_application, holder):
    digest = hashlib.sha256(b"polled by requestID").digest()
    sad = csc_service.authorize_credential(csc_application[0], holder.credential_id, Secret(holder.password),
                                           holder.otp(), HashAlgorithm.SHA256, [digest]).token
    response_id = started(csc_client.post("/csc/v2/signatures/signHash", json={
        "credentialID": holder.credential_id, "SAD": sad, "hashes": [b64(digest)], "signAlgo": ECDSA_SHA256,
        "operationMode": "A"}))
    answer = outcome(csc_client, response_id)
    assert answer.status_code == 200, answer.text
    assert csc_client.post(POLL, json={"requestID": response_id}).json() == answer.json()
    two = csc_client.post(POLL, json={"requestID": response_id, "responseID": "another"})
    assert_csc_error(two, 400, "invalid_request")


def test_a_notification_address_is_refused_by_sign_hash_as_by_sign_doc(csc_client, holder):
    """No notification is ever sent: a client that asks for one is told so, not left waiting."""
    digest = hashlib.sha256(b"notify me").digest()
    answer = csc_client.post("/csc/v2/signatures/signHash", json={
        "credentialID": holder.credential_id, "SAD": "x" * 43, "hashes": [b64(digest)], "signAlgo": ECDSA_SHA256,
        "operationMode": "A", "response_uri": "https://asp.example/notify"})
    assert_csc_error(answer, 400, "invalid_request")
    assert "response_uri" in answer.json()["error_description"]


def test_outcomes_expire_and_an_operation_whose_worker_stopped_fails_at_its_deadline(
        csc_server, csc_client, csc_service, csc_application, csc_clock, holder):
    pdf = sample_pdf(1)
    sad = sad_for(csc_service, csc_application[0], holder, pdf)
    done = started(csc_client.post("/csc/v2/signatures/signDoc", json={
        "credentialID": holder.credential_id, "SAD": sad, "documents": [document(pdf)], "operationMode": "A",
        "validity_period": 60_000}))
    assert outcome(csc_client, done).status_code == 200
    with held(csc_server, csc_server.context.documents):
        unfinished = started(csc_client.post("/csc/v2/signatures/signDoc", json={
            "credentialID": holder.credential_id, "SAD": "x" * 43, "documents": [document(pdf)],
            "operationMode": "A"}))
        csc_clock.advance(seconds=OPERATION_SECONDS + 1)  # as if its worker had stopped
        stopped = csc_client.post(POLL, json={"responseID": unfinished})
        assert_csc_error(stopped, 500, "server_error")
        assert "stopped" in stopped.json()["error_description"]
        # validity_period (60 s) has passed for the first one: erased.
        assert_csc_error(csc_client.post(POLL, json={"responseID": done}), 400, "invalid_request")
    outcome(csc_client, unfinished)  # let it end before the clock moves on
    csc_clock.advance(seconds=RESULT_SECONDS + 1)
    assert_csc_error(csc_client.post(POLL, json={"responseID": unfinished}), 400, "invalid_request")


def test_an_application_has_only_so_many_operations_under_way(csc_server, csc_client, other_client, holder):
    """Its further starts are refused at once (429, Retry-After), nothing recorded; another
    application still starts its own; once the first ones end, it may start again."""
    request = {"credentialID": holder.credential_id, "SAD": "x" * 43, "documents": [document(sample_pdf(1))],
               "operationMode": "A"}
    with held(csc_server, csc_server.context.documents):
        under_way = [started(csc_client.post("/csc/v2/signatures/signDoc", json=request))
                     for _ in range(OPERATIONS_PER_APPLICATION)]
        refused = csc_client.post("/csc/v2/signatures/signDoc", json=request)
        assert_csc_error(refused, 429, "too_many_requests")
        assert int(refused.headers["retry-after"]) >= 1 and "responseID" not in refused.json()
        also_refused = csc_client.post("/csc/v2/signatures/signHash", json={
            "credentialID": holder.credential_id, "SAD": "x" * 43, "hashes": [b64(bytes(32))],
            "signAlgo": ECDSA_SHA256, "operationMode": "A"})
        assert_csc_error(also_refused, 429, "too_many_requests")
        others = started(other_client.post("/csc/v2/signatures/signDoc", json=request))
    for response_id in under_way:
        assert_csc_error(outcome(csc_client, response_id), 400, "invalid_request")  # a SAD of nothing
    assert_csc_error(outcome(other_client, others), 400, "invalid_request")
    again = started(csc_client.post("/csc/v2/signatures/signDoc", json=request))
    outcome(csc_client, again)
