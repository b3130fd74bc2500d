"""NameKeys: the keyed hash under which the lockout keeps a name that was tried.

Holders type their password into the account field, so what was typed there is stored nowhere:
the lockout's rows hold HMAC-SHA256 of the name under a key of their own. The key is random, made
once for a database and kept in it sealed by the HSM's sealing key (signserver/hsm/sealing.py),
which every node of a service shares (the key ceremony copies it): every worker and node opens
it once and hashes a name as every other does, so a name locks alike wherever it is tried. A
reader of the database learns no name (a guess needs the HSM to check it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Callable

from sqlalchemy import select

from signserver.clock import Clock, epoch_seconds
from signserver.errors import DataCorrupted
from signserver.hsm.sealing import SealingKey
from signserver.store.database import Database
from signserver.store.schema import sealed_keys
from signserver.store.upsert import insert_on_conflict

PURPOSE = "name-lockout"
_CONTEXT = b"signserver sealed key: " + PURPOSE.encode("ascii")  # what the sealed key is bound to
KEY_BYTES = 32


class NameKeys:
    def __init__(self, database: Database, sealing: SealingKey, clock: Clock):
        self._database = database
        self._sealing = sealing
        self._clock = clock
        self._lock = threading.Lock()
        self._key: bytes | None = None

    def key_of(self, name: str) -> str:
        """The name's keyed hash (64 hex digits), exactly as typed: what the lockout keeps.

        The first call of a process reads the key (making it, on a database that has none) in
        transactions of its own: make it before opening one.

        Raises: DataCorrupted: the stored key does not open with this token's sealing key.
            HsmError, StoreUnavailable.
        """
        return _keyed_hash(self._secret(), name)

    def hasher(self) -> Callable[[str], str]:
        """:meth:`key_of` as a function that touches neither the database nor the HSM (for the
        names of many accounts at once, in the caller's transaction). Raises: as key_of."""
        key = self._secret()
        return lambda name: _keyed_hash(key, name)

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._open(self._sealed())
            return self._key

    def _sealed(self) -> bytes:
        with self._database.read() as conn:
            sealed = conn.execute(select(sealed_keys.c.sealed).where(sealed_keys.c.purpose == PURPOSE)).scalar()
        if sealed is not None:
            return sealed
        made = self._sealing.seal(secrets.token_bytes(KEY_BYTES), _CONTEXT)  # in the HSM: outside a transaction
        with self._database.transaction() as conn:
            # Workers and nodes starting together may each make one: the first stored is everyone's.
            conn.execute(insert_on_conflict(conn, sealed_keys)
                         .values(purpose=PURPOSE, sealed=made, created_at=epoch_seconds(self._clock.now()))
                         .on_conflict_do_nothing(index_elements=[sealed_keys.c.purpose]))
            return conn.execute(select(sealed_keys.c.sealed).where(sealed_keys.c.purpose == PURPOSE)).scalar_one()

    def _open(self, sealed: bytes) -> bytes:
        try:
            key = self._sealing.unseal(sealed, _CONTEXT)
        except DataCorrupted:
            raise DataCorrupted("the name lockout's key in the database does not open with this token's sealing "
                                "key: copy the sealing key of the token that made it here with the key ceremony "
                                "(`signserver hsm master export`)") from None
        if len(key) != KEY_BYTES:
            raise DataCorrupted("the name lockout's key in the database is damaged")
        return key


def _keyed_hash(key: bytes, name: str) -> str:
    return hmac.new(key, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
