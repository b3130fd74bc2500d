"""The registration authorities as callers: who an RA is (its client certificate), and what each
of its requests that changes something must bring: a nonce never seen, a time within the window,
and the evidence of what the RA checked, which is recorded in the audit log before the change.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from cryptography.x509.oid import NameOID
from sqlalchemy import delete, insert, select

from signserver.audit.log import AuditLog
from signserver.ca.client_status import ClientCertificateStatus, presented
from signserver.clock import Clock, epoch_seconds
from signserver.errors import (
    InvalidArgument,
    NoCredentials,
    PermissionDenied,
    RequestOutOfWindow,
    RequestReplayed,
    StoreConflict,
)
from signserver.store.database import Database
from signserver.store.schema import ra_request_nonces

# A request made more than this before or after the server's clock is refused; within it, its
# nonce is checked against those seen. Nonces are kept for twice the window: a request accepted at
# t was made at t +/- the window, so a replay of it is out of the window after t + 2 windows.
REQUEST_WINDOW = datetime.timedelta(minutes=5)
NONCE_LENGTHS = range(16, 129)
NONCE_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=")
MAX_VERIFICATIONS = 20
MAX_MATCH = 64
MAX_REFERENCE = 128
MAX_ADDRESS = 254
PRUNE_BATCH = 500  # nonces removed per request at most, so that no request carries a long delete
RA_PROFILE = "client-ra"  # the profile of the RAs' client certificates


@dataclass(frozen=True)
class RaEvidence:
    """What an RA checked before a request, as it states it: recorded, not judged.

    ``email_verifications`` holds (address, verified at) pairs; ``application_sha256`` is the
    signed application's digest (None: no application)."""

    registry_match: str = ""
    face_score: float | None = None
    email_verifications: tuple[tuple[str, datetime.datetime], ...] = ()
    application_sha256: bytes | None = None
    reference: str = ""

    def check(self) -> "RaEvidence":
        """Returns self. Raises: InvalidArgument (naming the field): a value out of its bounds."""
        _bounded_text("evidence.registry_match", self.registry_match, MAX_MATCH)
        _bounded_text("evidence.reference", self.reference, MAX_REFERENCE)
        if self.face_score is not None and not (math.isfinite(self.face_score) and 0 <= self.face_score <= 1):
            raise InvalidArgument("a face score is between 0 and 1", field="evidence.face_score")
        if len(self.email_verifications) > MAX_VERIFICATIONS:
            raise InvalidArgument(f"at most {MAX_VERIFICATIONS} e-mail verifications",
                                  field="evidence.email_verifications")
        for address, _ in self.email_verifications:
            _bounded_text("evidence.email_verifications.address", address, MAX_ADDRESS, required=True)
        if self.application_sha256 is not None and len(self.application_sha256) != 32:
            raise InvalidArgument("an application's SHA-256 has 32 bytes", field="evidence.application_sha256")
        return self

    def audit_detail(self) -> dict:
        """The evidence as the audit record keeps it (JSON values)."""
        return {
            "registry_match": self.registry_match,
            "face_score": self.face_score,
            "email_verifications": [[address, epoch_seconds(at)] for address, at in self.email_verifications],
            "application_sha256": self.application_sha256.hex() if self.application_sha256 else None,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class RaRequest:
    """One request of an RA that changes something: the call (``method``, e.g.
    "RenewCertificate"), what it concerns (an account or a serial), and its proof of freshness."""

    operator: str
    method: str
    subject: str
    nonce: str
    requested_at: datetime.datetime
    evidence: RaEvidence


class RaRequests:
    """Identifies the RAs and admits their requests once."""

    def __init__(self, database: Database, audit: AuditLog, clock: Clock, client_status: ClientCertificateStatus,
                 window: datetime.timedelta = REQUEST_WINDOW):
        self._database = database
        self._audit = audit
        self._clock = clock
        self._client_status = client_status
        self._window = window

    def identify(self, certificate_pem: bytes | None) -> str:
        """The RA operator named by a client certificate: one this CA issued with the RA profile,
        valid now (its dates on every call; its revocation as the client status read the records
        within the last few seconds).

        Raises:
            NoCredentials: no certificate.
            Unauthenticated: the certificate is expired, not valid yet, revoked, or unreadable.
            PermissionDenied: another profile, or another issuer.
        """
        how = ("only registration authorities may call this service: present a client certificate issued with "
               "`signserver ca issue-client --role ra`")
        if not certificate_pem:
            raise NoCredentials(how)
        refusal = PermissionDenied(how)
        client = presented(certificate_pem)
        # By the profile this CA recorded when it issued the certificate, not by its policy OID:
        # the OIDs follow ca.policy_oid_arc, and a changed arc must not lock out the RAs.
        if self._client_status.issued_profile(client) != RA_PROFILE:
            raise refusal
        return client.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def admit(self, request: RaRequest) -> None:
        """Spend the request's nonce and record the request with its evidence in the audit log
        (event "ra.request"), in one transaction, before the change is made. Nonces older than the
        window's double are removed on the way.

        Raises:
            InvalidArgument: no nonce or an unusable one, no request time, bad evidence.
            RequestOutOfWindow: the request's time is more than the window away from now.
            RequestReplayed: the nonce was seen before.
            StoreUnavailable.
        """
        _check_nonce(request.nonce)
        request.evidence.check()
        now = self._clock.now()
        if abs(now - request.requested_at) > self._window:
            raise RequestOutOfWindow(
                f"the request was made at {request.requested_at.isoformat(timespec='seconds')}, more than "
                f"{int(self._window.total_seconds())} s from the server's time; send a new request "
                "(and check the RA's clock)")
        replayed = RequestReplayed("this request's nonce was seen before: a replayed request is refused; "
                                   "a new request takes a new nonce")
        try:
            with self._database.transaction() as conn:
                self._prune(conn, now)
                if conn.execute(select(ra_request_nonces.c.nonce)
                                .where(ra_request_nonces.c.nonce == request.nonce)).first() is not None:
                    raise replayed
                conn.execute(insert(ra_request_nonces).values(nonce=request.nonce, operator=request.operator,
                                                              seen_at=epoch_seconds(now)))
                self._audit.append(conn, now, "ra.request", request.operator, request.subject,
                                   method=request.method, nonce=request.nonce,
                                   requested_at=epoch_seconds(request.requested_at),
                                   evidence=request.evidence.audit_detail())
        except StoreConflict:  # the same nonce, admitted meanwhile by another worker
            raise replayed from None

    def _prune(self, conn, now: datetime.datetime) -> None:
        cutoff = epoch_seconds(now - 2 * self._window)
        old = select(ra_request_nonces.c.nonce).where(ra_request_nonces.c.seen_at < cutoff).limit(PRUNE_BATCH)
        conn.execute(delete(ra_request_nonces).where(ra_request_nonces.c.nonce.in_(old)))


def _check_nonce(nonce: str) -> None:
    """Raises: InvalidArgument: missing, not 16 to 128 characters, or characters outside base64."""
    if not nonce:
        raise InvalidArgument("nonce is required: a fresh random value for each request", field="nonce")
    if len(nonce) not in NONCE_LENGTHS or not set(nonce) <= NONCE_CHARACTERS:
        raise InvalidArgument("a nonce has 16 to 128 characters of base64 or base64url", field="nonce")


def _bounded_text(field: str, value: str, limit: int, required: bool = False) -> None:
    if required and not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > limit:
        raise InvalidArgument(f"{field} has at most {limit} characters", field=field)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(f"{field} must not contain control characters", field=field)
