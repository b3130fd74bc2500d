"""AuditSealer: signs the head of the chain with a key in the HSM, at intervals.

A seal fixes (seq, hash) with a signature nobody outside the HSM can make: records up to a
sealed seq cannot be changed, removed or cut off without ``signserver audit verify`` noticing.
"""

from __future__ import annotations

import datetime
import logging

from sqlalchemy import func, insert, select

from signserver.clock import Clock, epoch_seconds
from signserver.errors import AlreadyExists, KeyNotFound
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.store.database import Database
from signserver.store.schema import audit_head, audit_seals

log = logging.getLogger(__name__)

AUDIT_KEY_LABEL = "signserver-audit-seal"
SEAL_ALGORITHM = SignatureAlgorithm.ECDSA_SHA256


def seal_message(seq: int, digest: str) -> bytes:
    return f"signserver audit seal\n{seq}\n{digest}".encode("ascii")


def audit_key_id(keys: HsmKeyStore) -> str:
    """The id of the HSM key that seals the log, generated on first use."""
    try:
        return keys.find_by_label(AUDIT_KEY_LABEL).key_id
    except KeyNotFound:
        try:
            return keys.generate(KeyAlgorithm.EC_P256, AUDIT_KEY_LABEL).key_id
        except AlreadyExists:  # another thread made it first
            return keys.find_by_label(AUDIT_KEY_LABEL).key_id


class AuditSealer:
    def __init__(self, database: Database, keys: HsmKeyStore, clock: Clock,
                 every_records: int, interval_seconds: int):
        self._database = database
        self._keys = keys
        self._clock = clock
        self._every = every_records
        self._interval = datetime.timedelta(seconds=interval_seconds)

    def seal(self) -> int | None:
        """Seal the current head if it is not sealed yet; return the sealed seq.

        Raises: HsmError, StoreUnavailable.
        """
        with self._database.transaction() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
            last = conn.execute(select(func.max(audit_seals.c.seq))).scalar() or 0
        if head.seq == 0 or head.seq <= last:
            return None
        key_id = audit_key_id(self._keys)
        signature = self._keys.sign_data(key_id, seal_message(head.seq, head.hash), SEAL_ALGORITHM)
        with self._database.transaction() as conn:
            if conn.execute(select(audit_seals.c.seq).where(audit_seals.c.seq == head.seq)).first() is None:
                conn.execute(insert(audit_seals).values(seq=head.seq, hash=head.hash, key_id=key_id,
                                                        signature=signature, at=epoch_seconds(self._clock.now())))
        log.debug("sealed the audit log at seq %d", head.seq)
        return head.seq

    def seal_if_due(self) -> int | None:
        """Seal when enough records or enough time have passed since the last seal."""
        with self._database.transaction() as conn:
            head_seq = conn.execute(select(audit_head.c.seq)).scalar()
            last = conn.execute(select(audit_seals.c.seq, audit_seals.c.at)
                                .order_by(audit_seals.c.seq.desc()).limit(1)).first()
        last_seq, last_at = (last.seq, last.at) if last else (0, 0)
        if head_seq <= last_seq:
            return None
        due_by_time = epoch_seconds(self._clock.now()) - last_at >= self._interval.total_seconds()
        if head_seq - last_seq >= self._every or due_by_time:
            return self.seal()
        return None
