"""`signserver serve` with two workers: each serves the CSC API on the one reserved port, asks
every client for a certificate from its CA (mutual TLS is on by default), and gives a client
``[http] request_timeout_seconds`` to send a whole request."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time

import httpx
import pytest

from signserver.descriptors import DescriptorReserve
from signserver.http.csc.serving import CscFront
from tests.grpc_api.serve_process import ServeProcess

CSC_LINE = r"worker \d+ \(pid \d+\) CSC API on https://127\.0\.0\.1:(\d+)/csc/v2/"


@pytest.fixture(scope="module")
def served(state_dir, tmp_path_factory):
    """Two workers with a request timeout of 1 s, and an application's client certificate."""
    server = ServeProcess(state_dir, tmp_path_factory.mktemp("csc-serve"), workers=2,
                          SIGNSERVER_HTTP_REQUEST_TIMEOUT_SECONDS="1").start()
    try:
        server.csc_port = server.wait_for(CSC_LINE, count=2)
        made = server.cli("app", "create", "csc-serve-app", "--no-otp")
        assert made.returncode == 0, made.stderr
        server.client_credentials("csc-serve-app")  # writes the certificate, its key and ca.pem
        yield server
    finally:
        assert server.stop() == 0, server.text()[-3000:]


def tls_context(served, with_certificate: bool = True) -> ssl.SSLContext:
    """Trusts the server's CA; presents the application's certificate unless told not to."""
    context = ssl.create_default_context(cafile=str(served.folder / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(*map(str, served.client_files))
    return context


def test_every_worker_serves_the_csc_api_over_https(served):
    port = served.csc_port
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=tls_context(served), timeout=60) as client:
        info = client.post("/csc/v2/info", json={})
        document = client.get("/csc/v2/openapi.json")
        refused = client.post("/csc/v2/credentials/info", json={"credentialID": "x"},
                              headers={"Authorization": "Bearer not-a-token"})
        login = client.post("/csc/v2/auth/login", json={})  # by the certificate TLS verified
    assert info.status_code == 200 and info.json()["specs"].startswith("2.")
    assert "/csc/v2/signatures/signHash" in document.json()["paths"]
    assert "/csc/v1/signatures/signHash" in document.json()["paths"]
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    assert login.status_code == 200 and login.json()["access_token"]
    ports = {int(p) for p in re.findall(CSC_LINE, served.text())}
    assert ports == {port}


def test_with_mutual_tls_a_client_without_a_certificate_is_refused(served):
    with httpx.Client(base_url=f"https://127.0.0.1:{served.csc_port}", verify=tls_context(served, False),
                      timeout=60) as client, pytest.raises(httpx.TransportError):
        # TLS 1.3: the client's side of the handshake ends before the server has checked; the
        # server's refusal (an alert) comes instead of the answer.
        client.post("/csc/v2/info", json={})


def tls_exchange(served, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` over TLS with the application's certificate, then read until the server
    closes the connection."""
    with socket.create_connection(("127.0.0.1", served.csc_port), timeout=timeout) as raw, \
            tls_context(served).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        if data:
            sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ssl.SSLError, ConnectionResetError):  # closed without a close_notify
            pass
        return received


@pytest.mark.parametrize("partial", [
    pytest.param(b"POST /csc/v2/info HTTP/1.1\r\nHost: csc\r\nContent-", id="half-a-head"),
    pytest.param(b"POST /csc/v2/info HTTP/1.1\r\nHost: csc\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"lang\":", id="half-a-body"),
])
def test_half_sent_requests_are_answered_408_and_closed_within_the_timeout(served, partial):
    # The workers' request timeout is 1 s; the client waits up to 10 s before calling it a hang.
    started = time.monotonic()
    answer = tls_exchange(served, partial)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.split(b"\r\n\r\n")[0].lower()
    assert time.monotonic() - started < 8


def test_a_quiet_connection_is_closed_without_an_answer(served):
    started = time.monotonic()
    assert tls_exchange(served, b"") == b""
    assert time.monotonic() - started < 8


def test_a_connection_while_the_descriptor_reserve_is_short_is_answered_503(csc_server):
    # A reserve larger than any process's limit: every connection finds it short.
    front = CscFront("127.0.0.1:0", csc_server.tls, csc_server.context, DescriptorReserve(1 << 40))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(front.start(), loop).result(30)
        context = ssl.create_default_context(cafile=str(csc_server.tls.cert_file))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ssl.SSLError, ConnectionResetError):
                pass
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head, answer[:200]
        assert front.open_connections == 0
    finally:
        asyncio.run_coroutine_threadsafe(front.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
