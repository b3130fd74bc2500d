"""Who is calling: the application behind the API key or the client certificate of a call."""

from __future__ import annotations

import functools

import grpc
from cryptography import x509

from signserver.accounts.applications import certificate_fingerprint
from signserver.accounts.model import Application
from signserver.grpc_api.executor import BlockingCalls
from signserver.service import SignService

API_KEY_HEADER = "x-api-key"


def client_certificate_sha256(context: grpc.aio.ServicerContext) -> str | None:
    """SHA-256 (hex) of the verified client certificate's DER, when the call came with one."""
    pem = context.auth_context().get("x509_pem_cert")
    if not pem:
        return None
    return _fingerprint(pem[0])


@functools.lru_cache(maxsize=256)
def _fingerprint(pem: bytes) -> str:
    # Every call on a connection presents the same certificate: parse it once.
    return certificate_fingerprint(x509.load_pem_x509_certificate(pem))


async def calling_application(context: grpc.aio.ServicerContext, service: SignService,
                              calls: BlockingCalls) -> Application:
    """Raises: Unauthenticated: no API key or certificate, or an unknown one."""
    metadata = dict(context.invocation_metadata() or ())
    api_key = metadata.get(API_KEY_HEADER)
    fingerprint = client_certificate_sha256(context)
    # An application that called moments ago is known without a trip to the thread pool.
    known = service.applications.cached(api_key=api_key, certificate_sha256=fingerprint)
    if known is not None:
        return known
    return await calls.run(service.applications.authenticate, api_key=api_key, certificate_sha256=fingerprint)
