"""The CSC front's refusals in a node's figures: each is counted in signserver_refusals_total by
the stable reason its answer carries (``error_reason``), as gRPC's are by their ErrorInfo, so that
an operator tells a wrong password from an unknown application though both are refused alike; the
call log names the same reason. `signserver serve` with one worker, scraped as Prometheus does."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.request

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.csc.test_serve import CSC_LINE, tls_context, tls_exchange
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, holder

AUTHORIZE = "/csc/v2/credentials/authorize"
WRONG_PASSWORD = "Wrong-password-1"


@pytest.fixture(scope="module")
def served(state_dir, tmp_path_factory):
    """One worker serving the CSC API, its metrics and a JSON call log; an application (no OTP)
    with a client certificate, and a certified holder."""
    server = ServeProcess(state_dir, tmp_path_factory.mktemp("csc-refusals"), workers=1,
                          SIGNSERVER_METRICS_LISTEN="127.0.0.1:0", SIGNSERVER_LOGGING_FORMAT="json",
                          SIGNSERVER_LOGGING_CALLS="true").start()
    try:
        server.metrics_port = server.wait_for(r"metrics of this node on http://127\.0\.0\.1:(\d+)/metrics")
        server.csc_port = server.wait_for(CSC_LINE)
        made = server.cli("app", "create", "csc-reasons-app", "--no-otp")
        assert made.returncode == 0, made.stderr
        server.client_credentials("csc-reasons-app")
        server.credential_id = holder(server, "csc.reasons")
        yield server
    finally:
        assert server.stop() == 0, server.text()[-3000:]


def scrape(server: ServeProcess) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def csc_refusals(samples) -> dict[tuple[str, str], float]:
    """The CSC front's refusals, by (method, reason)."""
    found = {}
    for (name, labels), value in samples.items():
        labels = dict(labels)
        if name == "signserver_refusals_total" and labels["front"] == "csc":
            found[(labels["method"], labels["reason"])] = value
    return found


def authorize_body(credential_id: str, password: str, **changes) -> dict:
    digest = base64.b64encode(hashlib.sha256(b"reasons").digest()).decode()
    return {"credentialID": credential_id, "numSignatures": 1, "hashes": [digest],
            "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "authData": [{"id": "PIN", "value": password}]} | changes


def test_csc_refusals_are_counted_by_the_reason_their_answer_carries(served):
    answers = []  # (method label, status, the error_reason the client reads)

    def note(method: str, answer: httpx.Response) -> None:
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        answers.append((method, answer.status_code, body.get("error_reason")))

    with httpx.Client(base_url=f"https://127.0.0.1:{served.csc_port}", verify=tls_context(served),
                      timeout=60) as client:
        for _ in range(2):  # a wrong password (the holder's PIN), below the lockout
            note(f"POST {AUTHORIZE}", client.post(AUTHORIZE, json=authorize_body(served.credential_id,
                                                                                  WRONG_PASSWORD)))
        # An unknown credential is answered as wrong factors are: the answer never says which.
        note(f"POST {AUTHORIZE}", client.post(AUTHORIZE, json=authorize_body("no-such-credential", PASSWORD)))
        # The same method of CSC 1.0.4, a series of its own.
        v1 = authorize_body(served.credential_id, WRONG_PASSWORD)
        v1 |= {"hash": v1.pop("hashes"), "PIN": v1.pop("authData")[0]["value"]}
        note("POST /csc/v1/credentials/authorize", client.post("/csc/v1/credentials/authorize", json=v1))
        # Malformed bodies: not JSON, a count of the wrong JSON type, not UTF-8.
        note(f"POST {AUTHORIZE}", client.post(AUTHORIZE, content=b"{not json",
                                              headers={"content-type": "application/json"}))
        note(f"POST {AUTHORIZE}", client.post(AUTHORIZE, json=authorize_body(served.credential_id, PASSWORD,
                                                                             numSignatures="1")))
        note(f"POST {AUTHORIZE}", client.post(AUTHORIZE, content=b'{"credentialID": "\xc3\x28"}',
                                              headers={"content-type": "application/json"}))
        # An unknown client at the token endpoint, and a grant the endpoint does not give.
        note("POST /oauth2/token", client.post("/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": "no-such-app", "client_secret": "ssk_not-a-key"}))
        note("POST /oauth2/token", client.post("/oauth2/token", data={"grant_type": "password"}))
        note("POST /oauth2/token", client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                                       "scope": "everything"}))
        note("POST /oauth2/token", client.post("/oauth2/token", content=b"grant_type=client_credentials",
                                               headers={"content-type": "text/plain"}))
        # A token the server never issued.
        note("POST /csc/v2/credentials/info", client.post("/csc/v2/credentials/info", json={"credentialID": "x"},
                                                          headers={"Authorization": "Bearer not-a-token"}))
        # Answered, not refused: no reason to count.
        note("POST /csc/v2/info", client.post("/csc/v2/info", json={}))
        note("GET unmatched", client.get("/csc/v2/no-such-method"))
    # A body declared larger than the front reads, refused before any route is chosen.
    raw = tls_exchange(served, b"POST /csc/v2/credentials/list HTTP/1.1\r\nHost: csc\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    answers.append(("POST unmatched", int(head.split()[1]), json.loads(body).get("error_reason")))
    # A body that grows past the bound as it is read (chunked, no length declared).
    chunk = b"[" + b" " * (1024 * 1024)
    raw = tls_exchange(served, b"POST /csc/v2/credentials/list HTTP/1.1\r\nHost: csc\r\n"
                               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    answers.append(("POST /csc/v2/credentials/list", int(head.split()[1]), json.loads(body).get("error_reason")))

    expected: dict[tuple[str, str], float] = {}
    for method, _status, reason in answers:
        if reason is not None:
            expected[(method, reason)] = expected.get((method, reason), 0) + 1
    assert csc_refusals(scrape(served)) == expected

    reasons = [reason for _method, _status, reason in answers]
    assert reasons == ["AUTHENTICATION_FAILED"] * 4 + ["INVALID_ARGUMENT"] * 3 + [
        "APPLICATION_UNAUTHENTICATED", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "INVALID_ARGUMENT",
        "APPLICATION_UNAUTHENTICATED", None, None, "INVALID_ARGUMENT", "INVALID_ARGUMENT"], answers
    assert [status for _method, status, _reason in answers] == [400] * 7 + [401, 400, 400, 400, 401, 200, 404, 413, 413]

    # The call log says the same, line by line.
    lines = [json.loads(line) for line in served.text().splitlines() if line.startswith("{")]
    logged = [(line["method"], int(line["status"]), line.get("reason")) for line in lines
              if line["logger"] == "signserver.calls" and not line["method"].startswith(("SigningService/",
                                                                                         "GET /ca/"))]
    assert sorted(logged, key=repr) == sorted(answers, key=repr)


def test_an_asynchronous_operation_refused_is_counted_once_by_its_reason_however_often_it_is_polled(served):
    """operationMode "A": the start is answered 200, and the refusal (a SAD never issued) is known
    only when the work ends; it is counted then, under the method that started it, once."""
    sign_hash, poll = "/csc/v2/signatures/signHash", "/csc/v2/signatures/signPolling"
    before = csc_refusals(scrape(served))
    digest = base64.b64encode(hashlib.sha256(b"asynchronous").digest()).decode()
    with httpx.Client(base_url=f"https://127.0.0.1:{served.csc_port}", verify=tls_context(served),
                      timeout=60) as client:
        started = client.post(sign_hash, json={
            "credentialID": served.credential_id, "SAD": "a-sad-never-issued", "hashes": [digest],
            "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1", "signAlgo": "1.2.840.10045.4.3.2", "operationMode": "A"})
        assert started.status_code == 200, started.text
        response_id = started.json()["responseID"]
        deadline = time.monotonic() + 60
        while (answer := client.post(poll, json={"responseID": response_id})).json().get("responseID") == response_id:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)
        reason = answer.json()["error_reason"]
        for _ in range(3):  # polled again: the same outcome, counted no more
            assert client.post(poll, json={"responseID": response_id}).json() == answer.json()
    counted = csc_refusals(scrape(served))
    new = {key: value - before.get(key, 0) for key, value in counted.items() if value != before.get(key, 0)}
    assert answer.status_code >= 400 and new == {(f"POST {sign_hash}", reason): 1}, (answer.text, new)
