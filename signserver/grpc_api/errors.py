"""The one place where signserver errors become gRPC status codes."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import grpc

from signserver import errors

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
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
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
    errors.SignServerError: grpc.StatusCode.INTERNAL,
}

GENERIC_INTERNAL_MESSAGE = "internal error; the server's log has the details"
# Status details travel in a header, and gRPC clients refuse headers over 16 KiB by default: a
# message that quotes a megabyte of the caller's input would reach the caller as a transport
# error instead of its status.
MAX_DETAILS_CHARACTERS = 1000


def status_for(error: errors.SignServerError) -> grpc.StatusCode:
    """The status code for a signserver error."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns signserver errors into their status codes, and anything unexpected into INTERNAL
    with a generic message (the traceback goes to the log, never to the caller)."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method: wrapped once, not per call

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
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
    if isinstance(exc, errors.SignServerError):
        code = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", method, exc, exc_info=exc)
        else:
            log.info("%s refused with %s: %s", method, code.name, exc)
        help_code = getattr(exc, "help_code", None)
        if help_code:
            context.set_trailing_metadata((("help-code", help_code),))
        await context.abort(code, _details(str(exc)))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)


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
        yield decode(raw)


def _request(raw, decode, streaming: bool):
    return _decoded_stream(raw, decode) if streaming else decode(raw)


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]], method: str, deserializer, streaming_request: bool):
    decode = _decoder(deserializer)

    async def wrapper(raw, context):
        try:
            return await behaviour(_request(raw, decode, streaming_request), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method, exc)
    return wrapper


def _wrap_stream(behaviour, method: str, deserializer, streaming_request: bool):
    decode = _decoder(deserializer)

    async def wrapper(raw, context):
        try:
            async for response in behaviour(_request(raw, decode, streaming_request), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method, exc)
    return wrapper



# Each kind of RPC handler, how to rebuild it, and which wrapper fits its response side.
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, _wrap_unary),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, _wrap_unary),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, _wrap_stream),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, _wrap_stream),
)
