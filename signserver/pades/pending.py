"""Documents prepared in the two-step flow, waiting for the holder's authorisation.

They live in this server process (their spool files and pyHanko's state); a prepared document
is completed by the same process, within the activation token's lifetime, or dropped.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from dataclasses import dataclass
from typing import BinaryIO

from signserver.errors import NotFound
from signserver.pades.cms_signer import HsmCmsSigner
from signserver.pades.document import PadesLevel, PreparedDocument

MAX_PENDING = 1000


@dataclass
class PendingDocument:
    id: str
    application_id: int
    credential_id: str
    level: PadesLevel
    prepared: PreparedDocument
    output: BinaryIO
    expires_at: datetime.datetime
    signer: HsmCmsSigner  # bound to the holder's key once the holder authorised the digest

    @property
    def digest(self) -> bytes:
        return self.prepared.digest


class PendingDocuments:
    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, PendingDocument] = {}

    def add(self, application_id: int, credential_id: str, level: PadesLevel, prepared: PreparedDocument,
            output: BinaryIO, expires_at: datetime.datetime, signer: HsmCmsSigner) -> PendingDocument:
        pending = PendingDocument(secrets.token_urlsafe(16), application_id, credential_id, level, prepared, output,
                                  expires_at, signer)
        with self._lock:
            if len(self._items) >= MAX_PENDING:
                oldest = min(self._items.values(), key=lambda p: p.expires_at)
                self._drop(oldest.id)
            self._items[pending.id] = pending
        return pending

    def take(self, document_id: str, application_id: int, now: datetime.datetime) -> PendingDocument:
        """Remove and return the document. Raises: NotFound: unknown, expired or another application's."""
        with self._lock:
            for expired in [p.id for p in self._items.values() if p.expires_at <= now]:
                self._drop(expired)
            pending = self._items.get(document_id)
            if pending is None or pending.application_id != application_id:
                raise NotFound("no prepared document with that id here: it expired, was completed, or was "
                               "prepared by another server process")
            del self._items[document_id]
            return pending

    def _drop(self, document_id: str) -> None:
        self._items.pop(document_id).output.close()
