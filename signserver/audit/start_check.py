"""check_live_start: refuse to export or prune a live log whose start its chain does not record.

A prune moves the start of the live chain (the ``audit_anchor`` row) and, in the same
transaction, appends an ``audit.pruned`` record saying so (:mod:`signserver.audit.anchor`);
``audit verify`` compares the two. Someone who removes records from the start of the log and
writes the row alone is reported by ``verify``, but an export from that start would write a
segment beginning after the removed records, and a prune after it would remove what tells of
them (the anchor moves on, with a record of its own): both run this check first.

The newest ``audit.pruned`` record is looked for from the head back, a window of records at a
time, each window in a short read transaction of its own (see :mod:`signserver.audit.live_log`).
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select

from signserver.audit.anchor import PRUNED_EVENT, Anchor, read_anchor, start_problem
from signserver.errors import DataCorrupted, StoreUnavailable
from signserver.store.database import Database
from signserver.store.schema import audit_log

WINDOW = 50_000  # records looked through per read transaction

_NEWEST_SEQ = select(func.max(audit_log.c.seq))
_NEWEST_PRUNED = (select(audit_log.c.seq, audit_log.c.detail)
                  .where(audit_log.c.event == PRUNED_EVENT, audit_log.c.seq > bindparam("low"),
                         audit_log.c.seq <= bindparam("high"))
                  .order_by(audit_log.c.seq.desc()).limit(1))


def check_live_start(database: Database, anchor: Anchor | None, window: int = WINDOW) -> None:
    """Check that the newest ``audit.pruned`` record after ``anchor`` (the anchor row read by the
    caller; None: the log starts at the genesis) describes it, as ``audit verify`` does.

    Raises:
        DataCorrupted: it does not, there is none while ``anchor`` is set, or one names a start
            while ``anchor`` is None.
        StoreUnavailable: also when a prune moved the start meanwhile.
    """
    start = anchor.seq if anchor else 0
    with database.read() as conn:
        high = conn.execute(_NEWEST_SEQ).scalar() or 0
    found = None
    while found is None and high > start:
        low = max(start, high - window)
        with database.read() as conn:
            found = conn.execute(_NEWEST_PRUNED, {"low": low, "high": high}).first()
        high = low
    pruned = None
    if found is not None:
        try:
            pruned = Anchor.from_record_detail(found.detail)
        except ValueError:
            raise DataCorrupted(f"record {found.seq} ({PRUNED_EVENT}) does not say what was removed: "
                                "run `signserver audit verify --full`") from None
    problem = start_problem(anchor, pruned)
    if problem is None:
        return
    with database.read() as conn:
        if read_anchor(conn) != anchor:  # a prune moved it, and may have removed the record looked for
            raise StoreUnavailable("records were pruned meanwhile: run the command again")
    raise DataCorrupted(f"{problem} (`signserver audit verify --full` reports it)")
