"""ApplicationRegistry: the application service providers that may call the signing API.

An application proves who it is with an API key (sent over TLS) or a client certificate, or both,
which must then both be its own; only SHA-256 digests of either are stored. Its policy says whether it must send an OTP and which
accounts it may serve.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, delete, insert, select, update

from signserver.accounts.model import Application
from signserver.audit.log import AuditLog
from signserver.clock import Clock, epoch_seconds
from signserver.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from signserver.store.database import Database
from signserver.store.schema import accounts, application_accounts, applications

API_KEY_PREFIX = "ssk_"
CACHE_SECONDS = 5.0
OPERATOR = "operator:cli"  # who registers an application when the caller names nobody (the demo's setup)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,99}$")


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, in hex: how an application's client certificate is known."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _cache_key(api_key: str | None, certificate_sha256: str | None) -> tuple[str | None, str | None]:
    return (_digest(api_key) if api_key else None, certificate_sha256)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class ApplicationRegistry:
    def __init__(self, database: Database, clock: Clock, audit: AuditLog | None = None):
        self._database = database
        self._clock = clock
        self._audit = audit or AuditLog()  # it keeps no state: one of its own appends to the same chain
        self._cache: dict[tuple, tuple[float, Application]] = {}

    def create(self, name: str, otp_required: bool = True, accounts_served: tuple[str, ...] | None = None,
               client_certificate_sha256: str | None = None, with_api_key: bool = True,
               one_call_signing: bool = True, operator: str = OPERATOR) -> tuple[Application, str | None]:
        """Register an application; returns it and its API key (shown once, stored hashed). The
        registration is audited (``application.created``) by ``operator``, with its policy.

        ``accounts_served`` None means every account.

        Raises: InvalidArgument, AlreadyExists (the name, or the client certificate of another
            application), NotFound (an account to serve does not exist).
        """
        if not _NAME.match(name):
            raise InvalidArgument("an application name has 2 to 100 letters, digits, '.', '_' or '-'")
        fingerprint = client_certificate_sha256.lower().replace(":", "") if client_certificate_sha256 else None
        if fingerprint is not None and not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise InvalidArgument("a certificate fingerprint is 64 hex digits (SHA-256)")
        if not with_api_key and fingerprint is None:
            raise InvalidArgument("an application needs an API key or a client certificate")
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32) if with_api_key else None
        self._cache.clear()
        with self._database.transaction() as conn:
            if conn.execute(select(applications.c.id).where(applications.c.name == name)).first():
                raise AlreadyExists(f"an application {name!r} already exists")
            _refuse_certificate_of_another(conn, fingerprint, None)
            app_id = conn.execute(insert(applications).values(
                name=name, api_key_hash=_digest(api_key) if api_key else None,
                client_certificate_sha256=fingerprint, otp_required=otp_required,
                all_accounts=accounts_served is None, status="active", one_call_signing=one_call_signing,
                created_at=epoch_seconds(self._clock.now()))).inserted_primary_key[0]
            for username in accounts_served or ():
                self._serve(conn, app_id, username)
            application = self.get(conn, app_id)
            self._audit.append(conn, self._clock.now(), "application.created", operator, name,
                               **_policy(application))
            return application, api_key

    def set_client_certificate(self, name: str, certificate_sha256: str, operator: str = OPERATOR) -> Application:
        """Register (or replace) the client certificate an application authenticates with,
        creating the application (OTP required, every account) when it does not exist. Audited as
        ``application.certificate_set`` (with the certificate it replaces), or as
        ``application.created``.

        Raises: InvalidArgument; AlreadyExists: another application authenticates with it.
        """
        fingerprint = certificate_sha256.lower()
        self._cache.clear()
        with self._database.transaction() as conn:
            row = conn.execute(select(applications.c.id, applications.c.client_certificate_sha256)
                               .where(applications.c.name == name)).first()
            if row is not None:
                _refuse_certificate_of_another(conn, fingerprint, row.id)
                conn.execute(update(applications).where(applications.c.id == row.id)
                             .values(client_certificate_sha256=fingerprint))
                self._audit.append(conn, self._clock.now(), "application.certificate_set", operator, name,
                                   client_certificate_sha256=fingerprint,
                                   replaced_sha256=row.client_certificate_sha256)
                return self.get(conn, row.id)
        return self.create(name, client_certificate_sha256=fingerprint, with_api_key=False, operator=operator)[0]

    def authenticate(self, api_key: str | None = None, certificate_sha256: str | None = None) -> Application:
        """The application behind an API key or a client certificate fingerprint; when both are
        given, they must name the same application. Answers are kept for a few seconds (every
        call authenticates; a changed policy applies within them). Whether the certificate itself
        is still valid is the CA's question (``ClientCertificateStatus``), asked on every call.

        Raises: Unauthenticated: neither is given, either is unknown, or they name two applications.
        """
        key = _cache_key(api_key, certificate_sha256)
        application = self._cached(key)
        if application is not None:
            return application
        application = self._lookup(api_key, certificate_sha256)
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, application)
        return application

    def cached(self, api_key: str | None = None, certificate_sha256: str | None = None) -> Application | None:
        """The answer :meth:`authenticate` gave for these credentials moments ago, if any: it
        never waits on the database, so an event loop may ask."""
        return self._cached(_cache_key(api_key, certificate_sha256))

    def _cached(self, key: tuple[str | None, str | None]) -> Application | None:
        entry = self._cache.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    def _lookup(self, api_key: str | None, certificate_sha256: str | None) -> Application:
        with self._database.read() as conn:
            by_key = by_certificate = None
            if api_key:
                by_key = conn.execute(select(applications).where(
                    applications.c.api_key_hash == _digest(api_key))).first()
            if certificate_sha256:
                by_certificate = conn.execute(select(applications).where(
                    applications.c.client_certificate_sha256 == certificate_sha256.lower())).first()
            if api_key and certificate_sha256 and (by_key is None or by_certificate is None
                                                   or by_key.id != by_certificate.id):
                # One sentence for every mismatch: it must not tell whose key or certificate it is.
                raise Unauthenticated("the API key and the client certificate do not belong to one "
                                      "registered application")
            row = by_key or by_certificate
            if row is None or row.status != "active":
                raise Unauthenticated("the application is not known: send a valid API key in the "
                                      "x-api-key header, or a registered client certificate")
            return self.get(conn, row.id)

    def check_may_serve(self, application: Application, username: str) -> None:
        """Raises: PermissionDenied: the application's policy does not cover this account.

        The refusal does not quote ``username``: it is what was typed as the account's name, and
        holders type their password there (authentication.py); the refusal reaches the log.
        """
        if not application.all_accounts and username not in application.accounts:
            raise PermissionDenied(f"the policy of application {application.name!r} does not cover this account")

    def list(self) -> list[Application]:
        with self._database.read() as conn:
            ids = conn.execute(select(applications.c.id).order_by(applications.c.name)).scalars().all()
            return [self.get(conn, i) for i in ids]

    def _serve(self, conn: Connection, app_id: int, username: str) -> None:
        account_id = conn.execute(select(accounts.c.id).where(accounts.c.username == username)).scalar()
        if account_id is None:
            raise NotFound(f"no account {username!r}")
        conn.execute(delete(application_accounts).where(application_accounts.c.application_id == app_id,
                                                        application_accounts.c.account_id == account_id))
        conn.execute(insert(application_accounts).values(application_id=app_id, account_id=account_id))

    @staticmethod
    def get(conn: Connection, app_id: int) -> Application:
        """The application of that id, in the caller's transaction. Raises: NoResultFound."""
        row = conn.execute(select(applications).where(applications.c.id == app_id)).one()
        served = conn.execute(select(accounts.c.username).join(application_accounts)
                              .where(application_accounts.c.application_id == app_id)
                              .order_by(accounts.c.username)).scalars().all()
        return Application(id=row.id, name=row.name, otp_required=row.otp_required,
                           all_accounts=row.all_accounts, accounts=tuple(served),
                           has_api_key=row.api_key_hash is not None,
                           client_certificate_sha256=row.client_certificate_sha256, status=row.status,
                           one_call_signing=row.one_call_signing)


def _policy(application: Application) -> dict:
    """What an audit record says of an application's policy: whether it needs an OTP, the accounts
    it serves, how it authenticates (whether it has an API key: never the key nor its digest) and
    whether it signs documents in two steps only."""
    return {"otp_required": application.otp_required,
            "accounts": "all" if application.all_accounts else list(application.accounts),
            "client_certificate_sha256": application.client_certificate_sha256,
            "api_key": application.has_api_key, "two_step_only": not application.one_call_signing}


def _refuse_certificate_of_another(conn, fingerprint: str | None, app_id: int | None) -> None:
    """Raises: AlreadyExists: an application other than ``app_id`` authenticates with the client
    certificate ``fingerprint`` (each certificate names one application)."""
    if fingerprint is None:
        return
    other = conn.execute(select(applications.c.name).where(applications.c.client_certificate_sha256 == fingerprint,
                                                          applications.c.id != (app_id or -1))).scalar()
    if other is not None:
        raise AlreadyExists(f"application {other!r} already uses this client certificate: each certificate "
                            "names one application")
