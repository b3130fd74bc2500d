"""The CA's endpoints as a Starlette app: the routes to :mod:`signserver.http.endpoints`, the
limits a request meets on its way, and the one place where errors become HTTP statuses.

A request's blocking work runs on a pool of threads, never on the event loop (which the worker's
gRPC server and CSC API share): CRLs, certificates and OCSP on one pool (``http.threads``),
time-stamps on their own (``http.tsa_threads``), so a flood of time-stamps cannot take the HSM
from signing. When a pool's queue is full, 503 with Retry-After. Time-stamps are limited per
client address (``http.tsa_rate_per_second``, ``http.tsa_burst``): beyond, 429 with Retry-After.

A POST takes only a body of a declared Content-Length of at most MAX_REQUEST_BODY bytes: without
one 411 (a chunked body too), beyond it 413, and the connection is closed. A wrong method is 405
with Allow, an unknown path 404. A failure of the service (the HSM does not answer) is 503 with
Retry-After; a fault of the server's own is 500 and the connection closed. Both are logged at
most once a minute (FaultLog), never with the request's body.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from http import HTTPStatus
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from signserver.config import HttpConfig
from signserver.errors import NotFound, ServerBusy, SignServerError
from signserver.http import endpoints
from signserver.http.call_metrics import CallMetrics
from signserver.http.endpoints import Document
from signserver.http.fault_log import FaultLog
from signserver.http.pools import BoundedPool
from signserver.http.rate_limit import TokenBuckets
from signserver.service import SignService

log = logging.getLogger(__name__)

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
        threads, tsa_threads = settings.threads, settings.tsa_threads
        self._pools = {Lane.GENERAL: BoundedPool("http", threads, threads * WAITING_PER_THREAD),
                       Lane.TIME_STAMPING: BoundedPool("http-tsa", tsa_threads, tsa_threads * WAITING_PER_THREAD)}
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
        return await self._answer(Lane.GENERAL, request,
                                  functools.partial(endpoints.ocsp, self._service, der, cacheable=True))

    async def _ocsp_post(self, request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        return await self._answer(Lane.GENERAL, request, functools.partial(endpoints.ocsp, self._service, body))

    async def _time_stamp_post(self, request: Request) -> Response:
        refusal = _body_refusal(request)
        if refusal is not None:
            return refusal
        wait = self._time_stamp_limit.take(request.client.host if request.client else "unknown")
        if wait:
            return plain_answer(HTTPStatus.TOO_MANY_REQUESTS, ("Retry-After", str(max(1, math.ceil(wait)))))
        body = await _body(request)
        if isinstance(body, Response):
            return body
        return await self._answer(Lane.TIME_STAMPING, request,
                                  functools.partial(endpoints.time_stamp, self._service, body))

    # --- where errors become statuses ---------------------------------------------------

    async def _answer(self, lane: Lane, request: Request, answer: Callable[[], Document]) -> Response:
        """``answer``'s document, computed on ``lane``'s pool; or the status of its failure."""
        try:
            document = await self._pools[lane].run(answer)
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
        return Response(document.body, media_type=document.media_type, headers=dict(document.headers))


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


async def _body(request: Request) -> bytes | Response:
    """The body of a POST, or the answer that refuses it."""
    refusal = _body_refusal(request)
    if refusal is not None:
        return refusal
    try:
        return await request.body()
    except ClientDisconnect:  # gone, or cut off by the request timeout: this answer is never sent
        return plain_answer(HTTPStatus.REQUEST_TIMEOUT, close=True)


def plain_answer(status: HTTPStatus, *headers: tuple[str, str], close: bool = False) -> Response:
    """A short plain-text answer that names only the status (never the request's content);
    ``close``: the connection closes after it."""
    fields = dict(headers)
    if close:
        fields["Connection"] = "close"
    return Response(f"{status.value} {status.phrase}\n", status_code=status.value,
                    media_type="text/plain; charset=utf-8", headers=fields)


def _quoted(request: Request) -> str:
    # The path is the client's text: cut it short for the log (an OCSP GET carries a whole request).
    path = request.scope["raw_path"].decode("ascii", "replace")
    return path if len(path) <= 100 else path[:100] + "..."
