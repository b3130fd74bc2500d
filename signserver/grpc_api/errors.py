"""The one place where signserver errors become gRPC status codes and their details.

A refusal carries its status code and message (for people), the ``help-code`` trailer when the
error has one, and a ``google.rpc.Status`` (read with ``grpc_status.rpc_status.from_call``) with:
an ``ErrorInfo`` whose reason is the error class's stable ``reason`` (domain "signserver"; metadata
"help_code", for a locked account "locked_until" in RFC 3339 UTC, and for a refused new password
"rule", the rule it broke); a ``BadRequest`` naming the field at fault for INVALID_ARGUMENT when it
is known; a ``RetryInfo`` for RESOURCE_EXHAUSTED.

A call that reaches the worker's memory bound (a MemoryError) is refused as MemoryExhausted, and
so is each message of a stream while the worker is near it (signserver/grpc_api/worker_memory.py).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from signserver import errors
from signserver.grpc_api.call_report import aborted_status, method_name, report_call, unknown_method_handler
from signserver.grpc_api.worker_memory import check_memory, memory_refusal
from signserver.memory_bound import out_of_memory

log = logging.getLogger(__name__)

# Looked up along each error's class hierarchy: the most specific entry wins.
STATUS_BY_ERROR: dict[type[errors.SignServerError], grpc.StatusCode] = {
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.AuthenticationFailed: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ActivationRefused: grpc.StatusCode.PERMISSION_DENIED,
    errors.AccountLocked: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AccountDisabled: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AuthenticationBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.CredentialUnusable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CertificateRefused: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RequestReplayed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ServerStopping: grpc.StatusCode.UNAVAILABLE,
    errors.UpstreamUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DataCorrupted: grpc.StatusCode.DATA_LOSS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.TokenNotFound: grpc.StatusCode.UNAVAILABLE,  # the server's own token is missing
    errors.HsmUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.HsmLoginFailed: grpc.StatusCode.UNAVAILABLE,
    errors.HsmPinLocked: grpc.StatusCode.UNAVAILABLE,
    errors.HsmError: grpc.StatusCode.INTERNAL,
    errors.ConfigurationError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.CallerGaveUp: grpc.StatusCode.CANCELLED,
    errors.SignServerError: grpc.StatusCode.INTERNAL,
}

GENERIC_INTERNAL_MESSAGE = "internal error; the server's log has the details"
# Status details travel in a header, and gRPC clients refuse headers over 16 KiB by default: a
# message that quotes a megabyte of the caller's input would reach the caller as a transport
# error instead of its status.
MAX_DETAILS_CHARACTERS = 1000
ERROR_DOMAIN = "signserver"
# What RESOURCE_EXHAUSTED suggests, unless the refusal knows better (ServerBusy.retry_seconds): a
# pool's queue or an account's attempts under way drain in about the time of a few password checks.
RETRY_DELAY_SECONDS = 1


def status_for(error: errors.SignServerError) -> grpc.StatusCode:
    """The status code for a signserver error."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns signserver errors into their status codes, and anything unexpected into INTERNAL
    with a generic message (the traceback goes to the log, never to the caller); answers and
    reports a call to a method no service implements (call_report.unknown_method_handler)."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method: wrapped once, not per call

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return unknown_method_handler(method)
            wrapped = self._wrapped[method] = _wrapped(handler, method)
        return wrapped


def _wrapped(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    for kind, make_handler, wrap in _HANDLER_KINDS:
        behaviour = getattr(handler, kind)
        if behaviour:
            # Requests reach the wrapper as bytes and are parsed there, so that a malformed one
            # (a string that is not UTF-8, say) becomes INVALID_ARGUMENT, not INTERNAL.
            return make_handler(
                wrap(behaviour, method, handler.request_deserializer, streaming_request=kind.startswith("stream")),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
    return handler


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    if out_of_memory(exc):
        exc = memory_refusal(method, exc)  # a MemoryExhausted, logged there at ERROR
    if isinstance(exc, errors.SignServerError):
        code = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", method, exc, exc_info=exc)
        else:
            log.info("%s refused with %s: %s", method, code.name, exc)
        message = _details(str(exc))
        help_code = getattr(exc, "help_code", None)
        trailer = (("help-code", help_code),) if help_code else ()
        await context.abort(code, message, trailer + _status_trailer(rich_status(code, message, exc)))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE, _status_trailer(rich_status(
        grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE, errors.SignServerError())))


def rich_status(code: grpc.StatusCode, message: str, error: errors.SignServerError) -> status_pb2.Status:
    """The google.rpc.Status of a refusal: ``code`` and ``message`` exactly as the call ends with
    (clients check that they match), and the details a program reads."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason=type(error).reason, domain=ERROR_DOMAIN, metadata=_error_metadata(error)))
    field = getattr(error, "field", None)
    if code is grpc.StatusCode.INVALID_ARGUMENT and field:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]))
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = errors.retry_after_seconds(error, RETRY_DELAY_SECONDS)
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=delay)))
    return status


def _error_metadata(error: errors.SignServerError) -> dict[str, str]:
    metadata = {}
    help_code = getattr(error, "help_code", None)
    if help_code:
        metadata["help_code"] = help_code
    if isinstance(error, errors.AccountLocked) and error.until is not None:
        metadata["locked_until"] = rfc3339_utc(error.until)
    rule = getattr(error, "rule", None)  # the password rule a new password broke
    if rule:
        metadata["rule"] = rule
    return metadata


def rfc3339_utc(moment: datetime.datetime) -> str:
    """E.g. 2026-11-21T02:56:06Z (whole seconds: the lock is kept to the second)."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_trailer(status: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return tuple(rpc_status.to_status(status).trailing_metadata)


def _details(message: str) -> str:
    if len(message) <= MAX_DETAILS_CHARACTERS:
        return message
    return message[:MAX_DETAILS_CHARACTERS - 3] + "..."


def _decoder(deserializer):
    def decode(raw):
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise errors.InvalidArgument(f"the request is not a valid message ({exc}); "
                                         "strings must be UTF-8") from None
    return decode


async def _decoded_stream(requests, decode):
    async for raw in requests:
        check_memory()  # per message: a stream's messages are what grows with a client's sending
        yield decode(raw)


def _request(raw, decode, streaming: bool):
    return _decoded_stream(raw, decode) if streaming else decode(raw)


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]], method: str, deserializer, streaming_request: bool):
    decode = _decoder(deserializer)
    name = method_name(method)

    async def wrapper(raw, context):
        started, status, reported = time.perf_counter(), "OK", False
        try:
            return await behaviour(_request(raw, decode, streaming_request), context)
        except grpc.aio.AbortError:
            status = aborted_status(context)
            raise
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception as exc:
            status, reported = _status_name(exc), True
            # counted before its refusal leaves (_abort sends it)
            report_call(name, status, started, context, _refused_with(exc))
            await _abort(context, method, exc)
        finally:
            if not reported:
                report_call(name, status, started, context)
    return wrapper


def _wrap_stream(behaviour, method: str, deserializer, streaming_request: bool):
    decode = _decoder(deserializer)
    name = method_name(method)

    async def wrapper(raw, context):
        started, status, reported = time.perf_counter(), "OK", False
        try:
            async for response in behaviour(_request(raw, decode, streaming_request), context):
                yield response
        except grpc.aio.AbortError:
            status = aborted_status(context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status = "CANCELLED"
            raise
        except Exception as exc:
            status, reported = _status_name(exc), True
            # counted before its refusal leaves (_abort sends it)
            report_call(name, status, started, context, _refused_with(exc))
            await _abort(context, method, exc)
        finally:
            if not reported:
                report_call(name, status, started, context)
    return wrapper


def _status_name(exc: Exception) -> str:
    if out_of_memory(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED.name
    return status_for(exc).name if isinstance(exc, errors.SignServerError) else grpc.StatusCode.INTERNAL.name


def _refused_with(exc: Exception) -> type[errors.SignServerError]:
    """The error class whose reason the refusal of ``exc`` carries in its ErrorInfo (see _abort)."""
    if out_of_memory(exc):
        return errors.MemoryExhausted
    return type(exc) if isinstance(exc, errors.SignServerError) else errors.SignServerError


# Each kind of RPC handler, how to rebuild it, and which wrapper fits its response side.
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _wrap_unary),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _wrap_unary),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _wrap_stream),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _wrap_stream),
)
