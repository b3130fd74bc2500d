"""Who is calling the CSC API: the application behind a bearer access token, behind HTTP Basic
credentials (auth/login, oauth2/token: its name and API key), or behind its verified client
certificate.

The client certificate, when TLS verified one, reaches a request as ``request.state.
client_certificate_der`` (see serving.py); behind a configured load balancer, the caller's is the
one the balancer forwards in ``X-Client-Cert``. A login that presents one gets a token bound to it
(RFC 8705): the token is then accepted only over a connection presenting the same certificate. A
login that presents both an API key and a certificate must name one application with both.
"""

from __future__ import annotations

import base64
import re
import ssl

from fastapi import Request

from signserver.accounts.model import Application
from signserver.blocking_calls import calling_for
from signserver.ca.client_forwarding import FORWARDED_CERTIFICATE_HEADER, balancer_certificate, caller_certificate_pem
from signserver.ca.client_status import ClientCertificate, presented
from signserver.errors import InvalidArgument, NoCredentials, Unauthenticated
from signserver.http.csc.context import CscContext, context_of
from signserver.http.csc.errors import AUTHORIZATION, NO_CREDENTIALS
from signserver.secret import Secret
from signserver.service import SignService

# RFC 9110 11.1's auth-scheme (a token) and RFC 6750 2.1's b64token.
_AUTH_SCHEME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# One sentence for a wrong name or key and for a key and a certificate of two applications: it
# must not tell whose key or certificate it is.
BASIC_REFUSED = ("the application name and API key (and the client certificate, when one is presented) "
                 "do not belong to one registered application")
LOG_IN_HOW = ("log in with HTTP Basic credentials (the application's name and API key) or a registered "
              "client certificate")


async def client_certificate(request: Request) -> ClientCertificate | None:
    """The client certificate that identifies the caller, if any: the one TLS verified on this
    request's connection, or, when that peer is a configured load balancer (``[tls]
    balancer_cert_sha256``), the one it forwards in ``X-Client-Cert``, as for gRPC (see
    :mod:`signserver.ca.client_forwarding`). The balancer's own certificate must be valid now
    and never identifies anyone itself.

    Raises: Unauthenticated: a certificate cannot be read; the header came from a peer that is no
        configured balancer, or more than once; the balancer's certificate is expired or revoked.
    """
    context = context_of(request)
    der = getattr(request.state, "client_certificate_der", None)
    peer_pem = ssl.DER_cert_to_PEM_cert(der).encode("ascii") if der else None
    balancers = context.service.config.tls.balancer_cert_sha256
    balancer = balancer_certificate(peer_pem, balancers)
    status = context.service.ca.client_status
    if balancer is not None and not status.known_valid(balancer):
        await context.accounts.run(status.check, balancer)
    pem = caller_certificate_pem(peer_pem, request.headers.getlist(FORWARDED_CERTIFICATE_HEADER), balancers)
    return presented(pem) if pem else None


def _authorization(request: Request) -> tuple[str, str] | None:
    """The Authorization header's scheme (lower case) and credentials, if it has one."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    return (scheme.lower(), value.strip()) if scheme else None


def bearer_token(request: Request) -> str | None:
    """The access token of the request's Bearer Authorization header; None without one, or with
    another scheme's credentials (which RFC 6750 3 answers as no credentials).

    Raises: InvalidArgument (field AUTHORIZATION; RFC 6750 3.1's invalid_request): the header is
        sent twice, its scheme is no token, or the Bearer scheme has no b64token after it.
    """
    if len(request.headers.getlist("authorization")) > 1:
        raise InvalidArgument("send one Authorization header, not several", field=AUTHORIZATION)
    found = _authorization(request)
    if found is None:
        return None
    scheme, token = found
    if not _AUTH_SCHEME.fullmatch(scheme):
        raise InvalidArgument("the Authorization header is malformed: it starts with no authentication scheme",
                              field=AUTHORIZATION)
    if scheme != "bearer":
        return None
    if not token:
        raise InvalidArgument("the Authorization header names the Bearer scheme but no access token",
                              field=AUTHORIZATION)
    if not _B64TOKEN.fullmatch(token):
        raise InvalidArgument("the Authorization header's access token is malformed: one word of letters, "
                              "digits and -._~+/ is expected after Bearer", field=AUTHORIZATION)
    return token


def has_token_form(text: str) -> bool:
    """Whether ``text`` has the form of an access token (RFC 6750's b64token): what has not was
    never issued here (and may hold what no UTF-8 encodes)."""
    return _B64TOKEN.fullmatch(text) is not None


def basic_credentials(request: Request) -> tuple[str, Secret] | None:
    """The name and password of an HTTP Basic Authorization header, if the request has one.

    Raises: Unauthenticated: the header is malformed.
    """
    found = _authorization(request)
    if found is None or found[0] != "basic":
        return None
    try:
        decoded = base64.b64decode(found[1], validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and b64decode's own for non-ASCII text
        raise Unauthenticated("the Basic credentials are not base64 of name:key") from None
    name, colon, key = decoded.partition(":")
    if not colon:
        raise Unauthenticated("the Basic credentials are not base64 of name:key")
    return name, Secret(key)


async def calling_application(request: Request) -> Application:
    """The application behind the request (see :func:`_calling_application`), from now on the one
    its calls of the worker's pools are made for (:data:`calling_for`).

    Raises: as :func:`_calling_application`.
    """
    application = await _calling_application(request)
    calling_for.set(application.id)
    return application


async def _calling_application(request: Request) -> Application:
    """The application behind the request's bearer access token, or behind its client
    certificate (valid now, as for gRPC); with both, they must be the same application's. The
    token's state is read from the database on every request (a revocation holds at once on
    every worker).

    Raises: Unauthenticated: neither, credentials of another scheme, an unknown, expired or
        revoked token, a token bound to a certificate the connection does not present, a
        certificate expired, revoked or unregistered, or a token and a certificate of two
        applications; InvalidArgument: a malformed Authorization header (see bearer_token).
    """
    context: CscContext = context_of(request)
    token = bearer_token(request)
    if token is None and request.headers.get("authorization"):
        raise NoCredentials(NO_CREDENTIALS)
    client = await client_certificate(request)
    if token is None and client is None:
        raise NoCredentials(NO_CREDENTIALS)
    by_token = None
    if token is not None:
        # One read by primary key on the prepared-statement path, here on the event loop, as a
        # short signHash runs its transaction there (BlockingCalls.run_short): in the accounts
        # pool it queued behind password checks (argon2, 25 ms each), and the hand-off to a
        # thread cost more than the read (single-hash signHash with a bearer token: 0.77 of
        # gRPC's rate through the pool, 0.93 here, measured side by side). Only while a
        # connection is idle, though: waiting for one would stall every call of the worker.
        bound_to = client.sha256 if client is not None else None
        if context.service.database.has_idle_connection():
            by_token = context.service.access_tokens.application_for(token, bound_to)
        else:
            by_token = await context.accounts.run(context.service.access_tokens.application_for, token, bound_to)
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


async def logging_in_application(request: Request, key: tuple[str, Secret] | None = None,
                                 ) -> tuple[Application, str | None]:
    """The application logging in (auth/login, oauth2/token), by its name and API key (``key``,
    else HTTP Basic) or its client certificate, or both, which must then name one application;
    a bearer token is no way to get another. With it, the SHA-256 of the client certificate the
    connection presented (the token is bound to it), or None.

    Raises: Unauthenticated: neither, a wrong name or key, a certificate expired, revoked or
        unregistered, or a key and a certificate of two applications (told like a wrong key).
    """
    context = context_of(request)
    key = key or basic_credentials(request)
    client = await client_certificate(request)
    if key is None and client is None:
        raise Unauthenticated(LOG_IN_HOW)
    by_key = await application_by_key(context, *key) if key is not None else None
    if client is None:
        calling_for.set(by_key.id)
        return by_key, None
    by_certificate = await certified_application(context, client)
    if by_key is not None and by_key.id != by_certificate.id:
        raise Unauthenticated(BASIC_REFUSED)
    calling_for.set(by_certificate.id)  # its calls of the worker's pools are its own from now on
    return by_certificate, client.sha256


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
