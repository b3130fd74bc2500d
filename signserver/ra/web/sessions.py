"""The pages' sessions, kept on the server in the RA's database (ra_web_sessions).

The browser holds a random 256-bit id in the ``ra_session`` cookie (HttpOnly, Secure,
SameSite=Lax); the table holds only its SHA-256, so a copy of the database opens no session.
A session ends ``web_session_idle_seconds`` after its last use and ``web_session_max_seconds``
after signing in; an expired or unknown id is a fresh anonymous session. Signing in (and out)
changes the id, so that an id planted before signing in is worth nothing after (fixation).

Each session has its synchroniser token against cross-site requests (``csrf_token``): a form
carries it, and a POST without the session's token is refused (rendering.page_route)."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from signserver.clock import Clock, epoch_seconds
from signserver.ra.settings import RaSettings
from signserver.ra.store import sessions as rows
from signserver.ra.store.database import RaDatabase
from signserver.ra.store.schema import web_sessions, web_spent_single_use_ids
from signserver.ra.store.sessions import ANONYMOUS, HOLDER, OPERATOR
from signserver.ra.store.sessions import id_hash as _hash

COOKIE = "ra_session"
KINDS = (ANONYMOUS, HOLDER, OPERATOR)
MAX_COOKIE_LENGTH = 128
MAX_DATA_BYTES = 16 * 1024  # small JSON: ids, a challenge, a few flags; never a document


@dataclass
class WebSession:
    """One browser's session. ``data`` is a small JSON object; the holder's keys are "via"
    ("account" or "notice"), "renewals" (the renewal ids a notice link opened) and, signed in with
    the account's password, "password_set" (when that password was set, in epoch seconds)."""

    kind: str = ANONYMOUS
    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    last_seen: int = 0
    signed_in_at: int | None = None
    session_id: str = field(default="", repr=False)  # the cookie's value: never stored, never logged
    _csrf_token: str = field(default="", repr=False)
    stored: bool = False  # a row exists for session_id
    dirty: bool = False  # data, kind or subject changed since it was read
    wanted: bool = False  # something (a token, data) needs the session kept
    retired_hash: str = field(default="", repr=False)  # the row of the id it replaced, to delete

    @property
    def csrf_token(self) -> str:
        """The session's synchroniser token (made on first use; the session is then kept)."""
        if not self._csrf_token:
            self._csrf_token = secrets.token_urlsafe(32)
            self.dirty = True
        self.wanted = True
        return self._csrf_token

    def csrf_matches(self, token: str) -> bool:
        """Whether ``token`` is this session's token (in constant time; never for an empty one)."""
        return bool(self._csrf_token) and hmac.compare_digest(self._csrf_token.encode(), token.encode("utf-8",
                                                                                                    "replace"))

    @property
    def id_hash(self) -> str:
        """The key of the session's row (the SHA-256 of its id): how work outside the pages that
        ends the other sessions of its subject names this one to keep."""
        return _hash(self.session_id) if self.session_id else ""

    @property
    def signed_in(self) -> bool:
        return self.kind != ANONYMOUS

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty = self.wanted = True

    def pop(self, key: str, default: Any = None) -> Any:
        if key not in self.data:
            return default
        self.dirty = True
        return self.data.pop(key)

    def renew(self, now: int) -> None:
        """A new id (the old row is deleted when saved) and a new CSRF token."""
        if self.stored:
            self.retired_hash = _hash(self.session_id)
        self.session_id = secrets.token_urlsafe(32)
        self._csrf_token = ""
        self.stored = False
        self.created_at = self.last_seen = now
        self.dirty = self.wanted = True


class SessionStore:
    """Reads and writes sessions in the RA's database (each call its own short transaction)."""

    def __init__(self, database: RaDatabase, clock: Clock, settings: RaSettings):
        self._database = database
        self._clock = clock
        self._idle = settings.web_session_idle_seconds
        self._max = settings.web_session_max_seconds

    def now(self) -> int:
        return epoch_seconds(self._clock.now())

    def new(self) -> WebSession:
        now = self.now()
        return WebSession(created_at=now, last_seen=now, session_id=secrets.token_urlsafe(32))

    def load(self, cookie: str | None) -> WebSession:
        """The session the cookie names, or a fresh anonymous one (no cookie, a malformed one, an
        unknown id, or an expired session).

        Raises: StoreUnavailable.
        """
        if not cookie or len(cookie) > MAX_COOKIE_LENGTH or not cookie.isascii():
            return self.new()
        now = self.now()
        with self._database.transaction() as conn:
            row = conn.execute(select(web_sessions).where(web_sessions.c.id_hash == _hash(cookie))).first()
        if row is None or self._expired(row.last_seen, row.signed_in_at, now):
            return self.new()
        try:
            data = json.loads(row.data)
        except ValueError:
            data = {}
        return WebSession(kind=row.kind, subject=row.subject, data=data if isinstance(data, dict) else {},
                          created_at=row.created_at, last_seen=row.last_seen, signed_in_at=row.signed_in_at,
                          session_id=cookie, _csrf_token=row.csrf_token, stored=True, wanted=True)

    def _expired(self, last_seen: int, signed_in_at: int | None, now: int) -> bool:
        return now - last_seen >= self._idle or (signed_in_at is not None and now - signed_in_at >= self._max)

    def save(self, session: WebSession, *, touch: bool = True) -> bool:
        """Write the session (a new row, its changes, or only the time of its use); returns whether
        the browser must be sent its id (a new row). A session nobody needed is not written.
        ``touch=False``: the use does not count (a page that polls must not keep a session alive).
        A session ended meanwhile (end_sessions) stays ended: only a new one is inserted.

        Raises: StoreUnavailable.
        """
        if touch or not session.stored:
            session.last_seen = self.now()
        data = json.dumps(session.data, separators=(",", ":"), ensure_ascii=False)
        if len(data.encode()) > MAX_DATA_BYTES:
            raise ValueError("a page put more than a small JSON object in the session")  # a fault of the page
        with self._database.transaction() as conn:
            if session.retired_hash:
                conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == session.retired_hash))
                session.retired_hash = ""
            if not session.stored:
                if not session.wanted:
                    return False
                conn.execute(insert(web_sessions).values(
                    id_hash=_hash(session.session_id), kind=session.kind, subject=session.subject, data=data,
                    csrf_token=session.csrf_token, created_at=session.created_at, last_seen=session.last_seen,
                    signed_in_at=session.signed_in_at))
                session.stored, session.dirty = True, False
                return True
            where = web_sessions.c.id_hash == _hash(session.session_id)
            if session.dirty:
                conn.execute(update(web_sessions).where(where).values(
                    kind=session.kind, subject=session.subject, data=data, csrf_token=session.csrf_token,
                    last_seen=session.last_seen, signed_in_at=session.signed_in_at))
                session.dirty = False
            elif touch:  # only the time: a request that changed nothing does not overwrite another's changes
                conn.execute(update(web_sessions).where(where).values(last_seen=session.last_seen))
            return False

    def delete(self, session: WebSession) -> None:
        """Raises: StoreUnavailable."""
        if session.stored:
            with self._database.transaction() as conn:
                conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == _hash(session.session_id)))
            session.stored = False

    def end_sessions(self, kind: str, subject: str, *, keep: WebSession | None = None) -> int:
        """End every session of ``subject`` signed in as ``kind`` (after a password change, an
        operator disabled or given a new password), but ``keep``'s when given; returns how many.
        A request of an ended session that is under way cannot bring it back (save).

        Raises: StoreUnavailable.
        """
        with self._database.transaction() as conn:
            return rows.end_sessions(conn, kind, subject, keep_hash=keep.id_hash if keep is not None else "")

    def spend_once(self, challenge: str, expires_at: int) -> bool:
        """Mark the single-use ``challenge`` (a captcha's id, an operator's form's id) spent; True
        for the one caller that spent it, False for every other, however many race (the row's key
        decides). The mark is kept until ``expires_at`` (the id is worth nothing after).

        Raises: StoreUnavailable.
        """
        with self._database.transaction() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(insert(web_spent_single_use_ids).values(single_use_id=challenge,
                                                                         expires_at=expires_at))
            except IntegrityError:
                return False
        return True

    def remove_expired(self) -> int:
        """Delete the sessions past their expiry and the marks of expired challenges (the
        background pass); returns how many sessions.

        Raises: StoreUnavailable.
        """
        now = self.now()
        with self._database.transaction() as conn:
            result = conn.execute(delete(web_sessions).where(
                (web_sessions.c.last_seen <= now - self._idle)
                | (web_sessions.c.signed_in_at.is_not(None) & (web_sessions.c.signed_in_at <= now - self._max))))
            conn.execute(delete(web_spent_single_use_ids).where(web_spent_single_use_ids.c.expires_at <= now))
        return result.rowcount or 0


def session_of(request: Request) -> WebSession:
    """The request's session (page_route loads it before the page's handler runs; outside a page,
    an anonymous one that is never kept)."""
    session = getattr(request.state, "session", None)
    if session is None:
        session = request.state.session = WebSession()
    return session


def _store(request: Request) -> SessionStore:
    return request.app.state.web_context.sessions


def sign_in(request: Request, kind: str, subject: str, **data: Any) -> None:
    """Make the request's session a signed-in one under a new id (the old id is dropped); the
    language cookie is untouched. ``data`` becomes the session's data."""
    if kind not in (HOLDER, OPERATOR):
        raise ValueError(f"sign_in: kind is holder or operator, not {kind!r}")
    session = session_of(request)
    now = _store(request).now()
    session.renew(now)
    session.kind, session.subject, session.data, session.signed_in_at = kind, subject, dict(data), now


def sign_out(request: Request) -> None:
    """End the request's session: a new anonymous one (under a new id) takes its place."""
    session = session_of(request)
    session.renew(_store(request).now())
    session.kind, session.subject, session.data, session.signed_in_at = ANONYMOUS, "", {}, None


def holder_may_act(session: WebSession, renewal) -> bool:
    """Whether the holder signed in to ``session`` may act on ``renewal``: a holder session of the
    renewal's account and, when signed in with a notice link, only on the renewals it opened."""
    if session.kind != HOLDER or not session.subject or renewal.account != session.subject:
        return False
    if session.get("via") == "notice":
        return renewal.id in (session.get("renewals") or [])
    return True
