"""No request head a client can send goes unanswered by the CA's HTTP endpoints: generated methods,
targets (brackets, percent signs, unicode, absolute URLs, OCSP GET paths), versions and header
fields go to a real server on a free port; every connection gets a well-formed status line back,
and nothing is logged as an error."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signserver.clock import SystemClock
from tests.ca.test_http_hardening import serving
from tests.conftest import service_with_ca
from tests.fuzz.conftest import fuzz_settings

# About 5 to 15 s on a loaded 2-core machine: most requests are refused or answered in a millisecond
# or two; a few wait for the server's 1 s request timeout (a body shorter than its length).
EXAMPLES = 1000
STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5][0-9][0-9] [^\r\n]*\r\n")

# Text without CR and LF: a line break inside a generated part would end the head early, which
# the framing tests cover; here every example is one head.
_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40)
_URL_TEXT = st.lists(st.sampled_from(list("[]%?#/:@!$&'()*+,;=~._-aZ09") + ["%2F", "%25", "%zz", "%C3%28", "漢", "é"]),
                     max_size=30).map("".join)
_PATHS = ["/crl/issuing.crl", "/crl/root.crl", "/ca/issuing.crt", "/ca/root.crt", "/ocsp", "/ocsp/", "/tsa", "/cps"]

# Mostly well-formed parts, so that most examples get past the request line into what follows.
methods = st.one_of(st.sampled_from(["GET", "HEAD", "POST"]),
                    st.sampled_from(["PUT", "DELETE", "OPTIONS", "CONNECT", "get", "G@T", ""]), _TEXT)
targets = st.one_of(
    st.sampled_from(_PATHS),
    st.builds(lambda path, tail: path + tail, st.sampled_from(_PATHS + ["/", "//", "/ocsp/"]), _URL_TEXT),
    st.builds(lambda scheme, host, tail: scheme + host + tail,
              st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:", ""]),
              st.one_of(st.sampled_from(["ca", "[", "[::1", "[::1]", "[zz]", "ca:80", "ca:port", "ca:99999", "[::1]:x",
                                         "user@ca", "漢字.mo", ""]),
                        _URL_TEXT.map(lambda text: "[" + text)),
              st.one_of(st.sampled_from(_PATHS), _URL_TEXT)),
    _TEXT,
)
versions = st.one_of(st.just("HTTP/1.1"), st.just("HTTP/1.0"),
                     st.sampled_from(["HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "http/1.1", "HTTP/1"]), _TEXT)
header_names = st.one_of(st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Content-Type",
                                          "Expect", "Upgrade", "X-Forwarded-For"]),
                         st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True),
                         st.sampled_from(["Host ", " Host", "Hóst", ""]), _TEXT)
header_values = st.one_of(st.sampled_from(["ca", "0", "1", "chunked", "100-continue", "99999999999999999999", "-1",
                                           "1, 1", " ", "漢字", "\t"]),
                          _TEXT)
headers = st.one_of(st.just([]), st.lists(st.tuples(header_names, header_values), max_size=6))
bodies = st.binary(max_size=64)


@pytest.fixture(scope="module")
def http_server(config, tmp_path_factory):
    service = service_with_ca(config, tmp_path_factory.mktemp("http-fuzz") / "signserver.db", SystemClock())
    with serving(service, request_timeout_seconds=1, tsa_rate_per_second=1000, tsa_burst=1000) as server:
        yield server


def request_bytes(method: str, target: str, version: str, fields: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {target} {version}"] + [f"{name}:{value}" for name, value in fields]
    # The client ends the exchange after one answer, so that no example waits for an idle timeout.
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: its answer is still there
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:  # closed with unread bytes of ours: what came before counts
            pass
        return received


@fuzz_settings(EXAMPLES)
@given(method=methods, target=targets, version=versions, fields=headers, body=bodies,
       with_host=st.booleans(), with_length=st.booleans())
def test_every_request_head_gets_a_status_line_and_logs_no_error(http_server, logged_errors, method, target, version,
                                                                  fields, body, with_host, with_length):
    logged_errors.records.clear()  # each example answers for its own lines
    if with_host:  # past the Host check, into the target's and the endpoints' parsing
        fields = [("Host", "ca")] + fields
    if with_length:
        fields = fields + [("Content-Length", str(len(body)))]
    answer = exchange(http_server.port, request_bytes(method, target, version, fields, body))
    assert STATUS_LINE.match(answer), answer[:200]
    assert b"\r\n\r\n" in answer
    assert not logged_errors.records, [record.getMessage() for record in logged_errors.records]
