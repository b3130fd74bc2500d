"""AccessTokens: the bearer tokens an application gets from the CSC API's auth/login or its OAuth
2.0 token endpoint, and spends on every later request.

A token is 256 random bits shown once; only its SHA-256 is stored, with its application and
expiry, so that any worker process accepts a token another issued. Answers are kept in this
process for a few seconds, as the application registry keeps its own: a revocation elsewhere
takes effect within them.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from signserver.accounts.applications import CACHE_SECONDS, ApplicationRegistry
from signserver.accounts.model import Application
from signserver.clock import Clock, epoch_seconds, from_epoch
from signserver.errors import Unauthenticated
from signserver.store.database import Database
from signserver.store.schema import applications, csc_access_tokens

SERVICE_SCOPE = "service"
REFUSED = "the access token is not valid: it is unknown, expired or revoked; log in again"
_MAX_CACHED = 4096


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str  # shown to the caller once
    expires_at: datetime.datetime
    lifetime_seconds: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessTokens:
    def __init__(self, database: Database, clock: Clock, lifetime: datetime.timedelta):
        self._database = database
        self._clock = clock
        self._lifetime = lifetime
        self._cache: dict[str, tuple[float, Application, int]] = {}  # digest -> (kept until, app, expires_at)

    def issue(self, application: Application, scope: str = SERVICE_SCOPE) -> IssuedAccessToken:
        """A new token for the application (already authenticated). Expired tokens are erased on
        the way, so the table holds only live ones."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires = epoch_seconds(now + self._lifetime)
        with self._database.transaction() as conn:
            conn.execute(delete(csc_access_tokens).where(csc_access_tokens.c.expires_at <= epoch_seconds(now)))
            conn.execute(insert(csc_access_tokens).values(
                token_hash=_digest(token), application_id=application.id, scope=scope, expires_at=expires,
                created_at=epoch_seconds(now)))
        return IssuedAccessToken(token, from_epoch(expires), int(self._lifetime.total_seconds()))

    def cached(self, token: str) -> Application | None:
        """The application :meth:`application_for` found for this token moments ago, if the
        token has not expired since; never waits on the database, so an event loop may ask."""
        entry = self._cache.get(_digest(token))
        if entry is None or entry[0] <= time.monotonic() or entry[2] <= epoch_seconds(self._clock.now()):
            return None
        return entry[1]

    def application_for(self, token: str) -> Application:
        """The active application the unexpired token was issued to.

        Raises: Unauthenticated: the token is unknown, expired or revoked, or its application
            is no longer active.
        """
        known = self.cached(token)
        if known is not None:
            return known
        hashed = _digest(token)
        with self._database.read() as conn:
            row = conn.execute(select(csc_access_tokens.c.application_id, csc_access_tokens.c.expires_at,
                                      applications.c.status)
                               .join(applications, applications.c.id == csc_access_tokens.c.application_id)
                               .where(csc_access_tokens.c.token_hash == hashed)).first()
            if row is None or row.expires_at <= epoch_seconds(self._clock.now()) or row.status != "active":
                raise Unauthenticated(REFUSED)
            # The registry's own reading of an application (its served accounts included).
            application = ApplicationRegistry.get(conn, row.application_id)
        if len(self._cache) > _MAX_CACHED:
            self._cache.clear()
        self._cache[hashed] = (time.monotonic() + CACHE_SECONDS, application, row.expires_at)
        return application

    def revoke(self, application: Application, token: str) -> bool:
        """Revoke one of the application's tokens; another application's, or an unknown one,
        is left alone. Returns whether a token was revoked."""
        hashed = _digest(token)
        self._cache.pop(hashed, None)
        with self._database.transaction() as conn:
            return conn.execute(delete(csc_access_tokens).where(
                csc_access_tokens.c.token_hash == hashed,
                csc_access_tokens.c.application_id == application.id)).rowcount == 1
