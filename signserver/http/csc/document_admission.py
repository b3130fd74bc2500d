"""Admission of signDoc requests before their body is read.

A signDoc body may be hundreds of megabytes, and FastAPI reads and decodes it whole before the
endpoint runs. So the caller is authenticated first, from the request's head (as the endpoint
would: a refused caller is answered at once and its body never read), then its declared body is
weighed against the worker's BodyBudget; a body without a Content-Length (chunked) is weighed as
it arrives. A request that does not fit now is answered 429 MEMORY_EXHAUSTED with a Retry-After,
before its body is read (or as soon as a chunked one outgrows what fits), and its connection is
closed, since the rest of the body is not read.
"""

from __future__ import annotations

from starlette.requests import Request

from signserver.errors import MemoryExhausted, SignServerError
from signserver.http.csc.auth import calling_application
from signserver.http.csc.body_budget import BodyBudget, BodyReservation
from signserver.http.csc.errors import signserver_error_response
from signserver.http.csc.limits import DOCUMENT_PATHS

# Where the request's reservation waits for the endpoint (an asynchronous operation keeps it).
RESERVATION_SCOPE_KEY = "signserver.csc.body_reservation"


def body_reservation(request: Request) -> BodyReservation | None:
    """The reservation DocumentAdmission made for ``request``; None for another path."""
    return request.scope.get(RESERVATION_SCOPE_KEY)


def _declared_size(scope) -> int | None:
    declared = dict(scope.get("headers") or ()).get(b"content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


class DocumentAdmission:
    """ASGI middleware: signDoc requests admitted within ``budget`` (see the module's note);
    other paths pass as they are."""

    def __init__(self, app, budget: BodyBudget):
        self.app = app
        self.budget = budget

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in DOCUMENT_PATHS:
            return await self.app(scope, receive, send)
        declared = _declared_size(scope)
        try:
            reservation = await self._admit(scope, declared)
        except SignServerError as refused:
            await _refuse(refused, scope, receive, send)
            return
        scope[RESERVATION_SCOPE_KEY] = reservation
        try:
            await self._serve(scope, receive, send, reservation, counted=declared is None)
        finally:
            if not reservation.kept:
                reservation.release()

    async def _admit(self, scope, declared: int | None) -> BodyReservation:
        """Raises: what calling_application raises (Unauthenticated, InvalidArgument, ...);
        MemoryExhausted: the declared body does not fit now."""
        application = await calling_application(Request(scope))
        return self.budget.reserve(application.id, declared or 0)

    async def _serve(self, scope, receive, send, reservation: BodyReservation, counted: bool) -> None:
        """The app, with a body of no declared length (``counted``) weighed as it arrives."""
        refusal: MemoryExhausted | None = None

        async def weighed_receive():
            nonlocal refusal
            message = await receive()
            if counted and message["type"] == "http.request":
                try:
                    reservation.grow(len(message.get("body", b"")))
                except MemoryExhausted as refused:
                    refusal = refused
                    raise
            return message

        async def send_or_refuse(message):
            # Once the body outgrew what fits, the app's answer (whatever it made of the failed
            # read) gives way to the refusal.
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start":
                await _refuse(refusal, scope, receive, send)

        await self.app(scope, weighed_receive, send_or_refuse)


async def _refuse(error: SignServerError, scope, receive, send) -> None:
    """The answer to a request refused before its body was read; its connection is closed, since
    the rest of the body is not read."""
    response = signserver_error_response(error)
    response.headers["connection"] = "close"
    await response(scope, receive, send)
