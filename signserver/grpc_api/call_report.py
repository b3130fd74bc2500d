"""What every gRPC call reports when it ends: its status and latency to the meter, and, when
``[logging] calls`` is on, its line in the log (with the request id)."""

from __future__ import annotations

import time

import grpc

from signserver.monitoring.calls import call_answered

FRONT = "grpc"
REQUEST_ID_KEY = "x-request-id"


def method_name(full_method: str) -> str:
    """``/signserver.v1.SigningService/SignHash`` -> ``SigningService/SignHash``: the service's
    name without its package, short enough for a label and a log line."""
    service, _, method = full_method.lstrip("/").partition("/")
    return f"{service.rpartition('.')[2]}/{method}"


def aborted_status(context: grpc.aio.ServicerContext) -> str:
    """The status a servicer aborted with (UNKNOWN when gRPC does not say)."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def report_call(method: str, status: str, started: float, context: grpc.aio.ServicerContext) -> None:
    """Report one call ended with ``status`` (a StatusCode's name) after starting at ``started``
    (time.perf_counter)."""
    def offered() -> str | None:
        return next((value for key, value in context.invocation_metadata() or ()
                     if key == REQUEST_ID_KEY and isinstance(value, str)), None)

    call_answered(FRONT, method, status, time.perf_counter() - started, offered)
