"""Who is calling: the application behind the API key or the client certificate of a call."""

from __future__ import annotations

import grpc

from signserver.accounts.model import Application
from signserver.ca.client_status import ClientCertificate, presented
from signserver.blocking_calls import BlockingCalls, CallerCheck
from signserver.errors import CallerGaveUp, DeadlineExceeded
from signserver.service import SignService

API_KEY_HEADER = "x-api-key"


def client_certificate(context: grpc.aio.ServicerContext) -> ClientCertificate | None:
    """The verified client certificate of a call, when it came with one.

    Raises: Unauthenticated: it cannot be read.
    """
    pem = context.auth_context().get("x509_pem_cert")
    return presented(pem[0]) if pem else None


def still_waiting(context: grpc.aio.ServicerContext) -> CallerCheck:
    """A check, for BlockingCalls, that the client of this call still waits for its answer.

    The deadline is compared with the clock, so a passed deadline is seen even when the event loop
    has not yet heard of it; a cancellation is seen once the loop has.
    """
    def check() -> None:
        """Raises: DeadlineExceeded: the call's deadline passed; CallerGaveUp: it was cancelled."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before its turn came; nothing was done")
        if context.cancelled() or context.done():
            raise CallerGaveUp("the client cancelled the call before its turn came; nothing was done")
    return check


async def calling_application(context: grpc.aio.ServicerContext, service: SignService,
                              calls: BlockingCalls) -> Application:
    """The application making this call. A client certificate must be valid now (dates, and not
    revoked by this CA as its records said within the last few seconds); with an API key beside
    it, both must be the same application's.

    Raises: Unauthenticated: no API key or certificate, an unknown one, a certificate expired or
    revoked, or a key and a certificate of two applications.
    """
    metadata = dict(context.invocation_metadata() or ())
    api_key = metadata.get(API_KEY_HEADER)
    client = client_certificate(context)
    fingerprint = client.sha256 if client is not None else None
    # An application that called moments ago, with a certificate checked moments ago, is known
    # without a trip to the thread pool.
    if client is None or service.ca.client_status.known_valid(client):
        known = service.applications.cached(api_key=api_key, certificate_sha256=fingerprint)
        if known is not None:
            return known
    return await calls.run(_identify, service, api_key, client)


def _identify(service: SignService, api_key: str | None, client: ClientCertificate | None) -> Application:
    """Raises: Unauthenticated."""
    if client is not None:
        service.ca.client_status.check(client)
    return service.applications.authenticate(
        api_key=api_key, certificate_sha256=client.sha256 if client is not None else None)
