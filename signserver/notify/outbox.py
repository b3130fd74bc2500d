"""Queueing e-mail in the caller's transaction: the message exists exactly when its event does."""

from __future__ import annotations

import datetime
import functools
import string
from pathlib import Path
from typing import Iterable

from sqlalchemy import Connection, insert

from signserver.clock import epoch_seconds
from signserver.store.schema import outbox

TEMPLATES = Path(__file__).parent / "templates"
DISPLAY_ZONE = datetime.timezone(datetime.timedelta(hours=8))  # Macau time, as the documents show


@functools.cache
def _template(name: str) -> tuple[str, string.Template]:
    subject, _, body = (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    return subject.strip(), string.Template(body.lstrip("\n"))


def format_time(moment: datetime.datetime) -> str:
    """``2017.05.23 10:26:06 +0800``, the documents' format."""
    return moment.astimezone(DISPLAY_ZONE).strftime("%Y.%m.%d %H:%M:%S %z")


def queue_email(conn: Connection, now: datetime.datetime, recipients: Iterable[str], template: str,
                **values: str) -> int:
    """Queue one message per recipient from ``template`` (a file in templates/); returns how many."""
    subject, body = _template(template)
    text = body.substitute(values)
    rows = [{"created_at": epoch_seconds(now), "recipient": r, "subject": subject, "body": text,
             "attempts": 0, "next_attempt_at": epoch_seconds(now)} for r in recipients]
    if rows:
        conn.execute(insert(outbox), rows)
    return len(rows)
