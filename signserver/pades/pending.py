"""PreparedDocuments: documents prepared in the two-step flow, waiting for the holder's authorisation.

A prepared document is data that any worker of any node can finish: a row in the database (the
half-done signature as pyHanko's interrupted signing describes it, see PreparedSignature) and the
prepared PDF in the spool directory, which every node must share (``[pades] spool_dir``). The
bytes are kept in files rather than in the database: a document may be up to
``pades.max_document_mb`` (200 MB by default), which a database row would carry whole through
memory, where a file is streamed. A file is written under a temporary name, 0600, synced, and
renamed: its row names only a whole file.

CompleteSignature takes a document exactly once: deleting its row is the claim, and of two calls
racing for one document only the one whose delete removed the row goes on. Rows name documents by
a hash of their id (a bearer handle: the database alone hands out none), files by a name of
their own that starts with the instant they were made. Expired documents go with their files
(lazily, and in the background work), each file removed only by the call that deleted its row.
A file that no row names (its process stopped between writing it and its row, or between taking
the row and removing the file) is removed by the background sweep once no completion can be
using it.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy import delete, func, insert, select

from signserver.clock import Clock, SystemClock, epoch_seconds, from_epoch
from signserver.errors import DataCorrupted, NotFound, SpoolUnavailable
from signserver.monitoring.fault_log import FaultLog
from signserver.pades.document import PadesLevel
from signserver.pades.prepared_signature import PostSignData, PreparedSignature
from signserver.store.database import Database
from signserver.store.schema import prepared_documents

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # prepared documents per application; beyond, its oldest is dropped
SWEEP_BATCH = 500  # rows (and files) removed per transaction, file names looked up per query
# A file that no row names is removed once it is older than the lifetime and this: longer than
# any completion takes (its row is gone while it finishes the file).
COMPLETION_GRACE = datetime.timedelta(minutes=15)
# How often each process lists the spool directory for such files.
FILE_SWEEP_EVERY = datetime.timedelta(seconds=60)
UNKNOWN = "no prepared document with that id: it expired, was completed, or is being completed"
_FILE_NAME = re.compile(r"(\d{1,12})-[0-9a-f]{32}(\.pdf|\.part)")
# A full or read-only file system refuses every document until the operator acts: said once a
# minute per process, not once per call (a client could repeat the call to fill the log).
REFUSED_WRITE_LOG_SECONDS = 60.0
REFUSED_WRITE = "the server cannot keep the document now: try again later"
_refusals = FaultLog(log, SystemClock(), interval=REFUSED_WRITE_LOG_SECONDS)


def refused_write(exc: OSError, directory: Path) -> SpoolUnavailable:
    """The refusal of a document whose file in ``directory`` the file system would not make or
    write (``exc``: ENOSPC, EDQUOT, EROFS, EACCES or any other). The operator's log says what
    the file system answered, at most once per REFUSED_WRITE_LOG_SECONDS in each process (the
    calls in between counted); it names the directory and the error, nothing of the caller's.
    """
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno is not None else type(exc).__name__
    _refusals.record("the spool directory %s refuses a document's file (%s: %s): documents are refused as "
                     "UNAVAILABLE until it takes them again (free space, or make it writable)", directory, code,
                     exc.strerror or exc)
    return SpoolUnavailable(REFUSED_WRITE)


@dataclass(frozen=True)
class PendingDocument:
    """A prepared document, as PrepareSignature answers it."""

    id: str  # the bearer handle the application completes it with
    digest: bytes
    expires_at: datetime.datetime


@dataclass(frozen=True)
class TakenDocument:
    """A prepared document taken for completion: its row is gone, its file (open, readable and
    writable) is the taker's to finish and then to :meth:`PreparedDocuments.discard`."""

    credential_id: str
    certificate_sha256: bytes  # the signer's certificate the document was prepared with
    level: PadesLevel
    signature: PreparedSignature
    file: BinaryIO


def document_hash(document_id: str) -> str:
    return hashlib.sha256(document_id.encode("utf-8")).hexdigest()


class PreparedDocuments:
    """The rows and spool files of prepared documents (blocking work: run it in a pool)."""

    def __init__(self, database: Database, clock: Clock, spool_dir: Path, lifetime: datetime.timedelta,
                 max_per_application: int = MAX_PENDING):
        self._database = database
        self._clock = clock
        self.spool_dir = spool_dir
        self._lifetime = lifetime
        self._max = max_per_application
        self._next_file_sweep: datetime.datetime | None = None  # per process: it only saves listings

    def add(self, application_id: int, credential_id: str, certificate_sha256: bytes, level: PadesLevel,
            write: Callable[[BinaryIO], PreparedSignature]) -> PendingDocument:
        """Write the prepared document with ``write`` (into a new spool file, readable and
        writable; it returns the signature's data) and record it. The application's expired
        documents go, and its oldest when it has ``max_per_application``.

        Raises: what ``write`` raises (nothing is kept then); StoreUnavailable; SpoolUnavailable:
        the spool directory refused the file (full, read-only, not writable: see refused_write).
        """
        now = self._clock.now()
        name = f"{epoch_seconds(now)}-{secrets.token_hex(16)}"
        path, part = self.spool_dir / f"{name}.pdf", self.spool_dir / f"{name}.part"
        try:
            try:
                self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                with os.fdopen(os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b") as file:
                    signature = write(file)
                    file.flush()
                    os.fsync(file.fileno())  # the row names a whole file, on every node, after a crash too
                os.replace(part, path)
            except OSError as exc:
                raise refused_write(exc, self.spool_dir) from exc
            document_id = secrets.token_urlsafe(16)
            expires_at = now + self._lifetime
            with self._database.transaction() as conn:
                dropped = self._make_room(conn, application_id, epoch_seconds(now))
                conn.execute(insert(prepared_documents).values(
                    id_hash=document_hash(document_id), application_id=application_id, credential_id=credential_id,
                    certificate_sha256=certificate_sha256, level=level.value, md_algorithm=signature.md_algorithm,
                    document_digest=signature.document_digest, reserved_start=signature.reserved_region_start,
                    reserved_end=signature.reserved_region_end, signing_time=epoch_seconds(signature.signing_time),
                    post_sign=signature.post_sign.to_json() if signature.post_sign else None, file_name=path.name,
                    created_at=epoch_seconds(now), expires_at=epoch_seconds(expires_at)))
        except BaseException:
            self._remove_files([part.name, path.name])
            raise
        self._remove_files(dropped)
        return PendingDocument(document_id, signature.document_digest, from_epoch(epoch_seconds(expires_at)))

    def _make_room(self, conn, application_id: int, now: int) -> list[str]:
        """Delete the application's expired documents, and its oldest beyond the bound; returns
        the names of their files."""
        table = prepared_documents.c
        expired = conn.execute(select(table.id_hash, table.file_name).where(
            table.application_id == application_id, table.expires_at <= now).limit(SWEEP_BATCH)).all()
        live = conn.execute(select(func.count()).select_from(prepared_documents).where(
            table.application_id == application_id, table.expires_at > now)).scalar_one()
        oldest = []
        if live >= self._max:
            oldest = conn.execute(select(table.id_hash, table.file_name).where(
                table.application_id == application_id, table.expires_at > now)
                .order_by(table.created_at, table.id_hash).limit(live - self._max + 1)).all()
        return _delete(conn, [*expired, *oldest])

    def take(self, document_id: str, application_id: int) -> TakenDocument:
        """Take the application's document for completion, exactly once: its row is deleted here.

        Raises: NotFound: unknown, another application's, expired, or taken by another call
        (all alike); StoreUnavailable; DataCorrupted: the row is unreadable.
        """
        now = epoch_seconds(self._clock.now())
        key = document_hash(document_id)
        table = prepared_documents.c
        with self._database.transaction() as conn:
            row = conn.execute(select(prepared_documents).where(table.id_hash == key)).first()
            if row is None or row.application_id != application_id:
                raise NotFound(UNKNOWN)
            # The claim: of two calls that read the row, only one deletes it (the other's delete
            # waits for the first to commit, then finds nothing).
            if conn.execute(delete(prepared_documents).where(table.id_hash == key)).rowcount != 1:
                raise NotFound(UNKNOWN)
        if row.expires_at <= now:
            self._remove_files([row.file_name])
            raise NotFound(UNKNOWN)
        try:
            post_sign = PostSignData.from_json(row.post_sign) if row.post_sign is not None else None
        except DataCorrupted:
            self._remove_files([row.file_name])
            raise
        try:
            file = (self.spool_dir / row.file_name).open("r+b")
        except FileNotFoundError:
            log.warning("the file of a prepared document is missing from %s: is [pades] spool_dir one directory "
                        "that every node shares?", self.spool_dir)
            raise NotFound(UNKNOWN) from None
        signature = PreparedSignature(
            document_digest=row.document_digest, reserved_region_start=row.reserved_start,
            reserved_region_end=row.reserved_end, md_algorithm=row.md_algorithm,
            signing_time=from_epoch(row.signing_time), post_sign=post_sign)
        return TakenDocument(credential_id=row.credential_id, certificate_sha256=row.certificate_sha256,
                             level=PadesLevel(row.level), signature=signature, file=file)

    def discard(self, taken: TakenDocument) -> None:
        """Close a taken document's file and remove it (whether it was signed or not)."""
        taken.file.close()
        self._remove_files([Path(taken.file.name).name])

    def remove_expired(self) -> int:
        """Remove expired documents with their files, and (every FILE_SWEEP_EVERY in each process)
        the spool files that no row names once the lifetime is over. Returns how many documents
        and files went.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        removed = 0
        table = prepared_documents.c
        expired = select(table.id_hash, table.file_name).where(
            table.expires_at <= epoch_seconds(now)).limit(SWEEP_BATCH)
        while True:
            with self._database.read() as conn:  # most rounds find nothing: no write lock for them
                if conn.execute(expired).first() is None:
                    break
            with self._database.transaction() as conn:
                rows = conn.execute(expired).all()
                names = _delete(conn, rows)
            self._remove_files(names)
            removed += len(names)
            if len(rows) < SWEEP_BATCH:
                break
        if self._next_file_sweep is None or now >= self._next_file_sweep:
            self._next_file_sweep = now + FILE_SWEEP_EVERY
            removed += self._remove_orphans(now)
        return removed

    def _remove_orphans(self, now: datetime.datetime) -> int:
        """Remove spool files that no row names, made longer ago than the lifetime and the
        COMPLETION_GRACE. A row is written right after its file and expires a lifetime after the
        instant the file's name carries: such a file's row expired (and was removed above), or
        was never written, or was taken by a completion that has long ended."""
        try:
            names = os.listdir(self.spool_dir)
        except FileNotFoundError:
            return 0
        made_before = epoch_seconds(now - self._lifetime - COMPLETION_GRACE)
        old = [name for name in names
               if (match := _FILE_NAME.fullmatch(name)) is not None and int(match.group(1)) < made_before]
        orphans = []
        for start in range(0, len(old), SWEEP_BATCH):
            batch = old[start:start + SWEEP_BATCH]
            with self._database.read() as conn:
                named = set(conn.execute(select(prepared_documents.c.file_name).where(
                    prepared_documents.c.file_name.in_(batch))).scalars())
            orphans += [name for name in batch if name not in named]
        if orphans:
            log.info("removing %d prepared-document files that no row names", len(orphans))
        self._remove_files(orphans)
        return len(orphans)

    def _remove_files(self, names: list[str]) -> None:
        for name in names:
            try:
                (self.spool_dir / name).unlink(missing_ok=True)
            except OSError as exc:  # left for the sweep of files that no row names
                log.warning("could not remove the prepared document file %s: %s", name, exc)


def _delete(conn, rows) -> list[str]:
    """Delete these rows one by one; returns the file names of those this call deleted (a row
    that another call took meanwhile is that call's, file and all)."""
    table = prepared_documents.c
    return [row.file_name for row in rows
            if conn.execute(delete(prepared_documents).where(table.id_hash == row.id_hash)).rowcount == 1]
