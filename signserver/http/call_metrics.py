"""ASGI middleware: every HTTP call reports its status and latency to the meter, and its line to
the log when ``[logging] calls`` is on, like the gRPC calls (:mod:`signserver.grpc_api.call_report`).

The method label is the HTTP method (or "OTHER") and the matched route's path
(``POST /csc/v2/signatures/signHash``), or "unmatched": a client cannot grow the label set with
made-up methods or paths.

A refusal is counted by its stable reason too (``signserver_refusals_total``) where its answer
carries one: the front notes on the request's scope, as it answers, the error class whose
``reason`` the answer carries (:func:`note_refusal`); only such a class is counted, never text of
the request or of the answer, so the reasons stay the hierarchy's. A front whose answers carry no
reason (the CA's: CRL, OCSP, TSA and certificates speak their own protocols) notes none.
"""

from __future__ import annotations

import time

from signserver.errors import SignServerError
from signserver.monitoring.calls import call_answered

UNMATCHED = "unmatched"
# Any token is a method to HTTP: a label per made-up one would let a client grow the series.
KNOWN_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
# The scope's key of the error class a refusal's answer carries the reason of.
REFUSED_WITH = "signserver.refused_with"


def note_refusal(scope, refused_with: type[SignServerError]) -> None:
    """Note that the answer to the request of ``scope`` is a refusal carrying the stable reason of
    ``refused_with``, by which :class:`CallMetrics` counts it; the last noted before the call ends
    is the one counted."""
    scope[REFUSED_WITH] = refused_with


def method_label(scope) -> str:
    """The method a call of ``scope`` is counted under: its HTTP method (or "OTHER") and
    :func:`served_route` (``POST /csc/v2/signatures/signHash``)."""
    verb = scope.get("method")
    return f"{verb if verb in KNOWN_VERBS else 'OTHER'} {served_route(scope)}"


def served_route(scope) -> str:
    """The path of the route that answered, as the app serves it (``/csc/v2/credentials/info``),
    or UNMATCHED. FastAPI puts on the scope the route as its router declares it, without the prefix
    the router was included under (``/credentials/info`` for v1 and v2 alike): the prefix is the
    part of the request's path before the part the route matched, which the app's routing matched
    to that prefix exactly, so it adds no label a client could make up."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    regex, path = getattr(route, "path_regex", None), scope.get("path")
    if regex is not None and isinstance(path, str):
        for start, character in enumerate(path):
            if character == "/" and regex.match(path[start:]):
                return path[:start] + template
    return template


class CallMetrics:
    """Wraps an ASGI app; ``front`` names it in the figures ("csc", "ca"). ``faults_refused_with``:
    the error class whose reason the front's answer to a fault no handler of the app answered
    carries (Starlette answers such a fault outside this middleware, after the call was counted),
    or None when that answer carries no reason."""

    def __init__(self, app, front: str, faults_refused_with: type[SignServerError] | None = None):
        self.app = app
        self.front = front
        self.faults_refused_with = faults_refused_with

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, reported = time.perf_counter(), 500, False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                self._report(scope, status, time.perf_counter() - started)

        async def noting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the last of the answer leaves: a client that has its answer
                # finds the call in the figures it scrapes next.
                report()
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        except Exception:
            if self.faults_refused_with is not None:
                note_refusal(scope, self.faults_refused_with)
            raise
        finally:
            report()  # an answer never finished (a fault, a client gone) is counted all the same

    def _report(self, scope, status: int, seconds: float) -> None:
        method = method_label(scope)
        refused_with = scope.get(REFUSED_WITH)
        if not (status >= 400 and isinstance(refused_with, type) and issubclass(refused_with, SignServerError)):
            refused_with = None  # an answer that is no refusal counts no reason, whatever was noted
        call_answered(self.front, method, str(status), seconds,
                      lambda: dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1"),
                      refused_with)
