"""What every gRPC call reports when it ends: its status and latency to the meter, and, when
``[logging] calls`` is on, its line in the log (with the request id)."""

from __future__ import annotations

import logging
import time

import grpc

from signserver.monitoring.logs import calls_logged, log_call, request_id
from signserver.monitoring.meter import meter

FRONT = "grpc"
REQUEST_ID_KEY = "x-request-id"

log = logging.getLogger(__name__)


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
    seconds = time.perf_counter() - started
    try:
        meter().call_finished(FRONT, method, status, seconds)
        if calls_logged():
            offered = next((value for key, value in context.invocation_metadata() or ()
                            if key == REQUEST_ID_KEY and isinstance(value, str)), None)
            log_call(method, status, seconds, request_id(offered))
    except Exception:  # a report that fails must not turn an answered call into a failed one
        log.exception("could not report the call %s", method)
