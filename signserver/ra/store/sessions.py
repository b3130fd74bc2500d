"""The pages' sessions as rows of ra_web_sessions, for what ends them in the caller's transaction.

The pages keep their sessions (signserver/ra/web/sessions.py); the RA's own steps that set a
holder's password (an unlock at the counter, an activation with a new password) end the holder's
sessions here, in the transaction that records the change, so that no page or command that calls
them can forget to."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, delete

from signserver.ra.store.schema import web_sessions

ANONYMOUS, HOLDER, OPERATOR = "anonymous", "holder", "operator"  # ra_web_sessions.kind


def id_hash(session_id: str) -> str:
    """What a session's row is keyed by: the SHA-256 (hex) of the cookie's id, so that a copy of
    the database opens no session."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def end_sessions(conn: Connection, kind: str, subject: str, *, keep_hash: str = "") -> int:
    """Delete every session of ``subject`` signed in as ``kind``, but the one whose row is
    ``keep_hash`` when given; returns how many."""
    where = (web_sessions.c.kind == kind) & (web_sessions.c.subject == subject)
    if keep_hash:
        where &= web_sessions.c.id_hash != keep_hash
    return conn.execute(delete(web_sessions).where(where)).rowcount or 0
