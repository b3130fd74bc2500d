"""AccessTokens: the bearer tokens an application gets from the CSC API's auth/login or its OAuth
2.0 token endpoint, and spends on every later request.

A token is 256 random bits shown once; only its SHA-256 is stored, with its application, expiry
and, when the login presented one, the SHA-256 thumbprint of the application's TLS client
certificate (RFC 8705: a certificate-bound token is accepted only over a connection presenting that
certificate). Any worker accepts a token another issued, and every use reads the token's row: a
revocation takes effect at once on every worker of every node. Only the application's own
record (its policy) is kept in this process for a few seconds, as the application registry keeps
it for every other way in.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select

from signserver.accounts.applications import CACHE_SECONDS, ApplicationRegistry
from signserver.accounts.model import Application
from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.errors import Unauthenticated
from signserver.store.database import Database
from signserver.store.prepared import PreparedStatement
from signserver.store.schema import applications, csc_access_tokens

SERVICE_SCOPE = "service"
REFUSED = "the access token is not valid: it is unknown, expired or revoked; log in again"
# RFC 8705's wording for a certificate-bound token presented without its certificate; it says
# nothing of which certificate the token is bound to.
UNBOUND = ("the access token is bound to the client certificate it was issued with: send it over a "
           "connection that presents that certificate")
_MAX_CACHED = 1024

# On the way to every request with a bearer token: one select by primary key, straight on the driver.
_TOKEN_STATE = PreparedStatement(
    select(csc_access_tokens.c.application_id, csc_access_tokens.c.expires_at,
           csc_access_tokens.c.certificate_sha256, applications.c.status)
    .join(applications, applications.c.id == csc_access_tokens.c.application_id)
    .where(csc_access_tokens.c.token_hash == bindparam("token_hash")))


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str  # shown to the caller once
    expires_at: datetime.datetime
    lifetime_seconds: int
    certificate_bound: bool = False  # usable only with the client certificate of the login


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessTokens:
    def __init__(self, database: Database, clock: Clock, lifetime: datetime.timedelta):
        self._database = database
        self._clock = clock
        self._lifetime = lifetime
        self._applications: dict[int, tuple[float, Application]] = {}  # id -> (kept until, application)

    def issue(self, application: Application, scope: str = SERVICE_SCOPE,
              certificate_sha256: str | None = None) -> IssuedAccessToken:
        """A new token for the application (already authenticated), bound to the client
        certificate of that SHA-256 (hex) when the login presented one. Expired tokens are refused
        when presented and removed in batches by the retention pass (signing/retention.py), not
        here: a delete of every expired token on each login would grow with the table."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires = epoch_seconds(now + self._lifetime)
        with self._database.transaction() as conn:
            conn.execute(insert(csc_access_tokens).values(
                token_hash=_digest(token), application_id=application.id, scope=scope, expires_at=expires,
                created_at=epoch_seconds(now),
                certificate_sha256=certificate_sha256.lower() if certificate_sha256 else None))
        return IssuedAccessToken(token, from_epoch(expires), int(self._lifetime.total_seconds()),
                                 certificate_bound=certificate_sha256 is not None)

    def application_for(self, token: str, certificate_sha256: str | None = None) -> Application:
        """The active application the unexpired, unrevoked token was issued to, read from the
        database on every call. ``certificate_sha256``: the SHA-256 (hex) of the client
        certificate the request's connection presented, if any.

        Raises: Unauthenticated: the token is unknown, expired or revoked, its application is no
            longer active, or it is bound to a client certificate the connection did not present.
        """
        with self._database.read() as conn:
            row = _TOKEN_STATE.execute(conn, {"token_hash": _digest(token)}).first()
            if row is None or row.expires_at <= epoch_seconds(self._clock.now()) or row.status != "active":
                raise Unauthenticated(REFUSED)
            if row.certificate_sha256 is not None and not (
                    certificate_sha256 and hmac.compare_digest(row.certificate_sha256, certificate_sha256.lower())):
                raise Unauthenticated(UNBOUND)
            return self._application(conn, row.application_id)

    def _application(self, conn, application_id: int) -> Application:
        """The application's record (its policy), kept here for CACHE_SECONDS."""
        entry = self._applications.get(application_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        application = ApplicationRegistry.get(conn, application_id)
        if len(self._applications) > _MAX_CACHED:
            self._applications.clear()
        self._applications[application_id] = (time.monotonic() + CACHE_SECONDS, application)
        return application

    def revoke(self, application: Application, token: str) -> bool:
        """Revoke one of the application's tokens, on every worker at once; another
        application's, or an unknown one, is left alone. Returns whether a token was revoked."""
        with self._database.transaction() as conn:
            return conn.execute(delete(csc_access_tokens).where(
                csc_access_tokens.c.token_hash == _digest(token),
                csc_access_tokens.c.application_id == application.id)).rowcount == 1
