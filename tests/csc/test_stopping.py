"""A stopping worker's CSC front, as its gRPC server (tests/grpc_api/test_stopping.py): the signDoc
jobs under way finish, those not yet started are refused with 503 and nothing done (their SADs
still sign elsewhere), and a one-call signDoc whose holder's factors were checked is signed."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, text

from signserver.hsm.module import pkcs11_lock
from signserver.pades.sample import sample_pdf
from signserver.store.schema import activation_token_digests
from tests.csc.conftest import CscServerThread, basic
from tests.csc.test_async import held
from tests.csc.test_documents import SIGN_DOC, assert_csc_error, document, sad_for, signed_pdf
from tests.grpc_api.test_error_details import wait_until


def bearer(server: CscServerThread, application, api_key: str) -> dict[str, str]:
    with server.client() as client:
        answer = client.post("/csc/v2/auth/login", headers=basic(application.name, api_key), json={})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def sign_doc(server: CscServerThread, headers: dict[str, str], body: dict):
    with server.client(headers=headers) as client:
        return client.post(SIGN_DOC, json=body)


def digest_spent(service, content: bytes) -> bool:
    with service.database.read() as conn:
        return bool(conn.execute(select(activation_token_digests.c.used).where(
            activation_token_digests.c.digest == hashlib.sha256(content).hexdigest())).scalar_one())


def signed_documents(service) -> list[str]:
    """The SHA-256 of every signed PDF the audit log records."""
    with service.database.read() as conn:
        details = conn.execute(text("SELECT detail FROM audit_log WHERE event = 'signature.pdf'")).scalars().all()
    return [json.loads(detail)["signed"] for detail in details]


def test_a_stopping_front_finishes_the_sign_doc_under_way_and_refuses_those_not_started(
        csc_server, csc_service, holder):
    # One application per document: each has a turn at the documents pool of its own, so that the
    # two that do not start wait in the pool itself.
    applications = [csc_service.applications.create(f"stopping-csc-{i}-{holder.username}") for i in range(3)]
    pdfs = [sample_pdf(1, f"document {i}") for i in range(3)]
    sads = [sad_for(csc_service, application, holder, pdf) for (application, _), pdf in zip(applications, pdfs)]
    before = signed_documents(csc_service)
    callers = ThreadPoolExecutor(3)
    with CscServerThread(csc_service, csc_server.tls, document_threads=1) as server:
        headers = [bearer(server, application, api_key) for application, api_key in applications]
        bodies = [{"credentialID": holder.credential_id, "SAD": sad, "documents": [document(pdf)]}
                  for sad, pdf in zip(sads, pdfs)]
        with pkcs11_lock():  # the first job, its SAD spent, waits for the HSM on the pool's one thread
            first = callers.submit(sign_doc, server, headers[0], bodies[0])
            wait_until(lambda: digest_spent(csc_service, pdfs[0]), "the first SAD spent")
            others = [callers.submit(sign_doc, server, headers[i], bodies[i]) for i in (1, 2)]
            wait_until(lambda: server.context.documents.pending == 3, "the two others queued behind it")
            stopped = server.begin_stop()
        answers = [first.result(60)] + [other.result(60) for other in others]
        stopped.result(60)
    callers.shutdown()

    signed = signed_pdf(answers[0])
    for refused in answers[1:]:
        assert_csc_error(refused, 503, "temporarily_unavailable")
    assert signed_documents(csc_service) == before + [hashlib.sha256(signed).hexdigest()]
    # Nothing done: the refused jobs' SADs are unspent, and sign on another worker.
    assert not digest_spent(csc_service, pdfs[1]) and not digest_spent(csc_service, pdfs[2])
    with CscServerThread(csc_service, csc_server.tls) as elsewhere:
        for i in (1, 2):
            signed_pdf(sign_doc(elsewhere, bearer(elsewhere, *applications[i]), bodies[i]))


def test_a_one_call_sign_doc_whose_factors_were_checked_is_signed_though_the_front_stops(
        csc_server, csc_service, csc_application, holder):
    application, api_key = csc_application
    pdf = sample_pdf(1, "checked before the stop")
    body = {"credentialID": holder.credential_id, "documents": [document(pdf)],
            "authData": [{"id": "PIN", "value": holder.password}, {"id": "OTP", "value": holder.otp()}]}
    callers = ThreadPoolExecutor(1)
    with CscServerThread(csc_service, csc_server.tls) as server:
        headers = bearer(server, application, api_key)
        accounts = server.context.accounts
        with held(server, accounts, threads=4):  # the holder's factors wait for a thread to check them
            answer = callers.submit(sign_doc, server, headers, body)
            wait_until(lambda: accounts.pending == 5, "its document read, its factors queued")
            stopped = server.begin_stop()
        # Let go: the factors are checked and the OTP spent, so the signature is made though the
        # worker stops; refusing it now would cost the holder a code for nothing.
        signed = signed_pdf(answer.result(60))
        stopped.result(60)
    callers.shutdown()
    assert hashlib.sha256(signed).hexdigest() in signed_documents(csc_service)
