"""The CA's HTTP endpoints answer every request, shed what they cannot take, and keep the
time-stamping authority and the OCSP responder from taking the HSM from signing. Over a real
server on a free port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import http.client
import logging
import random
import resource
import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Callable

import pytest
from asn1crypto import core, tsp
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from signserver.ca.authority import CertificateRequest
from signserver.clock import ManualClock
from signserver.config import HttpConfig
from signserver.descriptors import DescriptorReserve
from signserver.errors import ServerBusy
from signserver.hsm.module import pkcs11_lock
from signserver.http.ca_front import CaHttpFront
from signserver.monitoring.fault_log import FaultLog
from signserver.http.pools import BoundedPool
from signserver.http.rate_limit import TokenBuckets
from signserver.pades.tsa import EARLIER_TSA_POLICY, parse_request
from tests.ca.test_authority import holder
from tests.readable import readable

DER = serialization.Encoding.DER


class FrontThread:
    """A CaHttpFront on an event loop of its own in a background thread, as a worker runs it on
    its loop beside gRPC."""

    def __init__(self, front: CaHttpFront):
        self.front = front
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-loop", daemon=True)

    def __enter__(self) -> "FrontThread":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.front.start(), self._loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.front.stop(), self._loop).result(60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    @property
    def open_connections(self) -> int:
        return self.front.open_connections


@contextlib.contextmanager
def serving(service, reserve: DescriptorReserve | None = None, **settings):
    """The CA's endpoints of ``service`` on a free port, with ``[http]`` ``settings``."""
    with FrontThread(CaHttpFront(service, "127.0.0.1:0", HttpConfig(**settings), reserve)) as running:
        yield running


@pytest.fixture(scope="module")
def server(ca_service):
    with serving(ca_service, request_timeout_seconds=1, tsa_rate_per_second=1, tsa_burst=3) as running:
        yield running


def exchange(port: int, data: bytes, timeout: float = 10.0, source: str = "127.0.0.1") -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def status_of(answer: bytes) -> int:
    assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:80]
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def header_of(answer: bytes, name: str) -> str | None:
    """The value of the header field ``name`` (any case) in the head of ``answer``."""
    for line in answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


def closes(answer: bytes) -> bool:
    """Whether ``answer`` says the connection closes after it."""
    return (header_of(answer, "Connection") or "").lower() == "close"


def post(port: int, path: str, body: bytes, source: str = "127.0.0.1") -> bytes:
    return exchange(port, f"POST {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body, source=source)


# --- OCSP: every request gets an OCSP response ------------------------------------------

def ocsp_request(hash_oid: str = "1.3.14.3.2.26", certificates: int = 1, extensions=None, serial: int = 12345) -> bytes:
    one = {"req_cert": {"hash_algorithm": {"algorithm": hash_oid}, "issuer_name_hash": b"\x01" * 20,
                        "issuer_key_hash": b"\x02" * 20, "serial_number": serial}}
    tbs = {"request_list": [one] * certificates}
    if extensions:
        tbs["request_extensions"] = extensions
    return asn1_ocsp.OCSPRequest({"tbs_request": tbs}).dump()


def nonce_extension(length: int):
    return [{"extn_id": "1.3.6.1.5.5.7.48.1.2", "critical": False,
             "extn_value": core.OctetString(b"n" * length).dump()}]


@pytest.mark.parametrize("request_der", [
    pytest.param(ocsp_request(hash_oid="1.2.3.4"), id="unknown-hash-oid"),
    pytest.param(ocsp_request(hash_oid="1.2.840.113549.2.5"), id="md5"),
    pytest.param(ocsp_request(certificates=33), id="more-certificates-than-answered"),
    pytest.param(ocsp_request(certificates=0), id="no-certificate"),
    pytest.param(ocsp_request(hash_oid="2.16.840.1.101.3.4.2.1"), id="sha256-with-hashes-of-sha1-size"),
    pytest.param(ocsp_request(certificates=2, serial=-5), id="negative-serial-among-several"),
    pytest.param(ocsp_request(extensions=[{"extn_id": "1.2.3.5", "critical": True,
                                           "extn_value": core.OctetString(b"x").dump()}]), id="critical-extension"),
    pytest.param(ocsp_request(extensions=nonce_extension(129)), id="nonce-too-long"),
    pytest.param(ocsp_request(serial=-5), id="negative-serial"),
    pytest.param(b"\x30\x03\x02\x01", id="truncated-der"),
    pytest.param(b"garbage", id="garbage"),
])
def test_malformed_ocsp_requests_get_malformed_request(server, request_der):
    answer = post(server.port, "/ocsp", request_der)
    assert status_of(answer) == 200
    response = ocsp.load_der_ocsp_response(body_of(answer))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_damaged_ocsp_requests_get_an_answer_never_an_exception(ca_service):
    # As for time-stamp queries: random damage to a good request (a fixed seed) reaches every
    # corner of the DER parser; each answer is an OCSP response, never an exception.
    issuing = ca_service.ca.chain()[0]
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    good = (ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, issuing, hashes.SHA1())
            .add_extension(x509.OCSPNonce(b"n" * 16), critical=False).build().public_bytes(DER))
    generator = random.Random(6960)
    statuses = set()
    for _ in range(3_000):
        damaged = bytearray(good)
        for _ in range(generator.randint(1, 3)):
            position = generator.randrange(len(damaged))
            choice = generator.random()
            if choice < 0.5:
                damaged[position] = generator.randrange(256)
            elif choice < 0.75:
                del damaged[position]
            else:
                damaged.insert(position, generator.randrange(256))
        statuses.add(ocsp.load_der_ocsp_response(ca_service.ca.ocsp(bytes(damaged))).response_status)
    assert ocsp.OCSPResponseStatus.MALFORMED_REQUEST in statuses


def test_ocsp_over_get_with_unknown_hash_algorithm(server):
    encoded = base64.urlsafe_b64encode(ocsp_request(hash_oid="1.2.3.4")).decode()
    answer = exchange(server.port, f"GET /ocsp/{encoded} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n".encode())
    response = ocsp.load_der_ocsp_response(body_of(answer))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_ocsp_for_another_issuer_is_unauthorized_and_a_fitting_nonce_is_echoed(server, ca_service):
    answer = post(server.port, "/ocsp", ocsp_request(extensions=nonce_extension(32)))
    assert ocsp.load_der_ocsp_response(body_of(answer)).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    created, _ = holder(ca_service)
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", created.account.username), "ra")
    request = (ocsp.OCSPRequestBuilder().add_certificate(issued.certificate, ca_service.ca.chain()[0], hashes.SHA256())
               .add_extension(x509.OCSPNonce(b"k" * 32), critical=False).build())
    answer = post(server.port, "/ocsp", request.public_bytes(DER))
    response = ocsp.load_der_ocsp_response(body_of(answer))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"k" * 32


# --- OCSP: the fresh signatures one client may ask for ----------------------------------

def status_request(issuing: x509.Certificate, serial: int, nonce: bytes | None = None) -> bytes:
    """A request about ``serial`` under the issuing CA, with ``nonce`` when given. A serial the CA
    never issued is answered "unknown", signed as any other answer: each new one is a question the
    minute's kept answers cannot answer."""
    name_hash = hashlib.sha1(issuing.subject.public_bytes()).digest()
    key_hash = x509.SubjectKeyIdentifier.from_public_key(issuing.public_key()).digest  # SHA-1 of the key's bits
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(DER)


def signed_answer(answer: bytes) -> ocsp.OCSPResponse:
    """The successful OCSP response an HTTP ``answer`` carries."""
    assert status_of(answer) == 200, answer[:200]
    response = ocsp.load_der_ocsp_response(body_of(answer))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return response


def nonce_of(response: ocsp.OCSPResponse) -> bytes | None:
    try:
        return response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def get_ocsp(port: int, request_der: bytes, source: str = "127.0.0.1") -> bytes:
    encoded = urllib.parse.quote(base64.b64encode(request_der).decode(), safe="")
    return exchange(port, f"GET /ocsp/{encoded} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n".encode(),
                    source=source)


def test_ocsp_signatures_one_address_asks_for_beyond_its_rate_get_429_while_others_are_served(ca_service, ca_clock):
    """Each request with a nonce costs an HSM signature: one client address (an IPv6 /64) may ask
    for ``http.ocsp_rate_per_second`` of them with bursts of ``http.ocsp_burst``, by POST or GET."""
    issuing = ca_service.ca.chain()[0]
    serial = 0x6960_0001  # asked about by this test alone: no answer to it is kept
    with serving(ca_service, ocsp_rate_per_second=1, ocsp_burst=3) as running:
        # Refusals are not signed, so not counted: malformed, and about another issuer's certificate.
        for unsigned in (b"garbage", ocsp_request(extensions=nonce_extension(16))) * 3:
            assert ocsp.load_der_ocsp_response(body_of(post(running.port, "/ocsp", unsigned))).response_status \
                in (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED)
        for index in range(3):
            nonce = bytes([index + 1]) * 16
            assert nonce_of(signed_answer(post(running.port, "/ocsp", status_request(issuing, serial, nonce)))) == nonce
        refused = post(running.port, "/ocsp", status_request(issuing, serial, b"\x09" * 16))
        assert status_of(refused) == 429 and header_of(refused, "Retry-After") == "1"
        refused = get_ocsp(running.port, status_request(issuing, serial, b"\x0a" * 16))
        assert status_of(refused) == 429 and header_of(refused, "Retry-After") == "1"
        other = post(running.port, "/ocsp", status_request(issuing, serial, b"\x0b" * 16), source="127.0.0.2")
        assert nonce_of(signed_answer(other)) == b"\x0b" * 16
        ca_clock.advance(seconds=1)  # one more within the rate
        answer = get_ocsp(running.port, status_request(issuing, serial, b"\x0c" * 16))
        assert nonce_of(signed_answer(answer)) == b"\x0c" * 16
        assert status_of(post(running.port, "/ocsp", status_request(issuing, serial, b"\x0d" * 16))) == 429


def test_ocsp_answers_kept_from_the_last_minute_are_not_counted_but_new_questions_are(ca_service):
    """An answer given again from the minute's kept ones costs no signature, so any number of them
    is served; a question none answers (a serial never asked about) costs one and is counted."""
    issuing = ca_service.ca.chain()[0]
    first = 0x6960_0101
    with serving(ca_service, ocsp_rate_per_second=1, ocsp_burst=3) as running:
        kept = post(running.port, "/ocsp", status_request(issuing, first))  # signed, and kept for a minute
        signed_answer(kept)
        for _ in range(10):
            assert body_of(post(running.port, "/ocsp", status_request(issuing, first))) == body_of(kept)
            assert body_of(get_ocsp(running.port, status_request(issuing, first))) == body_of(kept)
        signed = {serial: post(running.port, "/ocsp", status_request(issuing, serial))
                  for serial in (first + 1, first + 2)}  # each a signature: the burst's second and third
        assert all(signed_answer(answer).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
                   for answer in signed.values())
        refused = post(running.port, "/ocsp", status_request(issuing, first + 3))
        assert status_of(refused) == 429 and header_of(refused, "Retry-After") == "1"
        # The kept answers are still given while the client is limited.
        signed[first] = kept
        for serial, answer in signed.items():
            assert body_of(post(running.port, "/ocsp", status_request(issuing, serial))) == body_of(answer)


def test_a_nonce_beyond_the_limit_gets_the_answer_kept_for_its_question_without_the_nonce(ca_service):
    """RFC 5019 (2.2.1, 4) lets a responder that cannot answer a nonce answer without it: beyond
    the limit, a question whose answer was signed within the minute gets that answer, current and
    signed, instead of a refusal; one whose answer is not kept gets 429."""
    issuing = ca_service.ca.chain()[0]
    serial = 0x6960_0201
    with serving(ca_service, ocsp_rate_per_second=1, ocsp_burst=2) as running:
        kept = post(running.port, "/ocsp", status_request(issuing, serial))
        assert nonce_of(signed_answer(kept)) is None
        assert nonce_of(signed_answer(post(running.port, "/ocsp", status_request(issuing, serial, b"a" * 32)))) \
            == b"a" * 32
        beyond = post(running.port, "/ocsp", status_request(issuing, serial, b"b" * 32))
        assert nonce_of(signed_answer(beyond)) is None and body_of(beyond) == body_of(kept)
        refused = post(running.port, "/ocsp", status_request(issuing, serial + 1, b"c" * 32))
        assert status_of(refused) == 429 and header_of(refused, "Retry-After") == "1"


# --- HTTP framing: malformed requests get a 4xx, not silence -----------------------------

@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 1, 2\r\n\r\nx", 400),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nxxxx", 400),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nxxxx", 400),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\n\r\n", 411),
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 65537\r\n\r\n", 413),
    (b"POST /tsa HTTP/1.1\r\nHost: ca\r\nContent-Length: 65537\r\n\r\n", 413),
    # h11 refuses a length of more digits than any body could have (400, where 413 was).
    (b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    (b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\nNo colon here\r\n\r\n", 400),
    (b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\nName : value\r\n\r\n", 400),
    (b"GET /crl/issuing.crl HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET /crl/issuing.crl\r\n\r\n", 400),
    (b"GET /crl/issuing.crl HTTP/2.0\r\nHost: ca\r\n\r\n", 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello, cut at a blank line
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: ca\r\n\r\n", 431),
    (b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\n" + b"X-A: 1\r\n" * 80 + b"\r\n", 431),
])
def test_malformed_http_is_answered_with_a_client_error_and_closed(server, request_bytes, status):
    answer = exchange(server.port, request_bytes)
    assert status_of(answer) == status
    assert closes(answer)


def test_a_folded_header_line_is_read_as_one_value(server):
    # RFC 9112 5.2 lets a server replace obs-fold with spaces instead of refusing it (h11 does).
    answer = exchange(server.port, b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\nX-A: 1\r\n folded\r\n"
                                   b"Connection: close\r\n\r\n")
    assert status_of(answer) == 200


@pytest.mark.parametrize("target", ["http://[", "http://[::1/crl/issuing.crl", "http://[zz]/crl/issuing.crl",
                                    "http://ca:port/crl/issuing.crl", "http://ca:99999/"])
def test_absolute_urls_that_do_not_parse_are_answered_400(server, target, caplog):
    with caplog.at_level(logging.ERROR, logger="signserver"):
        answer = exchange(server.port, f"GET {target} HTTP/1.1\r\nHost: ca\r\n\r\n".encode())
    assert status_of(answer) == 400
    assert closes(answer)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/ocsp/%", "/ocsp/%zz%C3%28%ff", "/ocsp/%E6%BC%A2%E5%AD%97==", "/ocsp/////",
                                  "/ocsp/" + "A" * 5001, "/crl/issuing.crl%00"])
def test_odd_ocsp_and_document_paths_get_an_answer_and_log_no_error(server, path, caplog):
    with caplog.at_level(logging.ERROR, logger="signserver"):
        answer = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) in (200, 404)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


class _CaWithABug:
    """A CA with a bug: every call raises."""

    def __getattr__(self, name):
        raise RuntimeError("a bug in the CA")


class _ServiceWithABug:
    """The service, but for its CA."""

    def __init__(self, service):
        self._service = service
        self.ca = _CaWithABug()

    def __getattr__(self, name):
        return getattr(self._service, name)


def test_a_fault_of_the_server_is_answered_500_and_logged_once_not_per_request(ca_service, caplog):
    with serving(_ServiceWithABug(ca_service)) as faulty, caplog.at_level(logging.ERROR, logger="signserver"):
        for _ in range(20):
            answer = exchange(faulty.port, b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\n\r\n")
            assert status_of(answer) == 500
            assert closes(answer)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_fault_log_writes_once_per_interval_and_counts_the_rest(caplog):
    clock = ManualClock()
    faults = FaultLog(logging.getLogger("signserver.test"), clock, interval=60)
    with caplog.at_level(logging.ERROR, logger="signserver.test"):
        for _ in range(5):
            faults.record("it failed for %s", "a client")
        clock.advance(seconds=61)
        faults.record("it failed for %s", "a client")
    assert [record.getMessage() for record in caplog.records] == [
        "it failed for a client", "it failed for a client (and 4 times since this was last logged)"]


@pytest.mark.parametrize("method,path,allowed", [("DELETE", "/crl/issuing.crl", "GET, HEAD"),
                                                 ("GET", "/tsa", "POST"), ("PUT", "/ocsp", "POST")])
def test_wrong_method_is_405_with_allow(server, method, path, allowed):
    answer = exchange(server.port, f"{method} {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n".encode())
    assert status_of(answer) == 405 and header_of(answer, "Allow") == allowed


def test_half_sent_requests_are_answered_408_and_closed_within_the_timeout(server):
    # The server's request timeout is 1 s; the client waits up to 10 s before calling it a hang.
    for partial in (b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\n",
                    b"POST /ocsp HTTP/1.1\r\nHost: ca\r\nContent-Length: 100\r\n\r\n0123456789"):
        started = time.monotonic()
        answer = exchange(server.port, partial, timeout=10)
        assert status_of(answer) == 408
        assert time.monotonic() - started < 8


def test_a_trickling_client_is_cut_off_at_the_timeout(server):
    # Slowloris: a byte every 0.2 s never lets a per-read timeout fire; the whole request must
    # arrive within the request timeout (1 s here).
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
                if time.monotonic() - started > 9:
                    break
            answer = read_to_end(sock)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        assert time.monotonic() - started < 9
    assert answer == b"" or status_of(answer) == 408


def read_answer(sock: socket.socket) -> bytes:
    """One answer (its head and a body of its Content-Length), leaving the connection open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    length = int(header_of(received, "Content-Length"))
    while len(body_of(received)) < length:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received


def test_quiet_connections_are_closed_without_an_answer_after_the_timeout(server):
    # The server's request timeout is 1 s: a connection on which nothing is sent, and a kept-alive
    # one after its answer, are closed without a word (an answer nobody asked for could be read
    # as the answer to the client's next request).
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        assert read_to_end(silent) == b""
        assert time.monotonic() - started < 8
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as kept:
        kept.sendall(b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\n\r\n")
        assert status_of(read_answer(kept)) == 200
        answered = time.monotonic()
        assert read_to_end(kept) == b""
        assert time.monotonic() - answered < 8


def test_half_a_second_request_on_a_kept_alive_connection_is_answered_408(server):
    # The timeout starts again once an answer has gone: the next request must be whole in time.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\n\r\nPOST /ocsp HTTP/1.1\r\nHost: ca\r\n"
                     b"Content-Length: 50\r\n\r\nnot all of it")
        assert status_of(read_answer(sock)) == 200
        rest = read_to_end(sock)
    assert status_of(rest) == 408 and closes(rest)


def test_kept_alive_connection_serves_requests_in_turn(server, ca_service):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        opened = None
        for path in ("/ca/root.crt", "/ca/issuing.crt", "/cps"):
            connection.request("GET", path)
            opened = opened or connection.sock
            response = connection.getresponse()
            assert response.status == 200 and not response.will_close
            body = response.read()
            assert connection.sock is opened  # the same connection, not a new one
        assert b"certificate policies" in body
        connection.request("HEAD", "/ca/root.crt")
        response = connection.getresponse()
        root = ca_service.ca.chain()[1].public_bytes(DER)
        assert response.status == 200 and int(response.getheader("Content-Length")) == len(root)
        assert response.read() == b""
    finally:
        connection.close()


# --- connections: bounded, and idle ones cost no thread ---------------------------------

def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard == resource.RLIM_INFINITY else min(hard, needed),
                                                    hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        pytest.skip(f"this test needs {needed} descriptors")


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.05)


def test_many_idle_connections_take_no_threads_and_lock_nobody_out(ca_service):
    raise_descriptor_limit(4 * 1500 + 256)
    threads_before = threading.active_count()
    settings = dict(threads=4, tsa_threads=1, max_connections=4000, max_connections_per_address=4000,
                    request_timeout_seconds=120)  # from one address here
    with serving(ca_service, **settings) as busy, contextlib.ExitStack() as sockets:
        for index in range(1500):
            sock = sockets.enter_context(socket.create_connection(("127.0.0.1", busy.port), timeout=10))
            if index % 2:  # half of them half-sent, the other half silent
                sock.sendall(b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\n")
        wait_for(lambda: busy.open_connections >= 1500)
        with urllib.request.urlopen(f"http://127.0.0.1:{busy.port}/crl/issuing.crl", timeout=10) as response:
            crl = x509.load_der_x509_crl(response.read())
        assert crl.is_signature_valid(ca_service.ca.chain()[0].public_key())
        # The event loop's thread and the pools' threads, whatever the number of connections.
        assert threading.active_count() <= threads_before + 1 + settings["threads"] + settings["tsa_threads"]


def test_connections_beyond_the_bound_are_answered_503_at_once(ca_service):
    with serving(ca_service, max_connections=5, request_timeout_seconds=120) as small, \
            contextlib.ExitStack() as sockets:
        for _ in range(5):
            sockets.enter_context(socket.create_connection(("127.0.0.1", small.port), timeout=10))
        wait_for(lambda: small.open_connections == 5)
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as extra:
            answer = read_to_end(extra)
        assert status_of(answer) == 503 and header_of(answer, "Retry-After") == "1"
        sockets.close()  # the bound frees as connections close
        wait_for(lambda: small.open_connections == 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{small.port}/ca/root.crt", timeout=10) as response:
            assert response.status == 200


def test_one_address_holds_at_most_its_share_of_the_connections(ca_service):
    with serving(ca_service, max_connections=20, max_connections_per_address=4, request_timeout_seconds=120) \
            as small, contextlib.ExitStack() as sockets:
        held = [sockets.enter_context(socket.create_connection(("127.0.0.1", small.port), timeout=10))
                for _ in range(4)]
        wait_for(lambda: small.open_connections == 4)
        with socket.create_connection(("127.0.0.1", small.port), timeout=10) as extra:
            answer = read_to_end(extra)
        assert status_of(answer) == 503 and header_of(answer, "Retry-After") == "1"
        # Another client is served meanwhile.
        other = exchange(small.port, b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n",
                         source="127.0.0.2")
        assert status_of(other) == 200
        held[0].close()  # the address's share frees as its connections close
        wait_for(lambda: small.open_connections == 3)
        again = exchange(small.port, b"GET /ca/root.crt HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n")
        assert status_of(again) == 200


def test_connections_while_the_descriptor_reserve_is_short_are_answered_503(ca_service):
    # A reserve that leaves room for a few dozen more descriptors in this process: each held
    # connection costs two (the client's socket and the server's).
    reserve = DescriptorReserve(max(0, DescriptorReserve().free() - 60))
    with serving(ca_service, reserve=reserve, request_timeout_seconds=120) as server, \
            contextlib.ExitStack() as sockets:
        refusal = None
        for held in range(60):
            # Silent connections (a request sent to a refusing server may reset the connection
            # before its 503 is read): each is either served (counted open) or answered at once.
            sock = sockets.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            wait_for(lambda: server.open_connections > held or readable(sock, 0.01))
            if server.open_connections == held:
                refusal = read_to_end(sock)
                break
        assert held > 0 and refusal is not None
        assert status_of(refusal) == 503 and header_of(refusal, "Retry-After") == "1"
        sockets.close()  # descriptors freed: connections are served again, once the server has counted them
        wait_for(lambda: server.open_connections == 0)

        def served() -> bool:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                wait_for(lambda: server.open_connections == 1 or readable(sock, 0.01))
                return server.open_connections == 1

        wait_for(served)
        wait_for(lambda: server.open_connections == 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/ca/root.crt", timeout=10) as response:
            assert response.status == 200


# --- the time-stamping authority --------------------------------------------------------

def time_stamp_query(extensions=None, policy: str | None = None) -> bytes:
    request = {"version": "v1", "nonce": random.getrandbits(64), "cert_req": True,
               "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                   "hashed_message": hashlib.sha256(b"a document").digest()}}
    if extensions:
        request["extensions"] = extensions
    if policy:
        request["req_policy"] = policy
    return tsp.TimeStampReq(request).dump()


def reply_status(reply: bytes) -> tuple[str, set]:
    info = tsp.PKIStatusInfo.load(core.Sequence.load(reply)[0].dump())
    return info["status"].native, info["fail_info"].native or set()


def test_time_stamp_flood_from_one_address_gets_429_while_others_are_served(server, ca_clock):
    # Burst 3, 1 a second; the module's clock moves only when told to.
    ca_clock.advance(seconds=10)  # a full bucket, whatever other tests took
    for _ in range(3):
        answer = post(server.port, "/tsa", time_stamp_query())
        assert status_of(answer) == 200 and reply_status(body_of(answer))[0] == "granted"
    refused = post(server.port, "/tsa", time_stamp_query())
    assert status_of(refused) == 429 and header_of(refused, "Retry-After") == "1"
    other = post(server.port, "/tsa", time_stamp_query(), source="127.0.0.2")
    assert status_of(other) == 200 and reply_status(body_of(other))[0] == "granted"
    ca_clock.advance(seconds=1)  # one more within the rate
    answer = post(server.port, "/tsa", time_stamp_query())
    assert status_of(answer) == 200 and reply_status(body_of(answer))[0] == "granted"
    assert status_of(post(server.port, "/tsa", time_stamp_query())) == 429


def thread_counts() -> tuple[int, int]:
    """Threads of the time-stamping pools and of the other endpoints' pools, in this process."""
    names = [thread.name for thread in threading.enumerate()]
    return sum(name.startswith("http-tsa_") for name in names), sum(name.startswith("http_") for name in names)


def test_time_stamps_run_on_their_own_bounded_pool(ca_service):
    time_stamping_before, general_before = thread_counts()
    with serving(ca_service, threads=2, tsa_threads=1, tsa_rate_per_second=1000, tsa_burst=1000) as running:
        replies: list[bytes] = []

        def client() -> None:
            for _ in range(4):
                replies.append(post(running.port, "/tsa", time_stamp_query()))

        clients = [threading.Thread(target=client) for _ in range(6)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert len(replies) == 24
        assert all(status_of(reply) == 200 and reply_status(body_of(reply))[0] == "granted" for reply in replies)
        time_stamping, general = thread_counts()
        assert time_stamping == time_stamping_before + 1  # 24 time-stamps, one at a time
        assert general == general_before  # the other endpoints' pool was not needed


def flood_while_the_hsm_waits(running, flood: int, send: Callable[[int], int],
                              another: Callable[[], int]) -> tuple[list[int], list[int], list[int]]:
    """``send(i)`` for each i below ``flood``, all at once from one client while the HSM is held
    (the pools' threads wait for it: the requests queue behind them), then ``another()`` from
    another client once those are queued or refused. Returns the statuses the flood got, what the
    other got at once (within 2 s: a refusal, since a queued request waits for the HSM), and what it
    got in the end."""
    answers: list[int] = []
    other: list[int] = []
    with pkcs11_lock():
        senders = [threading.Thread(target=lambda index=index: answers.append(send(index))) for index in range(flood)]
        for thread in senders:
            thread.start()
        wait_for(lambda: running.open_connections + len(answers) >= flood)
        time.sleep(0.5)  # each read and queued (or refused at once)
        asking = threading.Thread(target=lambda: other.append(another()))
        asking.start()
        asking.join(2)
        at_once = list(other)
    asking.join(60)
    for thread in senders:
        thread.join(60)
    return answers, at_once, other


def test_one_clients_time_stamp_burst_within_its_limit_leaves_room_for_another(ca_service):
    """A client may send ``tsa_burst`` queries at once; while the HSM is busy they wait, and the
    waiting room keeps a place for another client's query."""
    burst = HttpConfig().tsa_burst
    with serving(ca_service) as running:  # the default [http] settings
        answers, at_once, other = flood_while_the_hsm_waits(
            running, burst, lambda _: status_of(post(running.port, "/tsa", time_stamp_query())),
            lambda: status_of(post(running.port, "/tsa", time_stamp_query(), source="127.0.0.2")))
    assert at_once == [] and other == [200]
    assert answers == [200] * burst


def test_one_clients_ocsp_flood_leaves_room_for_another_clients_crl(ca_service):
    """Requests with a nonce are each signed anew: one client sending more at once than the pool
    lets wait takes at most its share of the waiting room, and another client's CRL still waits its
    turn instead of being refused."""
    issued = ca_service.ca.issue(CertificateRequest("cloud-signature-corporate", holder(ca_service)[0].account.username),
                                 "ra:test").certificate
    issuing = ca_service.ca.chain()[0]
    flood = HttpConfig().threads * (1 + 32) + 8  # more than the pool's threads and waiting room together

    def ask(running, index: int) -> int:
        request = (ocsp.OCSPRequestBuilder().add_certificate(issued, issuing, hashes.SHA1())
                   .add_extension(x509.OCSPNonce(index.to_bytes(16, "big")), critical=False).build())
        return status_of(post(running.port, "/ocsp", request.public_bytes(serialization.Encoding.DER)))

    # A limit on signatures that lets the whole flood through: this is about the pool's share.
    with serving(ca_service, ocsp_rate_per_second=1000, ocsp_burst=1000) as running:
        answers, at_once, other = flood_while_the_hsm_waits(
            running, flood, functools.partial(ask, running),
            lambda: status_of(exchange(running.port, b"GET /crl/issuing.crl HTTP/1.1\r\nHost: ca\r\n"
                                                     b"Connection: close\r\n\r\n", source="127.0.0.2")))
    assert at_once == [] and other == [200]
    assert set(answers) <= {200, 503} and answers.count(503) >= 8


@pytest.mark.parametrize("query,failure", [
    (time_stamp_query(extensions=[{"extn_id": "1.2.3.4", "critical": False,
                                   "extn_value": core.OctetString(b"x").dump()}]), "unaccepted_extensions"),
    (time_stamp_query(policy="1.2.3.4.5"), "unaccepted_policy"),
    (time_stamp_query() + b"\x00", "bad_data_format"),  # trailing bytes
], ids=["unaccepted_extensions", "unaccepted_policy", "bad_data_format"])  # the queries hold random nonces
def test_time_stamp_requests_it_cannot_honour_are_rejected(ca_service, query, failure):
    status, failures = reply_status(ca_service.pades.tsa.respond(query))
    assert status == "rejection" and failures == {failure}


def test_time_stamp_with_this_tsas_policy_is_granted(ca_service):
    for policy in (ca_service.pades.tsa.policy, EARLIER_TSA_POLICY):
        reply = ca_service.pades.tsa.respond(time_stamp_query(policy=policy))
        assert reply_status(reply)[0] == "granted"
        token = tsp.TimeStampResp.load(reply)["time_stamp_token"]["content"]["encap_content_info"]["content"]
        assert token.parsed["policy"].dotted == policy  # RFC 3161 2.4.2: the policy asked for


def test_time_stamp_tokens_name_a_policy_every_decoder_reads(ca_service):
    """Under the CA's policy arc, each arc within 31 bits (2.25.<UUID> has a 128-bit one)."""
    reply = tsp.TimeStampResp.load(ca_service.pades.tsa.respond(time_stamp_query()))
    policy = reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed["policy"].dotted
    assert policy == ca_service.pades.tsa.policy
    assert policy.startswith(ca_service.ca.config.policy_oid_arc + ".")
    assert all(int(arc) < 2 ** 31 for arc in policy.split("."))


def test_damaged_time_stamp_queries_get_an_answer_never_an_exception(ca_service):
    # Random damage to a good query (a fixed seed: the same cases every run) reaches every corner
    # of asn1crypto's parser, which fails with several exception types (about 1 case in 1,000).
    good = time_stamp_query()
    generator = random.Random(3161)
    answered = 0
    for index in range(20_000):
        damaged = bytearray(good)
        for _ in range(generator.randint(1, 4)):
            position = generator.randrange(len(damaged))
            choice = generator.random()
            if choice < 0.5:
                damaged[position] = generator.randrange(256)
            elif choice < 0.75:
                del damaged[position]
            else:
                damaged.insert(position, generator.randrange(256))
        parsed = parse_request(bytes(damaged))
        # Answering each parsed query would sign thousands of tokens: every 500th is enough to
        # show that what parses is answered too.
        if isinstance(parsed, tsp.TimeStampReq) and index % 500 == 0:
            status, _ = reply_status(ca_service.pades.tsa.respond_to(parsed).dump())
            assert status in ("granted", "rejection")
            answered += 1
        elif not isinstance(parsed, tsp.TimeStampReq):
            assert reply_status(parsed.dump()) == ("rejection", {"bad_data_format"})
    assert answered >= 3


# --- the parts the transport is built from ----------------------------------------------

def test_bounded_pool_refuses_work_beyond_its_queue():
    pool = BoundedPool("test-pool", threads=1, max_waiting=1)
    release = threading.Event()

    async def scenario() -> list:
        running = asyncio.ensure_future(pool.run(release.wait))
        waiting = asyncio.ensure_future(pool.run(lambda: "waited"))
        await asyncio.sleep(0)  # both taken by the pool
        with pytest.raises(ServerBusy):
            await pool.run(lambda: "refused")
        release.set()
        return await asyncio.gather(running, waiting)

    try:
        assert asyncio.run(scenario()) == [True, "waited"]
    finally:
        release.set()
        pool.shutdown()


def test_token_buckets_limit_per_address_and_per_ipv6_network():
    clock = ManualClock()
    buckets = TokenBuckets(rate=2, burst=2, clock=clock, max_clients=3)
    assert [buckets.take("192.0.2.1") for _ in range(3)] == [0.0, 0.0, 0.5]
    assert buckets.take("192.0.2.2") == 0.0  # another address has its own bucket
    # One IPv6 host holds a /64: its addresses share one bucket; an IPv4-mapped address is IPv4.
    assert [buckets.take(f"2001:db8:1:2::{n}") for n in (1, 2, 3)] == [0.0, 0.0, 0.5]
    assert buckets.take("::ffff:192.0.2.1") == 0.5
    clock.advance(seconds=0.5)
    assert buckets.take("192.0.2.1") == 0.0  # refilled at 2 a second
    for n in range(10):  # more clients than it keeps: the least recently seen are forgotten
        buckets.take(f"198.51.100.{n}")
    assert buckets.take("2001:db8:1:2::9") == 0.0
