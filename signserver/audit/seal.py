"""AuditSealer: signs the head of the chain with a key in the HSM, at intervals.

A seal fixes (seq, hash) with a signature nobody outside the HSM can make, and names the seal
before it: records up to a sealed seq cannot be changed, removed or cut off, nor seals removed
from the middle, without ``signserver audit verify`` noticing. While the server runs, the head is
sealed again every ``seal_interval_seconds`` even when no record was added (a heartbeat), and the
server records its start and clean stop in the log: so an old newest seal tells that later seals
were removed, unless the log says the server had stopped.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select

from signserver.audit.log import AuditLog
from signserver.audit.seal_format import NO_PREVIOUS_SEAL, SealContent, signature_algorithm_for
from signserver.audit.seal_key import PinnedKey, SealKeyPin
from signserver.clock import Clock, epoch_seconds
from signserver.errors import AlreadyExists, KeyNotFound, StoreConflict
from signserver.hsm.algorithms import KeyAlgorithm, SignatureAlgorithm
from signserver.hsm.keystore import HsmKeyStore
from signserver.store.database import Database
from signserver.store.schema import audit_head, audit_seals

log = logging.getLogger(__name__)

AUDIT_KEY_LABEL = "signserver-audit-seal"
# Where a new seal key is made when the token's key under AUDIT_KEY_LABEL is not of the algorithm
# ``audit.seal_key_algorithm`` chooses (a P-256 key from an earlier version, which SignHash could
# be made to sign with, on a token that offers Ed25519): the old key is never used to seal again,
# its pin stays to verify the seals it made.
SUCCESSOR_KEY_LABEL_SUFFIX = "-2"
# What ``auto`` chooses, best first. Ed25519 signs the message itself (the HSM hashes): SignHash
# refuses Ed25519 keys, so no caller can have the seal key sign a digest of their choosing even if
# a credential were pointed at it. Tokens without EdDSA (openCryptoki's soft token has neither EC
# nor EdDSA) get ECDSA or RSA, which sign digests: SignHash refuses them by their label.
SEAL_KEY_PREFERENCES = (KeyAlgorithm.ED25519, KeyAlgorithm.EC_P256, KeyAlgorithm.RSA_3072)
SEAL_KEY_ALGORITHMS = tuple(KeyAlgorithm)  # what ``audit.seal_key_algorithm`` may name
SEAL_KEY_SETTING = "audit.seal_key_algorithm"
SERVER_STARTED, SERVER_STOPPED = "server.started", "server.stopped"
# How late a seal may be beyond its interval: the background thread also sends e-mail and
# refreshes CRLs, and may be held up by them.
SEAL_MARGIN_SECONDS = 300

_LAST_SEAL = select(audit_seals).order_by(audit_seals.c.number.desc()).limit(1)
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)


def max_seal_age(interval_seconds: int) -> datetime.timedelta:
    """How old the newest seal (or an unsealed record) may be while a server seals every
    ``interval_seconds`` (``audit.seal_interval_seconds``)."""
    return datetime.timedelta(seconds=interval_seconds + max(interval_seconds, SEAL_MARGIN_SECONDS))


def pin_path(state_dir: Path) -> Path:
    """Where the seal key's public half is pinned."""
    return state_dir / "audit" / "seal-key.pem"


@dataclass(frozen=True)
class TokenSealKey:
    key_id: str
    successor: bool  # made under the successor label, replacing a key of another type


def seal_key_algorithm(keys: HsmKeyStore, setting: str = "auto") -> KeyAlgorithm:
    """The algorithm a seal key made on this token has: what ``setting`` (the value of
    ``audit.seal_key_algorithm``) names, or with ``auto`` the best of SEAL_KEY_PREFERENCES.

    Raises: ConfigurationError (naming the setting): the token cannot use it. HsmError.
    """
    return keys.session.capabilities().key_algorithm_setting(setting, SEAL_KEY_PREFERENCES, SEAL_KEY_SETTING,
                                                             SEAL_KEY_ALGORITHMS)


def token_seal_key(keys: HsmKeyStore, label: str = AUDIT_KEY_LABEL, setting: str = "auto") -> TokenSealKey:
    """The HSM key that seals the log: the key under ``label``, generated on first use with the
    algorithm ``setting`` chooses (:func:`seal_key_algorithm`); or, when the key under ``label``
    is of another algorithm, the successor key generated beside it. Found by label once per
    token session, then kept (see :func:`find_token_seal_key`).

    Raises: ConfigurationError (the token cannot use the algorithm set), HsmError.
    """
    found = find_token_seal_key(keys, label, setting)
    if found is not None:
        return found
    wanted = seal_key_algorithm(keys, setting)
    successor_label = label + SUCCESSOR_KEY_LABEL_SUFFIX
    original = _find_or_generate(keys, label, wanted)
    if original.algorithm is wanted:
        return _remember(keys, label, TokenSealKey(original.key_id, successor=False))
    log.warning("the audit seal key %r is %s, not %s: a new seal key %r seals from now on",
                label, original.algorithm.value if original.algorithm else "of an unknown type",
                wanted.value, successor_label)
    successor = _find_or_generate(keys, successor_label, wanted)
    return _remember(keys, label, TokenSealKey(successor.key_id, successor=True))


def find_token_seal_key(keys: HsmKeyStore, label: str = AUDIT_KEY_LABEL, setting: str = "auto") -> TokenSealKey | None:
    """The seal key :func:`token_seal_key` would use, or None when the token has none that seals
    yet (none under ``label``, or one of another algorithm than ``setting`` chooses and no
    successor); generates nothing.

    A search by label walks every object on the token under the PKCS#11 lock, so the answer is
    kept with the session's handles: later calls in the process do not search (after the session
    is opened again, the first call searches again).

    Raises: ConfigurationError (the token cannot use the algorithm set), HsmError.
    """
    cached = keys.session.cache.get((_SEAL_KEY_CACHE, label))
    if cached is not None:
        return cached
    for key_label, successor in ((label + SUCCESSOR_KEY_LABEL_SUFFIX, True), (label, False)):
        try:
            key = keys.find_by_label(key_label)
        except KeyNotFound:
            continue
        # A successor seals whatever it is: there is no third key. The first key seals while it
        # is what the setting chooses on this token (an RSA key on an RSA-only token is current).
        if successor or key.algorithm is seal_key_algorithm(keys, setting):
            return _remember(keys, label, TokenSealKey(key.key_id, successor=successor))
        return None
    return None


_SEAL_KEY_CACHE = "audit seal key"


def _remember(keys: HsmKeyStore, label: str, found: TokenSealKey) -> TokenSealKey:
    keys.session.cache[(_SEAL_KEY_CACHE, label)] = found
    return found


def audit_key_id(keys: HsmKeyStore, label: str = AUDIT_KEY_LABEL, setting: str = "auto") -> str:
    """The id of the HSM key that seals the log (see :func:`token_seal_key`).

    Raises: ConfigurationError, HsmError."""
    return token_seal_key(keys, label, setting).key_id


def _find_or_generate(keys: HsmKeyStore, label: str, algorithm: KeyAlgorithm):
    try:
        return keys.find_by_label(label)
    except KeyNotFound:
        try:
            return keys.generate(algorithm, label)
        except AlreadyExists:  # another thread made it first
            return keys.find_by_label(label)


@dataclass(frozen=True)
class _SealKey:
    key_id: str
    algorithm: SignatureAlgorithm
    pinned: PinnedKey


class AuditSealer:
    """Seals the head of the audit chain with the token's seal key, pinned in ``pin``."""

    def __init__(self, database: Database, keys: HsmKeyStore, audit: AuditLog, clock: Clock,
                 every_records: int, interval_seconds: int, pin: SealKeyPin, key_label: str = AUDIT_KEY_LABEL,
                 key_algorithm: str = "auto"):
        self._database = database
        self._keys = keys
        self._audit = audit
        self._clock = clock
        self._every = every_records
        self._interval = datetime.timedelta(seconds=interval_seconds)
        self.pin = pin
        self._key_label = key_label
        self._key_algorithm = key_algorithm  # the value of audit.seal_key_algorithm
        self._key: _SealKey | None = None

    @property
    def max_seal_age(self) -> datetime.timedelta:
        """How old the newest seal (or an unsealed record) may be while a server seals."""
        return max_seal_age(int(self._interval.total_seconds()))

    def seal(self) -> int | None:
        """Seal the current head if it is not sealed yet; return the sealed seq.

        Raises: HsmError, StoreUnavailable, ConfigurationError (the token's seal key is not the
        pinned one), DataCorrupted (the pin file is unreadable).
        """
        return self._seal(only_if_new=True)

    def seal_if_due(self) -> int | None:
        """Seal when enough records or enough time have passed since the last seal; with no new
        record, seal the unchanged head again once the interval has passed (the heartbeat).

        Raises: as :meth:`seal`.
        """
        with self._database.read() as conn:
            head = conn.execute(_HEAD).one()
            last = conn.execute(_LAST_SEAL).first()
        if head.seq == 0:
            return None
        if last is None:
            return self._seal(only_if_new=False)
        due_by_time = epoch_seconds(self._clock.now()) - last.at >= self._interval.total_seconds()
        if head.seq - last.seq >= self._every or due_by_time:
            return self._seal(only_if_new=False)
        return None

    def server_started(self) -> None:
        """Record that a server now seals the log, and seal that record.

        Raises: as :meth:`seal`.
        """
        self._record_lifecycle(SERVER_STARTED)

    def server_stopping(self) -> None:
        """Record a clean stop and seal the log up to it: from here on no heartbeat is due.

        Raises: as :meth:`seal`.
        """
        self._record_lifecycle(SERVER_STOPPED)

    def _record_lifecycle(self, event: str) -> None:
        with self._database.transaction() as conn:
            self._audit.append(conn, self._clock.now(), event, "server", socket.gethostname(), pid=os.getpid())
        self._seal(only_if_new=True)

    def _seal(self, only_if_new: bool) -> int | None:
        key = self._seal_key()
        with self._database.read() as conn:
            head = conn.execute(_HEAD).one()
            last = conn.execute(_LAST_SEAL).first()
        if head.seq == 0 or (only_if_new and last is not None and last.seq >= head.seq):
            return None
        content = SealContent(number=last.number + 1 if last else 1, seq=head.seq, hash=head.hash,
                              at=epoch_seconds(self._clock.now()),
                              prev_seal=SealContent.of_row(last).digest() if last else NO_PREVIOUS_SEAL)
        signature = self._keys.sign_data(key.key_id, content.message(), key.algorithm)
        try:
            with self._database.transaction() as conn:
                conn.execute(insert(audit_seals).values(
                    number=content.number, seq=content.seq, hash=content.hash, at=content.at, key_id=key.key_id,
                    signature=signature, format=content.format, prev_seal=content.prev_seal))
        except StoreConflict:  # another process sealed first; its seal is the chain's next link
            log.debug("seal %d was made by another process", content.number)
            return None
        log.debug("sealed the audit log at seq %d (seal %d)", content.seq, content.number)
        return content.seq

    def _seal_key(self) -> _SealKey:
        """The token's seal key, checked against (or, the first time, written to) the pin. A
        successor key has a pin of its own, naming the first seal it makes; the predecessor's pin
        is kept (made now if missing) to verify the seals before it.

        Raises: as :meth:`seal`.
        """
        if self._key is None:
            token_key = token_seal_key(self._keys, self._key_label, self._key_algorithm)
            public_key = self._keys.public_key(token_key.key_id)
            if not token_key.successor:
                pinned = self.pin.ensure(public_key)
            else:
                successor_pin = self.pin.successor()
                if successor_pin.load() is None:
                    self.pin.ensure(self._keys.public_key(self._keys.find_by_label(self._key_label).key_id))
                with self._database.read() as conn:
                    last = conn.execute(_LAST_SEAL).first()
                pinned = successor_pin.ensure(public_key, first_seal=last.number + 1 if last else 1)
            self._key = _SealKey(token_key.key_id, signature_algorithm_for(public_key), pinned)
        return self._key
