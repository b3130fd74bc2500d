"""SQL for the CA: its own keys and certificates, the certificates it issued, its CRLs."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Connection, delete, insert, or_, select, update

from signserver.clock import epoch_seconds, from_epoch
from signserver.errors import NotFound
from signserver.store.schema import accounts, authorities, certificates, crls, pending_ca_keys, superseded_ca_keys
from signserver.store.upsert import insert_on_conflict


# A certificate's status as listed: the database keeps "valid" or "revoked"; a valid one whose
# not_after has passed is shown "expired" (_issued).
LISTED_STATUSES = ("valid", "expired", "revoked")


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str  # hex, lowercase
    profile: str
    account: str | None
    credential_id: str | None
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    status: str  # valid | revoked | expired (computed)
    revoked_at: datetime.datetime | None
    revocation_reason: str | None
    predecessor_serial: str | None
    der: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True)
class Authority:
    name: str
    key_id: str
    certificate: x509.Certificate | None


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def normalise_serial(serial: str) -> str:
    """Lowercase hex without a 0x prefix, leading zeros or separators, as stored."""
    text = serial.strip().lower().replace(":", "")
    return text.removeprefix("0x").lstrip("0") or "0"


def _issued(row, now: datetime.datetime) -> IssuedCertificate:
    status = row.status
    if status == "valid" and row.not_after <= epoch_seconds(now):
        status = "expired"
    return IssuedCertificate(
        serial=row.serial, profile=row.profile, account=row.username, credential_id=row.credential_id,
        subject=row.subject, not_before=from_epoch(row.not_before), not_after=from_epoch(row.not_after),
        status=status, revoked_at=from_epoch(row.revoked_at) if row.revoked_at else None,
        revocation_reason=row.revocation_reason, predecessor_serial=row.predecessor_serial, der=row.der)


_COLUMNS = (certificates, accounts.c.username)


def _query():
    return select(*_COLUMNS).outerjoin(accounts, certificates.c.account_id == accounts.c.id)


def get_certificate(conn: Connection, serial: str, now: datetime.datetime,
                    shown_profiles: tuple[str, ...] | None = None) -> IssuedCertificate:
    """The certificate of ``serial``; with ``shown_profiles``, a holder's or one of those profiles
    only, any other being as unknown as a serial never issued.

    Raises: NotFound."""
    query = _query().where(certificates.c.serial == normalise_serial(serial))
    if shown_profiles is not None:
        query = query.where(or_(certificates.c.account_id.is_not(None), certificates.c.profile.in_(shown_profiles)))
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"no certificate with serial {serial}")
    return _issued(row, now)


@dataclass(frozen=True)
class PagePosition:
    """A certificate's place in the listings' order: issued_at, then serial (an index serves it)."""

    issued_at: int  # epoch seconds
    serial: str


def _listed(now: datetime.datetime, account_id: int | None, expiring_before: datetime.datetime | None,
            status: str = "", holders_only: bool = False, account_ids: tuple[int, ...] | None = None):
    query = _query().order_by(certificates.c.issued_at, certificates.c.serial)
    if account_id is not None:
        query = query.where(certificates.c.account_id == account_id)
    elif account_ids is not None:  # read through the index on account_id, then sorted: a few rows
        query = query.where(certificates.c.account_id.in_(account_ids))
    elif holders_only:
        # Read through the index of the listing's order like every other row: the certificates of
        # no holder (the CA's own, applications' and RAs') are a few hundred beside a million, so
        # the rows skipped are few and an index of holders' rows alone would cost every issuance.
        query = query.where(certificates.c.account_id.is_not(None))
    if expiring_before is not None:
        query = query.where(certificates.c.status == "valid", certificates.c.not_after > epoch_seconds(now),
                            certificates.c.not_after <= epoch_seconds(expiring_before))
    # The status as _issued shows it: the stored "valid" is "expired" once not_after has passed.
    if status == "revoked":
        query = query.where(certificates.c.status == "revoked")
    elif status == "valid":
        query = query.where(certificates.c.status == "valid", certificates.c.not_after > epoch_seconds(now))
    elif status == "expired":
        query = query.where(certificates.c.status == "valid", certificates.c.not_after <= epoch_seconds(now))
    elif status:
        raise ValueError(f"not a status: {status!r}")
    return query


def list_certificates(conn: Connection, now: datetime.datetime, account_id: int | None = None,
                      expiring_before: datetime.datetime | None = None) -> list[IssuedCertificate]:
    return [_issued(r, now) for r in conn.execute(_listed(now, account_id, expiring_before))]


def due_expiry_notices_query(now: datetime.datetime, before: datetime.datetime, limit: int):
    """The query of :func:`due_expiry_notices`: read through the index of the certificates not
    noticed yet (schema.py, ix_certificates_due_expiry_notice), in its order; the rows it reads
    locked, those another transaction holds passed over (PostgreSQL; SQLite's writers hold the
    whole database)."""
    return (_query().where(certificates.c.status == "valid", certificates.c.expiry_notice_at.is_(None),
                           certificates.c.account_id.is_not(None), certificates.c.not_after > epoch_seconds(now),
                           certificates.c.not_after <= epoch_seconds(before))
            .order_by(certificates.c.not_after, certificates.c.serial).limit(limit)
            .with_for_update(of=certificates, skip_locked=True))


def due_expiry_notices(conn: Connection, now: datetime.datetime, before: datetime.datetime,
                       limit: int) -> list[IssuedCertificate]:
    """Up to ``limit`` valid certificates of an account that end after ``now`` and by ``before``
    and have had no expiry notice, soonest first: those noticed already are not read again. Their
    rows stay locked until the transaction ends; a row another transaction has locked (a
    revocation's, another node's expiry pass's) is left out, not waited for."""
    return [_issued(r, now) for r in conn.execute(due_expiry_notices_query(now, before, limit))]


def mark_expiry_noticed(conn: Connection, serials: list[str], now: datetime.datetime) -> set[str]:
    """Record that the certificates of ``serials`` were noticed ``now``, those not noticed yet, in
    one statement; returns the serials this call marked."""
    if not serials:
        return set()
    return set(conn.execute(update(certificates)
                            .where(certificates.c.serial.in_(serials), certificates.c.expiry_notice_at.is_(None))
                            .values(expiry_notice_at=epoch_seconds(now)).returning(certificates.c.serial)).scalars())


def page_query(now: datetime.datetime, size: int, after: PagePosition | None = None, account_id: int | None = None,
               expiring_before: datetime.datetime | None = None, status: str = "", holders_only: bool = False,
               account_ids: tuple[int, ...] | None = None):
    """The query of :func:`certificate_page`: one row more than ``size``.

    Raises: ValueError: ``status`` is not one of LISTED_STATUSES (nor "")."""
    query = _listed(now, account_id, expiring_before, status, holders_only, account_ids)
    if after is not None:
        # The first condition alone is what the index on (issued_at, serial) seeks to, or with a
        # status the one on (status, issued_at, serial), so the thousandth page costs what the
        # first does; the second skips the rows of that second already listed.
        query = query.where(certificates.c.issued_at >= after.issued_at,
                            or_(certificates.c.issued_at > after.issued_at, certificates.c.serial > after.serial))
    # One row more than the page tells whether another page follows, so the last page's token is empty.
    return query.limit(size + 1)


def certificate_page(conn: Connection, now: datetime.datetime, size: int, after: PagePosition | None = None,
                     account_id: int | None = None, expiring_before: datetime.datetime | None = None,
                     status: str = "", holders_only: bool = False, account_ids: tuple[int, ...] | None = None
                     ) -> tuple[list[IssuedCertificate], PagePosition | None]:
    """Up to ``size`` certificates listed after ``after`` (of ``status`` as :class:`IssuedCertificate`
    shows it, when given; of an account only with ``holders_only``; of ``account_ids`` only, when
    given), and the position of the last of them when more follow (None on the last page).

    Raises: ValueError: ``status`` is not one of LISTED_STATUSES (nor "")."""
    rows = conn.execute(page_query(now, size, after, account_id, expiring_before, status, holders_only,
                                   account_ids)).all()
    last = PagePosition(rows[size - 1].issued_at, rows[size - 1].serial) if len(rows) > size else None
    return [_issued(r, now) for r in rows[:size]], last


def insert_certificate(conn: Connection, certificate: x509.Certificate, profile: str, account_id: int | None,
                       credential_id: str | None, predecessor: str | None, now: datetime.datetime) -> str:
    serial = serial_hex(certificate.serial_number)
    conn.execute(insert(certificates).values(
        serial=serial, profile=profile, account_id=account_id, credential_id=credential_id,
        subject=certificate.subject.rfc4514_string(),
        not_before=epoch_seconds(certificate.not_valid_before_utc),
        not_after=epoch_seconds(certificate.not_valid_after_utc), status="valid",
        predecessor_serial=predecessor, issued_at=epoch_seconds(now), der=certificate.public_bytes(Encoding.DER)))
    return serial


def live_successor(conn: Connection, serial: str) -> str | None:
    """The serial of the certificate renewing ``serial`` that is not revoked, if there is one."""
    query = select(certificates.c.serial).where(certificates.c.predecessor_serial == normalise_serial(serial),
                                                certificates.c.status == "valid")
    return conn.execute(query).scalar()


def serial_exists(conn: Connection, serial: int) -> bool:
    return conn.execute(select(certificates.c.serial).where(certificates.c.serial == serial_hex(serial))).first() \
        is not None


def mark_revoked(conn: Connection, serial: str, reason: str, now: datetime.datetime) -> bool:
    """True when this call revoked it (False: it was revoked already)."""
    return conn.execute(update(certificates).where(certificates.c.serial == serial, certificates.c.status == "valid")
                        .values(status="revoked", revoked_at=epoch_seconds(now), revocation_reason=reason)).rowcount == 1


def is_revoked(conn: Connection, serial: int) -> bool:
    """Whether this CA revoked the certificate of that serial (False: valid, or not in its records)."""
    return conn.execute(select(certificates.c.status).where(certificates.c.serial == serial_hex(serial))).scalar() \
        == "revoked"


def revoked_entries(conn: Connection) -> list:
    return conn.execute(select(certificates.c.serial, certificates.c.revoked_at, certificates.c.revocation_reason)
                        .where(certificates.c.status == "revoked").order_by(certificates.c.revoked_at)).all()


def get_authority(conn: Connection, name: str, for_update: bool = False) -> Authority | None:
    """``for_update``: the row is locked until the transaction ends (PostgreSQL; SQLite's writers
    hold the whole database's write lock), so that a change decided on what it says is made by
    one node at a time."""
    query = select(authorities).where(authorities.c.name == name)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        return None
    certificate = x509.load_der_x509_certificate(row.certificate) if row.certificate else None
    return Authority(name=row.name, key_id=row.key_id, certificate=certificate)


def put_authority(conn: Connection, name: str, key_id: str, certificate_der: bytes | None,
                  now: datetime.datetime) -> None:
    """Set ``name``'s key and certificate, whether it has a row or not: one statement, which two
    nodes may run at once without either failing on the other's new row."""
    statement = insert_on_conflict(conn, authorities).values(name=name, key_id=key_id, certificate=certificate_der,
                                                             created_at=epoch_seconds(now))
    conn.execute(statement.on_conflict_do_update(index_elements=[authorities.c.name], set_={
        "key_id": statement.excluded.key_id, "certificate": statement.excluded.certificate}))


def add_authority(conn: Connection, name: str, key_id: str, certificate_der: bytes | None,
                  now: datetime.datetime) -> bool:
    """Make ``name``'s row unless it has one; True when this call made it. On PostgreSQL, a row
    another transaction is making is waited for, and then said to exist (False)."""
    return conn.execute(insert_on_conflict(conn, authorities)
                        .values(name=name, key_id=key_id, certificate=certificate_der, created_at=epoch_seconds(now))
                        .on_conflict_do_nothing(index_elements=[authorities.c.name])
                        .returning(authorities.c.name)).first() is not None


def authority_key_ids(conn: Connection) -> set[str]:
    """The HSM keys the CA's authorities use (an external root has none), and the superseded keys
    not yet removed from the token."""
    current = {row.key_id for row in conn.execute(select(authorities.c.key_id)) if row.key_id}
    return current | set(conn.execute(select(superseded_ca_keys.c.key_id)).scalars())


def current_authority_key_ids(conn: Connection) -> set[str]:
    """The HSM keys the CA's authorities sign with now (superseded keys not included)."""
    return {row.key_id for row in conn.execute(select(authorities.c.key_id)) if row.key_id}


@dataclass(frozen=True)
class SupersededKey:
    """A service key (the OCSP responder's, the TSA's) that a renewal replaced, not yet removed
    from the token."""

    key_id: str
    role: str
    certificate: x509.Certificate | None
    superseded_at: datetime.datetime


def put_superseded_key(conn: Connection, authority: Authority, now: datetime.datetime) -> None:
    """Record that ``authority``'s key was replaced ``now`` (once: recorded again, by this node or
    another at the same time, it keeps its time)."""
    der = authority.certificate.public_bytes(Encoding.DER) if authority.certificate is not None else None
    conn.execute(insert_on_conflict(conn, superseded_ca_keys)
                 .values(key_id=authority.key_id, role=authority.name, certificate=der,
                         superseded_at=epoch_seconds(now))
                 .on_conflict_do_nothing(index_elements=[superseded_ca_keys.c.key_id]))


def superseded_keys(conn: Connection) -> list[SupersededKey]:
    """The replaced service keys not yet removed from the token, oldest first."""
    rows = conn.execute(select(superseded_ca_keys)
                        .order_by(superseded_ca_keys.c.superseded_at, superseded_ca_keys.c.key_id))
    return [SupersededKey(key_id=row.key_id, role=row.role, superseded_at=from_epoch(row.superseded_at),
                          certificate=x509.load_der_x509_certificate(row.certificate) if row.certificate else None)
            for row in rows]


def delete_superseded_key(conn: Connection, key_id: str) -> bool:
    """Forget a superseded key; True when this call did (False: forgotten already, by another node)."""
    return conn.execute(delete(superseded_ca_keys).where(superseded_ca_keys.c.key_id == key_id)).rowcount == 1


def certificates_of_profiles(conn: Connection, profiles: tuple[str, ...]) -> list[tuple[str, x509.Certificate]]:
    """The certificates this CA issued under ``profiles``, with their profile, newest first."""
    rows = conn.execute(select(certificates.c.profile, certificates.c.der)
                        .where(certificates.c.profile.in_(profiles))
                        .order_by(certificates.c.issued_at.desc(), certificates.c.serial))
    return [(row.profile, x509.load_der_x509_certificate(row.der)) for row in rows]


def crl_authorities(conn: Connection) -> set[str]:
    """The authorities that have published a CRL."""
    return set(conn.execute(select(crls.c.authority)).scalars())


@dataclass(frozen=True)
class PendingKey:
    purpose: str
    label: str
    algorithm: str


def get_pending_key(conn: Connection, purpose: str) -> PendingKey | None:
    row = conn.execute(select(pending_ca_keys).where(pending_ca_keys.c.purpose == purpose)).first()
    return PendingKey(row.purpose, row.label, row.algorithm) if row is not None else None


def pending_key_labels(conn: Connection) -> set[str]:
    """The labels recorded for keys about to be generated (whether the token made them or not)."""
    return set(conn.execute(select(pending_ca_keys.c.label)).scalars())


def put_pending_key(conn: Connection, purpose: str, label: str, algorithm: str, now: datetime.datetime) -> None:
    """Record the label about to be generated for ``purpose``, replacing the one before: one
    statement, which two nodes may run at once without either failing on the other's row."""
    statement = insert_on_conflict(conn, pending_ca_keys).values(purpose=purpose, label=label, algorithm=algorithm,
                                                                 created_at=epoch_seconds(now))
    conn.execute(statement.on_conflict_do_update(index_elements=[pending_ca_keys.c.purpose], set_={
        "label": statement.excluded.label, "algorithm": statement.excluded.algorithm,
        "created_at": statement.excluded.created_at}))


def delete_pending_key(conn: Connection, purpose: str, label: str | None = None) -> None:
    """Forget the key being generated for ``purpose``; with ``label``, only if it is that one (the
    label another node recorded since stays)."""
    condition = pending_ca_keys.c.purpose == purpose
    if label is not None:
        condition = condition & (pending_ca_keys.c.label == label)
    conn.execute(delete(pending_ca_keys).where(condition))
