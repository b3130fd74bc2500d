"""ASGI middleware: every HTTP call reports its status and latency to the meter, and its line to
the log when ``[logging] calls`` is on, like the gRPC calls (:mod:`signserver.grpc_api.call_report`).

The method label is the HTTP method (or "OTHER") and the matched route's path
(``POST /csc/v2/signatures/signHash``), or "unmatched": a client cannot grow the label set with
made-up methods or paths.
"""

from __future__ import annotations

import time

from signserver.monitoring.calls import call_answered

UNMATCHED = "unmatched"
# Any token is a method to HTTP: a label per made-up one would let a client grow the series.
KNOWN_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class CallMetrics:
    """Wraps an ASGI app; ``front`` names it in the figures ("csc", "ca")."""

    def __init__(self, app, front: str):
        self.app = app
        self.front = front

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, reported = time.perf_counter(), 500, False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                self._report(scope, str(status), time.perf_counter() - started)

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
        finally:
            report()  # an answer never finished (a fault, a client gone) is counted all the same

    def _report(self, scope, status: str, seconds: float) -> None:
        route = scope.get("route")
        verb = scope.get("method")
        method = f"{verb if verb in KNOWN_VERBS else 'OTHER'} {getattr(route, 'path', UNMATCHED)}"
        call_answered(self.front, method, status, seconds,
                      lambda: dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1"))
