"""The CA's endpoints as a Starlette app: the routes to :mod:`signserver.http.endpoints`, the
limits a request meets on its way, and the one place where errors become HTTP statuses.

A request's blocking work runs on a pool of threads, never on the event loop (which the worker's
gRPC server and CSC API share): CRLs, certificates and OCSP on one pool (``http.threads``),
time-stamps on their own (``http.tsa_threads``), so a flood of time-stamps cannot take the HSM
from signing. When a pool's queue is full, 503 with Retry-After. Time-stamps are limited per
client address (``http.tsa_rate_per_second``, ``http.tsa_burst``): beyond, 429 with Retry-After.

So are the OCSP answers that cost an HSM signature (``http.ocsp_rate_per_second``,
``http.ocsp_burst``): one to a request with a nonce, or to a question none of the minute's kept
answers answers (signserver/ca/ocsp_answers.py); a kept answer costs nothing and is never counted,
nor is an unsigned refusal (malformedRequest, unauthorized). The limit is taken when the signature
is due, in the pool's thread, since only the statuses read there tell whether an answer is kept.
Beyond it, a request with a nonce whose question has a kept answer gets that answer, without the
nonce: RFC 5019 2.2.1 has a responder that cannot answer a nonce give the most complete response
it can, without it, and RFC 5019 4 has clients that sent one judge such an answer by its time
rather than refuse it (OpenSSL warns and takes it). A client that insists on its nonce fails on it
as it would on a refusal, and every other one gets a current, signed answer instead of none. Any
other request beyond the limit gets 429 with Retry-After, as a time-stamp does: plain HTTP, which
an OCSP client takes as the failure it is, a caller's script can wait on, and no HTTP cache keeps;
the OCSP status tryLater (RFC 6960 2.3) would fail the same clients without saying for how long.

A POST's Content-Type is its endpoint's (application/ocsp-request, RFC 6960 A.1.1;
application/timestamp-query, RFC 3161 3.4), or one that says nothing of the body: none, which
RFC 9110 8.3 lets a recipient read as the data shows, application/octet-stream, and
application/x-www-form-urlencoded, which curl --data-binary and Python's urllib send when the
caller gives no type. The body is DER either way, and one that is not gets an OCSP or TSP
refusal, so refusing those would only break scripts that work with every other responder. Any
other type (JSON, HTML, a form, the other endpoint's) is a client's mistake: 415 naming the
expected type, in the body and in Accept-Post.

A POST takes only a body of a declared Content-Length of at most MAX_REQUEST_BODY bytes: without
one 411 (a chunked body too), beyond it 413, and the connection is closed. A wrong method is 405
with Allow, an unknown path 404. A failure of the service (the HSM does not answer) is 503 with
Retry-After; a fault of the server's own is 500 and the connection closed. Both are logged at
most once a minute (FaultLog), never with the request's body.

A GET of a document that carries validators (a CRL, an OCSP response by GET) is conditional as
RFC 7232 says: If-None-Match (weak comparison, "*") and, without it, If-Modified-Since answer
304 with the caching header fields and no body when the client's copy is the current one.
"""

from __future__ import annotations

import email.utils
import enum
import functools
import logging
import math
import re
from http import HTTPStatus
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from signserver.config import HttpConfig
from signserver.errors import NotFound, RateLimited, ServerBusy, SignServerError
from signserver.http import endpoints
from signserver.http.call_metrics import CallMetrics
from signserver.http.endpoints import Document
from signserver.http.pools import BoundedPool
from signserver.http.rate_limit import TokenBuckets
from signserver.monitoring.fault_log import FaultLog
from signserver.service import SignService

log = logging.getLogger(__name__)

OCSP_REQUEST = "application/ocsp-request"
TIME_STAMP_QUERY = "application/timestamp-query"
# Types a client sends without meaning anything of the body (see the module's note).
_UNDECLARED_TYPES = frozenset({"application/octet-stream", "application/x-www-form-urlencoded"})
MAX_REQUEST_BODY = 64 * 1024  # an OCSP request or a time-stamp query is a few hundred bytes
WAITING_PER_THREAD = 32  # requests queued per pool thread before 503: a second or so of work
_METHOD_ORDER = ("GET", "HEAD", "POST")  # Allow lists them in this order


class Lane(enum.Enum):
    """Which pool of threads runs a request's work."""

    GENERAL = "general"  # CRLs, certificates, OCSP
    TIME_STAMPING = "time-stamping"  # one HSM signature per request, for anyone who asks


class CaApp:
    """The app (``asgi``) and the pools it runs work on; :meth:`shutdown` once it is served no
    more."""

    def __init__(self, service: SignService, settings: HttpConfig):
        self._service = service
        self._time_stamp_limit = TokenBuckets(settings.tsa_rate_per_second, settings.tsa_burst, service.clock)
        self._ocsp_signature_limit = TokenBuckets(settings.ocsp_rate_per_second, settings.ocsp_burst, service.clock)
        threads, tsa_threads = settings.threads, settings.tsa_threads
        # A client has a quarter of the general pool, and of the time-stamps' one the burst its
        # rate limit lets through at once; that one lets two bursts wait, so that another
        # client's query still waits its turn instead of being refused.
        self._pools = {Lane.GENERAL: BoundedPool("http", threads, threads * WAITING_PER_THREAD),
                       Lane.TIME_STAMPING: BoundedPool("http-tsa", tsa_threads,
                                                       max(tsa_threads * WAITING_PER_THREAD, 2 * settings.tsa_burst),
                                                       per_client=settings.tsa_burst)}
        # Every client can repeat what made a request fail: one line a minute, not one a request.
        self._failures = FaultLog(log, service.clock)
        self._bugs = FaultLog(log, service.clock)
        self.asgi = Starlette(routes=self._routes(), exception_handlers={HTTPException: _http_exception})
        self.asgi.router.redirect_slashes = False  # "/tsa/" is served as it is; anything else is 404
        self.asgi.add_middleware(CallMetrics, front="ca")

    def shutdown(self) -> None:
        """Drop the work still waiting and wait for what runs (an HSM call is never cut)."""
        for pool in self._pools.values():
            pool.shutdown()

    def _routes(self) -> list[Route]:
        service = self._service
        documents = [(f"/crl/{name}.crl", functools.partial(endpoints.crl, service, name))
                     for name in endpoints.CRL_AUTHORITIES]
        documents += [(f"/ca/{name}.crt", functools.partial(endpoints.ca_certificate, service, name))
                      for name in endpoints.CA_CERTIFICATES]
        documents.append(("/cps", functools.partial(endpoints.policy_statement, service)))
        routes = [Route(path, self._document_endpoint(answer), methods=["GET"]) for path, answer in documents]
        # The POST routes come first: "GET /ocsp/" is then 405, not a GET of an empty request.
        for path in ("/ocsp", "/ocsp/"):
            routes.append(Route(path, self._ocsp_post, methods=["POST"]))
        for path in ("/tsa", "/tsa/"):
            routes.append(Route(path, self._time_stamp_post, methods=["POST"]))
        routes.append(Route("/ocsp/{request:path}", self._ocsp_get, methods=["GET"]))
        return routes

    # --- the endpoints ------------------------------------------------------------------

    def _document_endpoint(self, answer: Callable[[], Document]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await self._answer(Lane.GENERAL, request, answer)
        return endpoint

    async def _ocsp_get(self, request: Request) -> Response:
        # The raw path: the request is base64, whose "/" and "+" a client may have percent-encoded.
        encoded = request.scope["raw_path"].decode("ascii")[len("/ocsp/"):]
        der = endpoints.ocsp_request_from_path(encoded)
        return await self._answer(Lane.GENERAL, request, self._ocsp_answer(request, der, cacheable=True))

    async def _ocsp_post(self, request: Request) -> Response:
        body = await _body(request, OCSP_REQUEST)
        if isinstance(body, Response):
            return body
        return await self._answer(Lane.GENERAL, request, self._ocsp_answer(request, body))

    def _ocsp_answer(self, request: Request, der: bytes, cacheable: bool = False) -> Callable[[], Document]:
        """The work of answering the OCSP request ``der``: each new signature is taken from the
        client's allowance, when it is due (see the module's note)."""
        take_signature = functools.partial(self._ocsp_signature_limit.take, _address(request))
        return functools.partial(endpoints.ocsp, self._service, der, cacheable=cacheable,
                                 take_signature=take_signature)

    async def _time_stamp_post(self, request: Request) -> Response:
        # Refused before a time-stamp of the client's share is taken.
        refusal = _body_refusal(request) or _media_type_refusal(request, TIME_STAMP_QUERY)
        if refusal is not None:
            return refusal
        wait = self._time_stamp_limit.take(_address(request))
        if wait:
            return _too_many_requests(wait)
        body = await _body(request, TIME_STAMP_QUERY)
        if isinstance(body, Response):
            return body
        return await self._answer(Lane.TIME_STAMPING, request,
                                  functools.partial(endpoints.time_stamp, self._service, body))

    # --- where errors become statuses ---------------------------------------------------

    async def _answer(self, lane: Lane, request: Request, answer: Callable[[], Document]) -> Response:
        """``answer``'s document, computed on ``lane``'s pool; or the status of its failure."""
        try:
            document = await self._pools[lane].run(answer, request.client.host if request.client else None)
        except RateLimited as exc:  # before ServerBusy, which it is
            return _too_many_requests(exc.retry_seconds or 1)
        except ServerBusy:
            return plain_answer(HTTPStatus.SERVICE_UNAVAILABLE, ("Retry-After", "1"))
        except NotFound:
            return plain_answer(HTTPStatus.NOT_FOUND)
        except SignServerError as exc:
            self._failures.record("HTTP %s failed: %s", _quoted(request), exc)
            return plain_answer(HTTPStatus.SERVICE_UNAVAILABLE, ("Retry-After", "5"))
        except Exception:  # noqa: BLE001 - a bug must cost one answer, not the server
            self._bugs.record("HTTP %s failed unexpectedly", _quoted(request), with_traceback=True)
            return plain_answer(HTTPStatus.INTERNAL_SERVER_ERROR, close=True)
        headers = dict(document.headers)
        if request.method in ("GET", "HEAD") and _not_modified(request, headers):
            return Response(status_code=HTTPStatus.NOT_MODIFIED.value,
                            headers={name: value for name, value in headers.items() if name in _NOT_MODIFIED_FIELDS})
        return Response(document.body, media_type=document.media_type, headers=headers)


# What a 304 repeats of the 200 it stands for (RFC 7232 4.1): the ETag names the copy, and the
# caching fields refresh the cache's; Last-Modified is left out, as the ETag is there.
_NOT_MODIFIED_FIELDS = ("ETag", "Cache-Control", "Expires")
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')


def _not_modified(request: Request, headers: dict[str, str]) -> bool:
    """Whether the client's copy of the document whose header fields are ``headers`` is the
    current one (RFC 7232 6): If-None-Match decides when sent (weak comparison, or "*");
    otherwise If-Modified-Since, when it is a valid date not earlier than Last-Modified."""
    etag = headers.get("ETag")
    last_modified = headers.get("Last-Modified")
    if etag is None and last_modified is None:
        return False
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        current = _ENTITY_TAG.fullmatch(etag) if etag else None
        return current is not None and current.group(1) in _ENTITY_TAG.findall(if_none_match)
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since is None or last_modified is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a year beyond any date
        return False  # an invalid date is ignored (RFC 7232 3.3)
    if since.tzinfo is None:
        return False  # not an HTTP-date (which is GMT)
    return email.utils.parsedate_to_datetime(last_modified) <= since


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (404 for an unknown path, 405 for a wrong method), in this app's
    words, with Allow in a fixed order (Starlette keeps a route's methods in a set)."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if "Allow" in headers:
        allowed = {method.strip() for method in headers["Allow"].split(",")}
        headers["Allow"] = ", ".join(method for method in _METHOD_ORDER if method in allowed)
    return plain_answer(HTTPStatus(exc.status_code), *headers.items())


def _body_refusal(request: Request) -> Response | None:
    """The answer to a POST whose body is not of a declared length within MAX_REQUEST_BODY;
    None when it is. (h11 has refused a Content-Length that is not a number, or two that differ.)"""
    headers = request.headers
    if "transfer-encoding" in headers:
        status = HTTPStatus.BAD_REQUEST if "content-length" in headers else HTTPStatus.LENGTH_REQUIRED
        return plain_answer(status, close=True)
    length = headers.get("content-length")
    if length is None:
        return plain_answer(HTTPStatus.LENGTH_REQUIRED, close=True)
    if int(length) > MAX_REQUEST_BODY:
        return plain_answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, close=True)
    return None


def _media_type_refusal(request: Request, expected: str) -> Response | None:
    """The 415 answer to a POST whose Content-Type is neither ``expected`` nor one that says
    nothing of the body (see the module's note); None when it is taken. The body is left unread,
    so the connection closes."""
    declared = request.headers.get("content-type")
    if declared is None:
        return None
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type == expected or media_type in _UNDECLARED_TYPES:
        return None
    return plain_answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, ("Accept-Post", expected), close=True,
                        detail=f"send the body as Content-Type: {expected}")


async def _body(request: Request, media_type: str) -> bytes | Response:
    """The body of a POST of ``media_type``, or the answer that refuses it."""
    refusal = _body_refusal(request) or _media_type_refusal(request, media_type)
    if refusal is not None:
        return refusal
    try:
        return await request.body()
    except ClientDisconnect:  # gone, or cut off by the request timeout: this answer is never sent
        return plain_answer(HTTPStatus.REQUEST_TIMEOUT, close=True)


def _address(request: Request) -> str:
    """The client's address, which its rate limits are kept under (a test client may have none)."""
    return request.client.host if request.client else "unknown"


def _too_many_requests(wait: float) -> Response:
    """429 for a client beyond its rate, with the whole seconds until it may ask again."""
    return plain_answer(HTTPStatus.TOO_MANY_REQUESTS, ("Retry-After", str(max(1, math.ceil(wait)))))


def plain_answer(status: HTTPStatus, *headers: tuple[str, str], close: bool = False, detail: str = "") -> Response:
    """A short plain-text answer that names the status and, with ``detail``, what the client
    should do (never the request's content); ``close``: the connection closes after it."""
    fields = dict(headers)
    if close:
        fields["Connection"] = "close"
    text = f"{status.value} {status.phrase}\n" + (f"{detail}\n" if detail else "")
    return Response(text, status_code=status.value,
                    media_type="text/plain; charset=utf-8", headers=fields)


def _quoted(request: Request) -> str:
    # The path is the client's text: cut it short for the log (an OCSP GET carries a whole request).
    path = request.scope["raw_path"].decode("ascii", "replace")
    return path if len(path) <= 100 else path[:100] + "..."
