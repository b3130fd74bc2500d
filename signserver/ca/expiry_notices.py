"""The expiry notices: each holder e-mailed once, 30 days before a valid certificate expires
(the documents' renewal notice); run by the server's background work."""

from __future__ import annotations

import datetime

from signserver.accounts.repository import get_account
from signserver.audit.log import AuditLog
from signserver.ca import repository as repo
from signserver.clock import Clock
from signserver.notify.outbox import format_time, queue_email
from signserver.store.database import Database

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

        A batch locks its certificates' rows as it reads them, and marks them, before its first
        audit record locks ``audit_head``: a revocation locks its certificate's row and then
        ``audit_head``, and a pass that took them the other way round would deadlock with it on
        PostgreSQL. A row a revocation (or another node's pass, before the lease moved) holds is
        left out of the batch; a certificate that stays due is noticed by the next pass.

        Raises: StoreUnavailable.
        """
        now = self._clock.now()
        sent = 0
        while True:
            with self._database.transaction() as conn:
                due = repo.due_expiry_notices(conn, now, now + EXPIRY_NOTICE, NOTICE_BATCH)
                # Marked only if no other pass (another node's, before the lease moved) did.
                marked = repo.mark_expiry_noticed(conn, [issued.serial for issued in due], now)
                for issued in due:
                    if issued.serial not in marked:
                        continue
                    account = get_account(conn, issued.account, now)
                    queue_email(conn, now, account.emails, "certificate_expiring", holder_name=account.holder_name,
                                serial=issued.serial, expiry=format_time(issued.not_after))
                    self._audit.append(conn, now, "certificate.expiry_notice", "ca", account.username,
                                       serial=issued.serial)
                    sent += 1
            if len(due) < NOTICE_BATCH:
                return sent
