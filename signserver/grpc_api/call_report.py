"""What every gRPC call reports when it ends: its status and latency to the meter, a refusal's
stable reason (its ErrorInfo's: several reasons share a status code), and, when ``[logging] calls``
is on, its line in the log (with the request id)."""

from __future__ import annotations

import functools
import time

import grpc

from signserver.errors import SignServerError
from signserver.monitoring.calls import call_answered

FRONT = "grpc"
REQUEST_ID_KEY = "x-request-id"
# The method label of every call to a method the server does not implement: the name the client
# sent is its own choice, and a label per name would let a client grow the series without end.
UNKNOWN_METHOD = "unknown"
# How much of an unknown method's name the refusal quotes back (the client chose it).
QUOTED_METHOD_CHARACTERS = 200


def method_name(full_method: str) -> str:
    """``/signserver.v1.SigningService/SignHash`` -> ``SigningService/SignHash``: the service's
    name without its package, short enough for a label and a log line."""
    service, _, method = full_method.lstrip("/").partition("/")
    return f"{service.rpartition('.')[2]}/{method}"


def aborted_status(context: grpc.aio.ServicerContext) -> str:
    """The status a servicer aborted with (UNKNOWN when gRPC does not say)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def report_call(method: str, status: str, started: float, context: grpc.aio.ServicerContext,
                refused_with: type[SignServerError] | None = None) -> None:
    """Report one call ended with ``status`` (a StatusCode's name) after starting at ``started``
    (time.perf_counter); ``refused_with``: for a refusal, the error class whose ``reason`` its
    ErrorInfo carries."""
    def offered() -> str | None:
        return next((value for key, value in context.invocation_metadata() or ()
                     if key == REQUEST_ID_KEY and isinstance(value, str)), None)

    call_answered(FRONT, method, status, time.perf_counter() - started, offered, refused_with)


def unknown_method_handler(method: str) -> grpc.RpcMethodHandler:
    """The handler of a call to ``method``, which no service implements: it answers UNIMPLEMENTED,
    as gRPC does, and reports the call (method UNKNOWN_METHOD) like any call answered, so that an
    operator sees a client calling a misspelt method, or one an old client still knows.

    Made per call and never kept: the names are the client's and unbounded. Stream-stream, with no
    (de)serializer, fits any kind of call the client makes, and reads none of its requests."""
    return grpc.stream_stream_rpc_method_handler(functools.partial(_refuse_unknown, method))


async def _refuse_unknown(method: str, requests, context: grpc.aio.ServicerContext) -> None:
    started = time.perf_counter()
    report_call(UNKNOWN_METHOD, grpc.StatusCode.UNIMPLEMENTED.name, started, context)  # before the refusal leaves
    quoted = method if len(method) <= QUOTED_METHOD_CHARACTERS else method[:QUOTED_METHOD_CHARACTERS - 3] + "..."
    await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                        f"the server does not implement the method {quoted!r}; its reflection lists those it does")
