"""The expiry notices: each holder e-mailed once, 30 days before a valid certificate expires
(the documents' renewal notice); run by the server's background work."""

from __future__ import annotations

import datetime

from sqlalchemy import update

from signserver.accounts.repository import get_account
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.clock import Clock
from signserver.notify.outbox import format_time, queue_email
from signserver.store.database import Database
from signserver.store.schema import certificates

EXPIRY_NOTICE = datetime.timedelta(days=30)
NOTICE_BATCH = 100  # certificates noticed per transaction


class ExpiryNotices:
    def __init__(self, database: Database, audit: AuditLog, clock: Clock):
        self._database = database
        self._audit = audit
        self._clock = clock

    def send(self) -> int:
        """E-mail each holder once, 30 days before a valid certificate expires; returns how many.

        Only the certificates not noticed yet are read, a batch at a time, each in a transaction of
        its own: at a national scale tens of thousands expire within 30 days, and a pass that
        read them all and held the database's write lock meanwhile would hold up every signature.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        sent = 0
        while True:
            with self._database.transaction() as conn:
                due = repo.due_expiry_notices(conn, now, now + EXPIRY_NOTICE, NOTICE_BATCH)
                for issued in due:
                    # Marked only if no other pass (another node's, before the lease moved) did.
                    marked = conn.execute(update(certificates).where(
                        certificates.c.serial == issued.serial, certificates.c.expiry_notice_at.is_(None))
                        .values(expiry_notice_at=int(now.timestamp()))).rowcount
                    if not marked:
                        continue
                    account = get_account(conn, issued.account, now)
                    queue_email(conn, now, account.emails, "certificate_expiring", holder_name=account.holder_name,
                                serial=issued.serial, expiry=format_time(issued.not_after))
                    self._audit.append(conn, now, "certificate.expiry_notice", "ca", account.username,
                                       serial=issued.serial)
                    sent += 1
            if len(due) < NOTICE_BATCH:
                return sent
