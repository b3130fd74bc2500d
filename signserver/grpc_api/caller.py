"""Who is calling: the application behind the API key or the client certificate of a call (the
TLS peer's, or the one a configured load balancer forwards)."""

from __future__ import annotations

from collections.abc import Collection

import grpc

from signserver.accounts.model import Application
from signserver.ca.client_forwarding import (FORWARDED_CERTIFICATE_HEADER, balancer_certificate,
                                             caller_certificate_pem)
from signserver.ca.client_status import ClientCertificate, presented
from signserver.blocking_calls import BlockingCalls, CallerCheck, calling_for
from signserver.errors import CallerGaveUp, DeadlineExceeded
from signserver.service import SignService

API_KEY_HEADER = "x-api-key"


def client_certificate_pem(context: grpc.aio.ServicerContext, balancers: Collection[str] = ()) -> bytes | None:
    """The PEM of the verified client certificate that identifies the caller, when there is one:
    the TLS peer's, or, when the peer is one of the ``balancers`` (SHA-256 of their certificates,
    ``[tls] balancer_cert_sha256``), the one it forwards (see :mod:`signserver.ca.client_forwarding`).

    Raises: Unauthenticated: a forwarded certificate from a peer that is no balancer, or one that
    cannot be read.
    """
    peer = context.auth_context().get("x509_pem_cert")
    forwarded = [value for key, value in (context.invocation_metadata() or ()) if key == FORWARDED_CERTIFICATE_HEADER]
    return caller_certificate_pem(peer[0] if peer else None, forwarded, balancers)


def client_certificate(context: grpc.aio.ServicerContext, balancers: Collection[str] = ()) -> ClientCertificate | None:
    """The verified client certificate that identifies the caller, parsed (see
    :func:`client_certificate_pem`).

    Raises: Unauthenticated: as :func:`client_certificate_pem`, or it cannot be read.
    """
    pem = client_certificate_pem(context, balancers)
    return presented(pem) if pem else None


async def check_balancer(context: grpc.aio.ServicerContext, service: SignService, calls: BlockingCalls) -> None:
    """When the call's TLS peer is a configured load balancer, its own certificate must be valid
    now (dates, and this CA's records): a balancer whose certificate was revoked vouches for no
    caller any more, without a change to every node's configuration.

    Raises: Unauthenticated: the balancer's certificate is expired or revoked.
    """
    balancers = service.config.tls.balancer_cert_sha256
    peer = context.auth_context().get("x509_pem_cert") if balancers else None
    balancer = balancer_certificate(peer[0] if peer else None, balancers)
    if balancer is not None and not service.ca.client_status.known_valid(balancer):
        await calls.run(service.ca.client_status.check, balancer)


async def check_client_certificate(context: grpc.aio.ServicerContext, service: SignService,
                                   calls: BlockingCalls) -> None:
    """For a call open to any client of this CA (InfoService): the client certificate, and the
    balancer's that forwarded it, must be valid now (dates, and not revoked by this CA), as for
    the calls of applications and RAs.

    Raises: Unauthenticated: either is expired or revoked, or cannot be read.
    """
    await check_balancer(context, service, calls)
    client = client_certificate(context, service.config.tls.balancer_cert_sha256)
    if client is not None and not service.ca.client_status.known_valid(client):
        await calls.run(service.ca.client_status.check, client)


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
    revoked (the caller's, or the balancer's that forwarded it), or a key and a certificate of
    two applications.
    """
    await check_balancer(context, service, calls)
    metadata = dict(context.invocation_metadata() or ())
    api_key = metadata.get(API_KEY_HEADER)
    client = client_certificate(context, service.config.tls.balancer_cert_sha256)
    fingerprint = client.sha256 if client is not None else None
    # An application that called moments ago, with a certificate checked moments ago, is known
    # without a trip to the thread pool.
    application = None
    if client is None or service.ca.client_status.known_valid(client):
        application = service.applications.cached(api_key=api_key, certificate_sha256=fingerprint)
    if application is None:
        application = await calls.run(_identify, service, api_key, client)
    calling_for.set(application.id)  # the call's work in the worker's pools is this application's from now on
    return application


def _identify(service: SignService, api_key: str | None, client: ClientCertificate | None) -> Application:
    """Raises: Unauthenticated."""
    if client is not None:
        service.ca.client_status.check(client)
    return service.applications.authenticate(
        api_key=api_key, certificate_sha256=client.sha256 if client is not None else None)
