"""PreparationCache: the part of preparing a signature that is the same for every document signed
with one certificate, computed once and reused for a short while.

For every document pyHanko validates the signer's chain against our CA's revocation data (and the
time-stamping authority's chain, by asking it for a trial token), then builds a trial signature
container to learn how much room to reserve. On a small document that is a third of the signing
time, and the answer depends only on the certificate, the level, the time-stamping authority and
the exact revocation data, so those make the key: a new CRL is a new key, and nothing is kept
longer than ``lifetime`` (which bounds how long a result outlives the clock it was computed on).
A revoked or expired credential never gets this far: the database is asked before every signature.
"""

from __future__ import annotations

import collections
import datetime
import threading
from dataclasses import dataclass

from pyhanko.sign.signers.pdf_signer import PdfSigningSession, PreSignValidationStatus


@dataclass(frozen=True)
class PreparationKey:
    certificate_sha256: bytes
    level: str
    timestamper: str  # which TSA ("" when none)
    revocation_sha256: bytes  # the CRLs handed to the validator


@dataclass(frozen=True)
class Preparation:
    validation: PreSignValidationStatus | None
    bytes_reserved: int


class PreparationCache:
    def __init__(self, lifetime: datetime.timedelta = datetime.timedelta(seconds=60), size: int = 256):
        self._lifetime = lifetime
        self._size = size
        self._entries: collections.OrderedDict[PreparationKey, tuple[datetime.datetime, Preparation]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    async def prepare(self, key: PreparationKey | None, session: PdfSigningSession, writer,
                      now: datetime.datetime) -> Preparation:
        """Validation data and room for the signature, from the cache or computed (``key`` None:
        never cached, e.g. a B-LTA signature that must extend a document's earlier time-stamps).

        Raises: pyHanko's SigningError (the signer's chain does not validate), PdfError.
        """
        if key is not None:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0] > now:
                    self._entries.move_to_end(key)
                    return entry[1]
        validation = await session.perform_presign_validation(writer)
        reserved = await session.estimate_signature_container_size(validation_info=validation, tight=False)
        prepared = Preparation(validation, reserved)
        if key is not None:
            with self._lock:
                self._entries[key] = (now + self._lifetime, prepared)
                self._entries.move_to_end(key)
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return prepared
