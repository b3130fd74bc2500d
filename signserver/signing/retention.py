"""StoreRetention: removes what the store no longer needs, a bounded batch at a time.

Every signature leaves an activation token, its digest rows and audit records behind; kept for
ever they grow the database by hundreds of bytes a signature. Removed here, in transactions of at
most ``[retention] batch_rows`` rows each (so that the write lock, and the signatures waiting on
it, are held only moments):

- activation tokens expired for longer than ``activation_grace_seconds``, spent or not, and their
  digest rows (:func:`signserver.signing.activation.prune_expired`; a removed token is refused as
  unknown, never accepted again);
- expired CSC access tokens and CSC operations past their keep time, which their own tables
  erase only when the next one is issued;
- e-mails sent or given up more than ``outbox_keep_days`` ago (their bodies with them);
- audit records and seals before the anchor of an exported, pruned segment, and, with
  ``audit_keep_days`` set, the prune of exported segments older than that
  (:class:`signserver.audit.pruning.AuditPruner`).

The server's background thread runs :meth:`StoreRetention.background_round` every second; the
``signserver store prune`` command runs :meth:`StoreRetention.prune_all`.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, fields
from typing import Callable

from sqlalchemy import delete, or_, select

from signserver.audit.pruning import AuditPruner
from signserver.clock import Clock, epoch_seconds
from signserver.config import RetentionConfig
from signserver.errors import SignServerError
from signserver.signing import activation
from signserver.store.database import Database
from signserver.store.schema import csc_access_tokens, csc_operations, outbox

log = logging.getLogger(__name__)

ROUND_BATCHES = 20  # batches of each kind per background round, at most
IDLE_SECONDS = 60  # after a round that found nothing, the next looks again this much later


@dataclass
class PruneCounts:
    activation_tokens: int = 0
    activation_digests: int = 0
    csc_access_tokens: int = 0
    csc_operations: int = 0
    outbox_messages: int = 0
    audit_records: int = 0
    audit_seals: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def add(self, other: "PruneCounts") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class StoreRetention:
    def __init__(self, database: Database, clock: Clock, settings: RetentionConfig, audit: AuditPruner):
        self._database = database
        self._clock = clock
        self._settings = settings
        self._audit = audit
        self._idle_until: datetime.datetime | None = None

    def batch(self) -> PruneCounts:
        """One batch of each kind, each in a transaction of its own.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        limit = self._settings.batch_rows
        counts = PruneCounts()
        with self._database.transaction() as conn:
            pruned = activation.prune_expired(
                conn, now - datetime.timedelta(seconds=self._settings.activation_grace_seconds), limit)
        counts.activation_tokens, counts.activation_digests = pruned.tokens, pruned.digests
        with self._database.transaction() as conn:
            counts.csc_access_tokens = _remove_expired(conn, csc_access_tokens, csc_access_tokens.c.token_hash,
                                                       epoch_seconds(now), limit)
        with self._database.transaction() as conn:
            counts.csc_operations = _remove_expired(conn, csc_operations, csc_operations.c.id_hash,
                                                    epoch_seconds(now), limit)
        with self._database.transaction() as conn:
            counts.outbox_messages = _remove_done_messages(
                conn, epoch_seconds(now - datetime.timedelta(days=self._settings.outbox_keep_days)), limit)
        removed = self._audit.remove_batch()
        counts.audit_records, counts.audit_seals = removed.records, removed.seals
        return counts

    def background_round(self) -> PruneCounts:
        """What the server's background thread runs every second: the audit log's policy, then
        at most ROUND_BATCHES batches; after a round with nothing to remove, nothing for
        IDLE_SECONDS.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        if self._idle_until is not None and now < self._idle_until:
            return PruneCounts()
        self._prune_audit_when_due()
        counts = PruneCounts()
        for _ in range(ROUND_BATCHES):
            done = self.batch()
            counts.add(done)
            if not done.total:
                break
        self._idle_until = now + datetime.timedelta(seconds=IDLE_SECONDS) if not counts.total else None
        if counts.total:
            log.debug("retention: removed %s", counts)
        return counts

    def prune_all(self, progress: Callable[[PruneCounts], None] | None = None) -> PruneCounts:
        """Remove everything due, batch after batch; ``progress`` gets the running counts after
        each batch.

        Raises: StoreUnavailable, DataCorrupted (an export's records were altered since).
        """
        self._audit.prune_due()
        counts = PruneCounts()
        while True:
            done = self.batch()
            counts.add(done)
            if progress is not None:
                progress(counts)
            if not done.total:
                return counts

    def _prune_audit_when_due(self) -> None:
        try:
            self._audit.prune_due()
        except SignServerError as exc:  # the rest of the store's retention goes on
            log.warning("the audit log's retention did not prune: %s", exc)


def _remove_expired(conn, table, key, now: int, limit: int) -> int:
    """Remove at most ``limit`` rows of ``table`` whose ``expires_at`` has passed."""
    oldest = select(key).where(table.c.expires_at <= now).order_by(table.c.expires_at).limit(limit)
    return conn.execute(delete(table).where(key.in_(oldest.scalar_subquery()))).rowcount


def _remove_done_messages(conn, before: int, limit: int) -> int:
    """Remove at most ``limit`` e-mails sent or given up before ``before`` (epoch seconds); one
    still waiting stays, however old."""
    done = or_(outbox.c.sent_at <= before, outbox.c.given_up_at <= before)
    oldest = select(outbox.c.id).where(done).order_by(outbox.c.id).limit(limit)
    return conn.execute(delete(outbox).where(outbox.c.id.in_(oldest.scalar_subquery()))).rowcount


def store_retention(database: Database, audit_log, clock: Clock, settings: RetentionConfig) -> StoreRetention:
    """The store's retention as ``settings`` (the ``[retention]`` section) say."""
    return StoreRetention(database, clock, settings,
                          AuditPruner(database, audit_log, clock, settings.audit_keep_days, settings.batch_rows))
