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


class ExpiryNotices:
    def __init__(self, database: Database, audit: AuditLog, clock: Clock):
        self._database = database
        self._audit = audit
        self._clock = clock

    def send(self) -> int:
        """E-mail each holder once, 30 days before a valid certificate expires; returns how many."""
        now = self._clock.now()
        sent = 0
        with self._database.transaction() as conn:
            for issued in repo.list_certificates(conn, now, expiring_before=now + EXPIRY_NOTICE):
                if issued.account is None:
                    continue
                marked = conn.execute(update(certificates).where(
                    certificates.c.serial == issued.serial, certificates.c.expiry_notice_at.is_(None))
                    .values(expiry_notice_at=int(now.timestamp()))).rowcount
                if not marked:
                    continue
                account = get_account(conn, issued.account, now)
                queue_email(conn, now, account.emails, "certificate_expiring", holder_name=account.holder_name,
                            serial=issued.serial, expiry=format_time(issued.not_after))
                self._audit.append(conn, now, "certificate.expiry_notice", "ca", account.username, serial=issued.serial)
                sent += 1
        return sent
