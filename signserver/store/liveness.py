"""Checking that a pooled PostgreSQL connection is still alive before a transaction uses it,
unless it answered a moment ago.

SQLAlchemy's ``pool_pre_ping`` costs a round trip on every checkout: under load, one more for
every transaction, for connections that had answered a fraction of a millisecond earlier. A connection is checked here only when it has been idle in the pool for longer than a
window (HikariCP's ``aliveBypassWindowMs`` is the same idea, 500 ms by default), which is when a
restart, a fail-over, an idle timeout or a firewall may have closed it. One that fails the check
is replaced, with every other connection the pool held before it (as ``pool_pre_ping`` does),
before the transaction begins.

What the window gives up: in the moment a server goes away, a transaction drawing a connection
that was in use within the window fails (StoreUnavailable, which a client may retry; nothing of
it was written) instead of being moved to a new connection. A window of 0 checks every time.
"""

from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidatePoolError

_LAST_ANSWERED = "signserver_last_answered"  # in the connection record's info: a monotonic time


def check_idle_connections(engine: Engine, window_seconds: float,
                           monotonic: Callable[[], float] = time.monotonic) -> None:
    """Ping a connection as it leaves ``engine``'s pool when it has been idle longer than
    ``window_seconds`` (0: always); replace the pool's connections when one does not answer.

    Raises (from a checkout): what the driver raises when the ping fails for a reason other than
    a lost connection, or when no new connection can be made.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    def _answered_on_connect(_dbapi_connection, record) -> None:
        record.info[_LAST_ANSWERED] = monotonic()

    @event.listens_for(engine, "checkin")
    def _answered_until_checkin(dbapi_connection, record) -> None:
        if dbapi_connection is not None:  # None: it was invalidated while out
            record.info[_LAST_ANSWERED] = monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
        last = record.info.get(_LAST_ANSWERED)
        if last is not None and monotonic() - last <= window_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if not dialect.is_disconnect(exc, dbapi_connection, None):
                raise
            # The pool then replaces this connection and those checked in before now, and
            # hands out a new one (SQLAlchemy retries the checkout once).
            raise InvalidatePoolError(f"a pooled connection was lost: {exc.__class__.__name__}") from exc
        record.info[_LAST_ANSWERED] = monotonic()
