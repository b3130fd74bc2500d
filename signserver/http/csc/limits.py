"""The CSC front's bounds: on request bodies (a client cannot make a worker hold more than one
document's worth of JSON for a request), and on the asynchronous operations an application has
under way in a worker (each holds its documents until it ends)."""

from __future__ import annotations

from signserver.errors import InvalidArgument
from signserver.http.csc.errors import error_response

# JSON around the base64 documents of a signDoc request (base64 is 4/3 of the bytes).
ENVELOPE_BYTES = 1024 * 1024


# Every request but signDoc: hashes, ids and factors (the largest, an authorize of the most hashes
# a SAD may cover, is tens of kilobytes). FastAPI reads and parses a body before the endpoint's
# authentication runs, so the bound is what a caller who has not logged in can make a worker hold.
SMALL_BODY_BYTES = 1024 * 1024
DOCUMENT_PATHS = ("/csc/v2/signatures/signDoc",)


def body_limit(max_document_mb: int) -> int:
    """The largest request body of signDoc: one largest document, in base64, and its JSON."""
    return max_document_mb * 1024 * 1024 * 4 // 3 + ENVELOPE_BYTES


class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit (``limit`` for signDoc,
    SMALL_BODY_BYTES for the rest) is answered 413 at once; a body that grows past it while read
    (chunked) stops being read and is answered 413 too, whatever the app made of the failed read
    (FastAPI turns any error of a body read into its own 400 "error parsing the body")."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit if scope.get("path") in DOCUMENT_PATHS else min(self.limit, SMALL_BODY_BYTES)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(scope, receive, send, limit)
            return
        received = 0
        exceeded = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise InvalidArgument(f"the request body exceeds {limit} bytes")
            return message

        async def send_or_refuse(message):
            # Once the body went over the bound, the app's answer (whatever it made of the failed
            # read) gives way to the 413 a declared length gets.
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await _too_large(scope, receive, send, limit)

        await self.app(scope, limited_receive, send_or_refuse)


async def _too_large(scope, receive, send, limit: int) -> None:
    """The 413 answer, a refusal of the caller's input (INVALID_ARGUMENT, as any CSC error answer
    carries its reason); the connection is closed after it, since the rest of the body is not read."""
    await error_response(413, "invalid_request", f"the request body exceeds {limit} bytes", InvalidArgument,
                         headers={"connection": "close"})(scope, receive, send)


# Asynchronous operations (operationMode "A") under way in one worker: each holds its request (up
# to one largest document) until it ends, and waits for its application's turn at the documents
# pool (see CscContext.document_shares), so one application's burst cannot queue without bound
# nor take the turns of the others.
OPERATIONS_PER_APPLICATION = 4
OPERATIONS_PER_WORKER = 64
# Document jobs of one application in the documents pool at once: gRPC's default share
# (DocumentLimits.document_jobs_per_application), so that the two fronts weigh alike.
DOCUMENT_JOBS_PER_APPLICATION = 1
