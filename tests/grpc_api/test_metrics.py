"""A node's metrics and call log: after a known sequence of calls through two workers, one scrape
of the supervisor's endpoint says exactly that, and the JSON log has one line per call."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signserver.v1 import signing_pb2, signing_pb2_grpc
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, application, holder


@pytest.fixture
def served(state_dir, tmp_path):
    # Port 0: the server picks free ports and says which (its workers share the HTTP one).
    server = ServeProcess(state_dir, tmp_path, workers=2, SIGNSERVER_METRICS_LISTEN="127.0.0.1:0",
                          SIGNSERVER_LOGGING_FORMAT="json", SIGNSERVER_LOGGING_CALLS="true").start()
    server.metrics_port = server.wait_for(r"metrics of this node on http://127\.0\.0\.1:(\d+)/metrics")
    server.http_port = server.wait_for(r"time-stamps and CA certificates on http://127\.0\.0\.1:(\d+)")
    yield server
    server.stop()


def scrape(server: ServeProcess) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape, by name and sorted labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def calls(samples, method: str, status: str) -> float:
    return samples.get(("signserver_calls_total",
                        (("front", "grpc"), ("method", method), ("status", status))), 0.0)


def test_scraped_counters_say_exactly_what_was_called(served):
    credentials = application(served, "metrics-app")
    credential = holder(served, "metrics.holder")
    digest = hashlib.sha256(b"metrics").digest()
    statuses = []
    # Several channels, so that both workers serve some of the calls.
    for attempt in range(8):
        with grpc.secure_channel(f"localhost:{served.port}", credentials) as channel:
            stub = signing_pb2_grpc.SigningServiceStub(channel)
            if attempt < 2:
                token = stub.Authorize(signing_pb2.AuthorizeRequest(
                    account="metrics.holder", password=PASSWORD, credential_id=credential,
                    hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=30)
                stub.SignHash(signing_pb2.SignHashRequest(
                    credential_id=credential, activation_token=token.activation_token, signature_algorithm="ecdsa-sha256",
                    digests=[digest]), timeout=30)
                continue
            try:  # six wrong passwords: five count, the fifth locks, the sixth meets the lock
                stub.Authorize(signing_pb2.AuthorizeRequest(
                    account="metrics.holder", password="Wrong-password-1", credential_id=credential,
                    hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest]), timeout=30)
            except grpc.RpcError as error:
                statuses.append(error.code().name)
    assert statuses == ["UNAUTHENTICATED"] * 5 + ["FAILED_PRECONDITION"]

    for path in ("/ca/root.crt", "/ca/root.crt", "/no-such-thing"):  # the CA's HTTP front reports too
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{served.http_port}{path}", timeout=10).read()
        except urllib.error.HTTPError as error:
            assert error.code == 404
            error.read()  # the whole answer, as for the others: a call is counted before its end leaves

    samples = scrape(served)
    assert samples[("signserver_calls_total", (("front", "ca"), ("method", "GET /ca/root.crt"), ("status", "200")))] == 2
    assert samples[("signserver_calls_total", (("front", "ca"), ("method", "GET unmatched"), ("status", "404")))] == 1
    assert calls(samples, "SigningService/Authorize", "OK") == 2
    assert calls(samples, "SigningService/SignHash", "OK") == 2
    assert calls(samples, "SigningService/Authorize", "UNAUTHENTICATED") == 5
    assert calls(samples, "SigningService/Authorize", "FAILED_PRECONDITION") == 1
    assert samples[("signserver_call_seconds_count",
                    (("front", "grpc"), ("method", "SigningService/Authorize")))] == 8
    assert samples[("signserver_lockouts_total", ())] == 1
    assert samples[("signserver_activation_tokens_total", (("event", "issued"),))] == 2
    assert samples[("signserver_activation_tokens_total", (("event", "spent"),))] == 2
    # Every signature held the PKCS#11 lock: the holds were measured.
    assert samples[("signserver_hsm_lock_hold_seconds_count", ())] >= 2
    # The pools' threads, summed over the live workers.
    assert samples[("signserver_blocking_calls_threads", (("pool", "accounts"),))] > 0

    lines = [json.loads(line) for line in served.text().splitlines() if line.startswith("{")]
    call_lines = [line for line in lines if line["logger"] == "signserver.calls"
                  and line["method"].startswith("SigningService/")]
    assert len(call_lines) == 10
    assert {line["worker"] for line in call_lines} <= {"0", "1"}
    assert all(line.keys() >= {"time", "level", "worker", "method", "status", "latency_ms", "request_id"}
               for line in call_lines)
    assert PASSWORD not in served.text() and "Wrong-password-1" not in served.text()


def test_each_live_worker_reports_its_process_figures(served):
    samples = scrape(served)
    pids = {str(pid) for pid in served.worker_pids()}
    figures = {}
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_cpu_seconds_total"):
        figures[name] = {dict(labels)["pid"]: (dict(labels)["worker"], value)
                         for (sample, labels), value in samples.items() if sample == name}
        assert set(figures[name]) == pids, name
        assert {worker for worker, _value in figures[name].values()} == {"0", "1"}
        assert all(value > 0 for _worker, value in figures[name].values()), name
    # Resident memory as the kernel counts it, within what a worker allocates between the scrape
    # and this reading.
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            now = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        assert abs(figures["process_resident_memory_bytes"][pid][1] - now) < 0.5 * now


@pytest.mark.parametrize("path, method, status", [("/", "GET", 404), ("/metrics/extra", "GET", 404),
                                                  ("/favicon.ico", "GET", 404), ("/metrics", "POST", 405)])
def test_the_metrics_endpoint_answers_only_scrapes_of_its_path(served, path, method, status):
    request = urllib.request.Request(f"http://127.0.0.1:{served.metrics_port}{path}", method=method, data=b"" if
                                     method == "POST" else None)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == status
    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics?name[]=signserver_worker",
                                timeout=10) as answer:
        assert answer.status == 200


def test_the_node_whose_worker_holds_the_background_lease_says_so(served):
    """One worker of the node takes the background work's lease (nobody else uses this database):
    the node's figure is 1, so an operator sees which node of several does the background work."""
    deadline = time.monotonic() + 30
    while scrape(served).get(("signserver_background_lease_held", ())) != 1.0:
        assert time.monotonic() < deadline, "no worker reported the lease"
        time.sleep(0.2)


def test_a_worker_that_died_is_counted_once_it_is_started_again(served):
    """Restarts are what an operator alerts on: the supervisor counts each exit by the worker's index."""
    workers = {dict(labels)["pid"]: dict(labels)["worker"] for (name, labels), _ in scrape(served).items()
               if name == "signserver_worker"}
    victim = served.worker_pids()[0]
    index = workers[str(victim)]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(served)
        exits = samples.get(("signserver_worker_exits_total", (("worker", index),)))
        alive = {dict(labels)["worker"] for (name, labels), _ in samples.items() if name == "signserver_worker"}
        if exits == 1.0 and alive == {"0", "1"}:
            break
        assert time.monotonic() < deadline, (exits, alive)
        time.sleep(0.2)
    assert ("signserver_worker_exits_total", (("worker", "1" if index == "0" else "0"),)) not in samples


def test_the_certificates_a_node_serves_with_say_when_they_end(served):
    """An operator alerts on these well before they end: the TLS certificate and the CA's."""
    from cryptography import x509

    deadline = time.monotonic() + 30
    wanted = {"tls", "root-ca", "issuing-ca", "ocsp", "tsa"}
    while True:
        ends = {dict(labels)["certificate"]: value for (name, labels), value in scrape(served).items()
                if name == "signserver_certificate_expiry_timestamp_seconds"}
        if set(ends) == wanted:
            break
        assert time.monotonic() < deadline, ends
        time.sleep(0.2)
    tls = x509.load_pem_x509_certificate((Path(served.env["SIGNSERVER_STATE_DIR"]) / "tls" / "server.pem").read_bytes())
    assert ends["tls"] == tls.not_valid_after_utc.timestamp()
    assert ends["issuing-ca"] < ends["root-ca"] and time.time() < ends["ocsp"] <= ends["issuing-ca"]


def test_calls_to_methods_the_server_does_not_implement_are_counted_under_one_label(served):
    """A client calling a misspelt method, or one an old client still knows, is visible in the
    figures; the method it named is not a label, or a client could grow the series without end."""
    credentials = application(served, "unknown-methods-app")
    called = ["/signserver.v1.SigningService/SignHashh", "/made.up.Service/First", "/made.up.Service/Second",
              "/signserver.v1.NoSuchService/SignHash"]
    codes = []
    with grpc.secure_channel(f"localhost:{served.port}", credentials) as channel:
        for method in called:
            try:
                channel.unary_unary(method)(b"", timeout=10)
            except grpc.RpcError as error:
                codes.append(error.code())
                assert method in error.details()  # the refusal names what the server was asked for
        try:  # a client streaming requests to an unknown method is answered and counted the same way
            list(channel.stream_stream("/made.up.Service/Streaming")(iter([b"a", b"b"]), timeout=10))
        except grpc.RpcError as error:
            codes.append(error.code())
    assert codes == [grpc.StatusCode.UNIMPLEMENTED] * 5

    samples = scrape(served)
    assert calls(samples, "unknown", "UNIMPLEMENTED") == 5
    assert samples[("signserver_call_seconds_count", (("front", "grpc"), ("method", "unknown")))] == 5
    named = {dict(labels).get("method", "") for (_name, labels) in samples}
    assert not any("SignHashh" in method or "made.up" in method or "NoSuchService" in method for method in named)
    lines = [json.loads(line) for line in served.text().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line["logger"] == "signserver.calls" and line.get("method") == "unknown"
               and line["status"] == "UNIMPLEMENTED") == 5


def refusals(samples, method: str, reason: str) -> float:
    return samples.get(("signserver_refusals_total",
                        (("front", "grpc"), ("method", method), ("reason", reason))), 0.0)


def test_refusals_are_counted_by_the_reason_their_answer_carries(served):
    """Several reasons share a status code (a wrong password and an unknown application are both
    UNAUTHENTICATED; a locked and a disabled account both FAILED_PRECONDITION): an operator alerts on
    accounts being locked, not on the wrong passwords before, from the reason each refusal carries."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    credentials = application(served, "reasons-app")
    credential = holder(served, "reasons.holder")
    disabled = holder(served, "reasons.disabled")
    assert served.cli("account", "disable", "reasons.disabled").returncode == 0
    digest = hashlib.sha256(b"reasons").digest()
    answers = []

    def refused(call, *args, **kwargs) -> None:
        with pytest.raises(grpc.RpcError) as error:
            call(*args, timeout=30, **kwargs)
        info = error_details_pb2.ErrorInfo()
        rpc_status.from_call(error.value).details[0].Unpack(info)
        answers.append((error.value.code().name, info.reason))

    def authorize(account: str, password: str, credential_id: str) -> signing_pb2.AuthorizeRequest:
        return signing_pb2.AuthorizeRequest(account=account, password=password, credential_id=credential_id,
                                            hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=[digest])

    for attempt in range(6):  # several channels, so that both workers refuse some of the calls
        with grpc.secure_channel(f"localhost:{served.port}", credentials) as channel:
            stub = signing_pb2_grpc.SigningServiceStub(channel)
            refused(stub.Authorize, authorize("reasons.holder", "Wrong-password-1", credential))
    with grpc.secure_channel(f"localhost:{served.port}", credentials) as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        refused(stub.Authorize, authorize("reasons.disabled", PASSWORD, disabled))
        refused(stub.ListCredentials, signing_pb2.ListCredentialsRequest(account="reasons.holder"),
                metadata=(("x-api-key", "ssk_not-a-real-key"),))
    assert answers == [("UNAUTHENTICATED", "AUTHENTICATION_FAILED")] * 5 + [
        ("FAILED_PRECONDITION", "ACCOUNT_LOCKED"), ("FAILED_PRECONDITION", "ACCOUNT_DISABLED"),
        ("UNAUTHENTICATED", "APPLICATION_UNAUTHENTICATED")]

    samples = scrape(served)
    assert calls(samples, "SigningService/Authorize", "UNAUTHENTICATED") == 5
    assert calls(samples, "SigningService/Authorize", "FAILED_PRECONDITION") == 2
    assert refusals(samples, "SigningService/Authorize", "AUTHENTICATION_FAILED") == 5
    assert refusals(samples, "SigningService/Authorize", "ACCOUNT_LOCKED") == 1
    assert refusals(samples, "SigningService/Authorize", "ACCOUNT_DISABLED") == 1
    assert refusals(samples, "SigningService/ListCredentials", "APPLICATION_UNAUTHENTICATED") == 1
    assert sum(value for (name, _labels), value in samples.items() if name == "signserver_refusals_total") == 8
    # The call log says the same, line by line.
    lines = [json.loads(line) for line in served.text().splitlines() if line.startswith("{")]
    logged = [(line["status"], line.get("reason")) for line in lines if line["logger"] == "signserver.calls"
              and line["method"] in ("SigningService/Authorize", "SigningService/ListCredentials")]
    assert sorted(logged) == sorted(answers)
