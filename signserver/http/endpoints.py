"""CaEndpoints: which service call answers which HTTP request, apart from any HTTP transport.

    GET  /crl/issuing.crl, /crl/root.crl        application/pkix-crl
    GET  /ca/issuing.crt, /ca/root.crt          application/pkix-cert
    POST /ocsp                                  application/ocsp-request -> ocsp-response
    GET  /ocsp/<base64 of the DER request>      (RFC 6960 appendix A.1)
    POST /tsa                                   application/timestamp-query -> timestamp-reply (RFC 3161)
    GET  /cps                                   the certificate policies, as text

Everything it serves is public and signed; it changes nothing. Time-stamps are limited per client
address and run on their own lane, so a flood of them cannot take the HSM from signing.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
import math
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from signserver.errors import NotFound, SignServerError
from signserver.http.fault_log import FaultLog
from signserver.http.messages import Request, Response, error_response
from signserver.http.rate_limit import TokenBuckets
from signserver.service import SignService

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 64 * 1024  # an OCSP request or a time-stamp query is a few hundred bytes


class Lane(enum.Enum):
    """Which pool of threads runs a request's work."""

    GENERAL = "general"  # CRLs, certificates, OCSP
    TIME_STAMPING = "time-stamping"  # one HSM signature per request, for anyone who asks


@dataclass(frozen=True)
class Work:
    """A request's blocking work (service calls), to run on ``lane``; ``run`` never raises."""

    lane: Lane
    run: Callable[[], Response]


class CaEndpoints:
    def __init__(self, service: SignService, time_stamp_limit: TokenBuckets):
        self._service = service
        self._time_stamp_limit = time_stamp_limit
        # Every client can repeat what made a request fail: one line a minute, not one a request.
        self._failures = FaultLog(log, service.clock)
        self._bugs = FaultLog(log, service.clock)

    def route(self, request: Request) -> Response | Work:
        """What answers ``request``: a Response decided at once (404, 405, 429), or the Work that
        computes it. Never raises."""
        path, method = request.path, request.method
        if path in ("/ocsp", "/ocsp/", "/tsa", "/tsa/"):
            if method != "POST":
                return error_response(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "POST"))
            if path.startswith("/ocsp"):
                return self._work(Lane.GENERAL, path, lambda: self._ocsp(request.body))
            wait = self._time_stamp_limit.take(request.client)
            if wait:
                return error_response(HTTPStatus.TOO_MANY_REQUESTS, ("Retry-After", str(max(1, math.ceil(wait)))))
            return self._work(Lane.TIME_STAMPING, path, lambda: self._time_stamp(request.body))
        answer = self._public_document(path)
        if answer is None:
            return error_response(HTTPStatus.NOT_FOUND)
        if method not in ("GET", "HEAD"):
            return error_response(HTTPStatus.METHOD_NOT_ALLOWED, ("Allow", "GET, HEAD"))
        return self._work(Lane.GENERAL, path, answer)

    def _public_document(self, path: str) -> Callable[[], Response] | None:
        ca = self._service.ca
        if path in ("/crl/issuing.crl", "/crl/root.crl"):
            authority = path.split("/")[2].split(".")[0]
            return lambda: Response(HTTPStatus.OK, ca.crl(authority), "application/pkix-crl")
        if path in ("/ca/issuing.crt", "/ca/root.crt"):
            index = 0 if path == "/ca/issuing.crt" else 1
            return lambda: Response(HTTPStatus.OK, ca.chain()[index].public_bytes(Encoding.DER),
                                    "application/pkix-cert")
        if path.startswith("/ocsp/"):
            return lambda: self._ocsp(_ocsp_request_from_path(path[len("/ocsp/"):]))
        if path == "/cps":
            return lambda: Response(HTTPStatus.OK, _policy_statement(self._service).encode("utf-8"),
                                    "text/plain; charset=utf-8")
        return None

    def _ocsp(self, request_der: bytes) -> Response:
        return Response(HTTPStatus.OK, self._service.ca.ocsp(request_der), "application/ocsp-response")

    def _time_stamp(self, query_der: bytes) -> Response:
        return Response(HTTPStatus.OK, self._service.pades.tsa.respond(query_der), "application/timestamp-reply")

    def _work(self, lane: Lane, path: str, answer: Callable[[], Response]) -> Work:
        def run() -> Response:
            try:
                return answer()
            except NotFound:
                return error_response(HTTPStatus.NOT_FOUND)
            except SignServerError as exc:
                self._failures.record("HTTP %s failed: %s", _quoted(path), exc)
                return error_response(HTTPStatus.SERVICE_UNAVAILABLE, ("Retry-After", "5"))
            except Exception:  # noqa: BLE001 - a bug must cost one answer, not the connection
                self._bugs.record("HTTP %s failed unexpectedly", _quoted(path), with_traceback=True)
                return error_response(HTTPStatus.INTERNAL_SERVER_ERROR)
        return Work(lane, run)


def _ocsp_request_from_path(encoded: str) -> bytes:
    """The DER request of a GET: base64 per RFC 6960, URL-encoded; the URL-safe alphabet is
    accepted too. Undecodable text gives b"", which is answered as a malformed request."""
    encoded = urllib.parse.unquote(encoded).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return b""


def _quoted(path: str) -> str:
    # The path is the client's text: cut it short for the log (an OCSP GET carries a whole request).
    return path if len(path) <= 100 else path[:100] + "..."


def _policy_statement(service: SignService) -> str:
    lines = [f"{service.config.ca.name}: certificate policies", ""]
    for profile in service.ca.profiles():
        lines.append(f"{profile.policy_oid}  {profile.name}: {profile.title}")
    return "\n".join(lines) + "\n"
