"""FaultAfterAnswer: an ASGI middleware that keeps a connection whose app failed after its answer
went out whole.

Starlette answers a fault with its 500 (or whatever its handler for ``Exception`` answers), then
raises the fault again for the server to log. uvicorn then closed the connection without its
answer having said ``Connection: close`` (RFC 9112 9.6), and a client reusing it (keep-alive, as
httpx and browsers do) met a reset on its next request. A fault that cuts an answer short still
reaches the server, which closes the connection: the client cannot mistake half an answer for a
whole one.

Generic: it knows nothing of the core or the RA, and logs through what it is given (the core's
fronts give their throttled server log, the RA its own logger).
"""

from __future__ import annotations

from typing import Any, Protocol

# Set on a fault its app has logged already (with its traceback) as it answered it: not logged again.
_LOGGED = "_logged_by_its_app"


def mark_logged(fault: BaseException) -> None:
    """Note that ``fault``'s app logged it as it answered it, so that FaultAfterAnswer, to which
    Starlette raises it again, does not log it a second time."""
    try:
        setattr(fault, _LOGGED, True)
    except AttributeError:  # an exception type without attributes: logged twice, as before
        pass


class ErrorLog(Protocol):
    """What a fault is logged to: a logging.Logger, or anything with its ``error``."""

    def error(self, message: str, *args: object, exc_info: Any = ...) -> None:
        """Log ``message % args`` with the exception being handled when ``exc_info`` is true."""


class FaultAfterAnswer:
    """ASGI middleware: a fault an app raises once its answer has gone out whole is logged to
    ``fault_log`` (``error``, with its traceback) unless the app logged it (:func:`mark_logged`),
    and goes no further, so the connection serves the client's next request. A fault before the
    answer is whole still reaches the server, which answers 500 with ``Connection: close`` or, an
    answer begun, closes the connection."""

    def __init__(self, app: Any, fault_log: ErrorLog):
        self.app = app
        self._log = fault_log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered = False

        async def noting_send(message: dict) -> None:
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        try:
            await self.app(scope, receive, noting_send)
        except Exception as fault:
            if not answered:
                raise
            if not getattr(fault, _LOGGED, False):
                self._log.error("Exception in ASGI application after its answer was sent", exc_info=True)
