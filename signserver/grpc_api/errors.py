"""The one place where signserver errors become gRPC status codes."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import grpc

from signserver import errors

log = logging.getLogger(__name__)

# Looked up along each error's class hierarchy: the most specific entry wins.
STATUS_BY_ERROR: dict[type[errors.SignServerError], grpc.StatusCode] = {
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


def status_for(error: errors.SignServerError) -> grpc.StatusCode:
    """The status code for a signserver error."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return grpc.StatusCode.INTERNAL


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns signserver errors into their status codes, and anything unexpected into INTERNAL
    with a generic message (the traceback goes to the log, never to the caller)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        for kind, make_handler, wrap in _HANDLER_KINDS:
            behaviour = getattr(handler, kind)
            if behaviour:
                return make_handler(
                    wrap(behaviour, handler_call_details.method),
                    request_deserializer=handler.request_deserializer,
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
        await context.abort(code, str(exc))
    log.error("%s failed unexpectedly", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)


def _wrap_unary(behaviour: Callable[..., Awaitable[Any]], method: str):
    async def wrapper(request, context):
        try:
            return await behaviour(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, method, exc)
    return wrapper


def _wrap_stream(behaviour, method: str):
    async def wrapper(request, context):
        try:
            async for response in behaviour(request, context):
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
