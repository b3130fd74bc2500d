"""Who is calling the CSC API: the application behind a bearer access token, behind HTTP Basic
credentials (auth/login, oauth2/token: its name and API key), or behind its verified client
certificate.

The client certificate, when TLS verified one, reaches a request as ``request.state.
client_certificate_der`` (see serving.py).
"""

from __future__ import annotations

import base64
import binascii
import ssl

from fastapi import Request

from signserver.accounts.model import Application
from signserver.ca.client_status import ClientCertificate, presented
from signserver.errors import Unauthenticated
from signserver.http.csc.context import CscContext, context_of
from signserver.secret import Secret
from signserver.service import SignService

NO_CREDENTIALS = ("send a bearer access token (from auth/login or oauth2/token) in the Authorization header, "
                  "or a registered client certificate")
BASIC_REFUSED = "the application name and API key do not belong to one registered application"


def client_certificate(request: Request) -> ClientCertificate | None:
    """The client certificate TLS verified on this request's connection, if any.

    Raises: Unauthenticated: it cannot be read.
    """
    der = getattr(request.state, "client_certificate_der", None)
    return presented(ssl.DER_cert_to_PEM_cert(der).encode("ascii")) if der else None


def _authorization(request: Request) -> tuple[str, str] | None:
    """The Authorization header's scheme (lower case) and credentials, if it has one."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    return (scheme.lower(), value.strip()) if scheme else None


def basic_credentials(request: Request) -> tuple[str, Secret] | None:
    """The name and password of an HTTP Basic Authorization header, if the request has one.

    Raises: Unauthenticated: the header is malformed.
    """
    found = _authorization(request)
    if found is None or found[0] != "basic":
        return None
    try:
        decoded = base64.b64decode(found[1], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("the Basic credentials are not base64 of name:key") from None
    name, colon, key = decoded.partition(":")
    if not colon:
        raise Unauthenticated("the Basic credentials are not base64 of name:key")
    return name, Secret(key)


async def calling_application(request: Request) -> Application:
    """The application behind the request's bearer access token, or behind its client
    certificate (valid now, as for gRPC); with both, they must be the same application's.

    Raises: Unauthenticated: neither, an unknown, expired or revoked token, a certificate
        expired, revoked or unregistered, or a token and a certificate of two applications.
    """
    context: CscContext = context_of(request)
    found = _authorization(request)
    token = found[1] if found is not None and found[0] == "bearer" and found[1] else None
    if found is not None and token is None:
        raise Unauthenticated(NO_CREDENTIALS)
    client = client_certificate(request)
    if token is None and client is None:
        raise Unauthenticated(NO_CREDENTIALS)
    service = context.service
    by_token = service.access_tokens.cached(token) if token is not None else None
    if token is not None and by_token is None:
        by_token = await context.accounts.run(service.access_tokens.application_for, token)
    if client is None:
        return by_token
    by_certificate = await certified_application(context, client)
    if by_token is not None and by_token.id != by_certificate.id:
        raise Unauthenticated("the access token and the client certificate do not belong to one application")
    return by_certificate


async def certified_application(context: CscContext, client: ClientCertificate) -> Application:
    """The application registered with this client certificate, valid now.

    Raises: Unauthenticated.
    """
    service = context.service
    if service.ca.client_status.known_valid(client):
        known = service.applications.cached(certificate_sha256=client.sha256)
        if known is not None:
            return known
    return await context.accounts.run(_by_certificate, service, client)


async def logging_in_application(request: Request) -> Application:
    """The application logging in (auth/login, oauth2/token): HTTP Basic with its name and API
    key, or its client certificate; a bearer token is no way to get another.

    Raises: Unauthenticated.
    """
    context = context_of(request)
    basic = basic_credentials(request)
    client = client_certificate(request)
    if basic is not None:
        return await application_by_key(context, *basic)
    if client is not None:
        return await certified_application(context, client)
    raise Unauthenticated("log in with HTTP Basic credentials (the application's name and API key) "
                          "or a registered client certificate")


async def application_by_key(context: CscContext, name: str, api_key: Secret) -> Application:
    """The application of this name and API key.

    Raises: Unauthenticated: they do not belong to one registered application.
    """
    try:
        application = await context.accounts.run(context.service.applications.authenticate,
                                                 api_key=api_key.reveal() or None)
    except Unauthenticated:
        raise Unauthenticated(BASIC_REFUSED) from None
    if application.name != name:
        raise Unauthenticated(BASIC_REFUSED)
    return application


def _by_certificate(service: SignService, client: ClientCertificate) -> Application:
    """Raises: Unauthenticated."""
    service.ca.client_status.check(client)
    return service.applications.authenticate(certificate_sha256=client.sha256)
