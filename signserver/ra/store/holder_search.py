"""Finding registered holders by part of their account name, name or e-mail address, in the
caller's transaction (a Connection)."""

from __future__ import annotations

import datetime
import json

from sqlalchemy import Connection, or_, select

from signserver.ra.renewal import Holder
from signserver.ra.store.schema import holders

# At most as many as one of the core's certificate listings may name (the search lists all the
# holders' certificates in one): tests/ra/test_operations.py fails should the two part.
MAX_RESULTS = 100
_ESCAPE = "\\"


def _pattern(text: str) -> str:
    # The operator's text is matched literally: % and _ are not wildcards here.
    literal = text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    return f"%{literal}%"


def search_holders(conn: Connection, text: str, limit: int = MAX_RESULTS) -> list[Holder]:
    """The holders whose account, name or one of whose e-mail addresses contains ``text``
    (case-insensitively), ordered by account; at most ``limit``."""
    pattern = _pattern(text.strip())
    query = (select(holders)
             .where(or_(holders.c.account.ilike(pattern, escape=_ESCAPE), holders.c.name.ilike(pattern, escape=_ESCAPE),
                        holders.c.emails.ilike(pattern, escape=_ESCAPE)))
             .order_by(holders.c.account).limit(limit))
    return [Holder(row.account, row.id_type, row.id_number, row.name, datetime.date.fromisoformat(row.birth_date),
                   tuple(json.loads(row.emails))) for row in conn.execute(query)]
