"""ClientCertificateStatus: is this client certificate, as this CA records it, valid now?

TLS checks a client certificate once, when the connection opens, and knows nothing of our
revocations. Every call therefore asks here: the certificate's dates against the clock on every
call, and, for a certificate this CA issued, its status in the CA's records. That status is kept
per process for a few seconds, keyed by the certificate, so a revocation takes effect within
them on new and open connections alike without a database read per call.

A certificate from another CA (an operator-configured client CA) has no record here: only its
dates are checked.
"""

from __future__ import annotations

import datetime
import functools
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signserver.accounts.applications import certificate_fingerprint
from signserver.ca import repository as repo
from signserver.clock import Clock
from signserver.errors import NotFound, Unauthenticated
from signserver.store.database import Database

STATUS_SECONDS = 2.0
_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate as a call presented it, parsed once."""

    certificate: x509.Certificate
    sha256: str  # of the DER, hex: how an application's certificate is registered
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def serial(self) -> str:
        return repo.serial_hex(self.certificate.serial_number)


@functools.lru_cache(maxsize=1024)
def presented(pem: bytes) -> ClientCertificate:
    """The client certificate of a call, from the PEM TLS verified. Every call on a connection
    presents the same bytes: they are parsed once.

    Raises: Unauthenticated: not a certificate.
    """
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Unauthenticated("the client certificate cannot be read") from None
    return ClientCertificate(certificate=certificate,
                             sha256=certificate_fingerprint(certificate),
                             not_before=certificate.not_valid_before_utc,
                             not_after=certificate.not_valid_after_utc)


@dataclass(frozen=True)
class _Verdict:
    until: float  # time.monotonic() after which the records are read again
    issued_here: bool
    refusal: str | None  # why the CA's records refuse it, or None
    profile: str | None = None  # the profile this CA issued it with


class ClientCertificateStatus:
    """The CA's word on client certificates, cached for ``cache_seconds`` per certificate."""

    def __init__(self, database: Database, clock: Clock, issuing_authority: str,
                 cache_seconds: float = STATUS_SECONDS):
        self._database = database
        self._clock = clock
        self._issuing_authority = issuing_authority
        self._cache_seconds = cache_seconds
        self._verdicts: dict[str, _Verdict] = {}

    def check(self, client: ClientCertificate) -> bool:
        """Whether this CA issued the certificate (False: another CA, checked by dates only),
        once it is found valid now. Reads the CA's records unless it did moments ago.

        Raises: Unauthenticated: outside its validity dates, revoked, or signed by this CA's key
        but not in its records. StoreUnavailable: the records cannot be read.
        """
        verdict = self._fresh(client)
        if verdict is None:
            verdict = self._read(client)
        return self._judge(client, verdict)

    def issued_profile(self, client: ClientCertificate) -> str | None:
        """The profile this CA issued the certificate with (None: another CA's), once it is found
        valid now; read like :meth:`check`.

        Raises: as :meth:`check`.
        """
        verdict = self._fresh(client)
        if verdict is None:
            verdict = self._read(client)
        self._judge(client, verdict)
        return verdict.profile

    def known_valid(self, client: ClientCertificate) -> bool:
        """True when the certificate was found valid moments ago and its dates still hold; False
        when the records must be read first (:meth:`check`). Never waits on the database, so an
        event loop may ask.

        Raises: Unauthenticated: as :meth:`check`, when known already.
        """
        verdict = self._fresh(client)
        if verdict is None:
            self._check_dates(client)
            return False
        self._judge(client, verdict)
        return True

    def _fresh(self, client: ClientCertificate) -> _Verdict | None:
        verdict = self._verdicts.get(client.sha256)
        if verdict is not None and verdict.until > time.monotonic():
            return verdict
        return None

    def _judge(self, client: ClientCertificate, verdict: _Verdict) -> bool:
        if verdict.refusal is not None:
            raise Unauthenticated(verdict.refusal)
        self._check_dates(client)
        return verdict.issued_here

    def _check_dates(self, client: ClientCertificate) -> None:
        now = self._clock.now()
        if now < client.not_before:
            raise Unauthenticated(f"the client certificate {client.serial} is not valid yet")
        if now >= client.not_after:
            raise Unauthenticated(f"the client certificate {client.serial} is expired")

    def _read(self, client: ClientCertificate) -> _Verdict:
        refusal, profile = None, None
        with self._database.read() as conn:
            authority = repo.get_authority(conn, self._issuing_authority)
            issued_here = authority is not None and authority.certificate is not None \
                and _signed_by(client.certificate, authority.certificate)
            if issued_here:
                try:
                    record = repo.get_certificate(conn, client.serial, self._clock.now())
                except NotFound:
                    record = None
                if record is None or record.der != client.certificate.public_bytes(Encoding.DER):
                    # Our key signed it but our records do not hold it: never trust such a one.
                    refusal = f"the client certificate {client.serial} is not in this CA's records"
                elif record.status not in ("valid", "expired"):  # expiry: the dates, checked per call
                    refusal = f"the client certificate {client.serial} is {record.status}"
                else:
                    profile = record.profile
        verdict = _Verdict(until=time.monotonic() + self._cache_seconds, issued_here=issued_here, refusal=refusal,
                           profile=profile)
        if len(self._verdicts) >= _MAX_ENTRIES:
            self._verdicts.clear()
        self._verdicts[client.sha256] = verdict
        return verdict


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except Exception:  # another issuer name, or a signature that does not verify
        return False
    return True
