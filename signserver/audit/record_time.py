"""record_time: a time read from an audit record or seal, as text, whatever number it holds.

A record's ``at`` is whatever the database (or a segment file) holds: someone who rewrote it can
put any whole number there, one no date can be (``datetime`` stops at the years 1 and 9999).
The checks name such times instead of failing on them: a check that raised would report nothing.
"""

from __future__ import annotations

from signserver.clock import from_epoch


def is_date(at: int) -> bool:
    """Whether ``at`` (seconds since 1970) is a time a date can be written for."""
    try:
        from_epoch(at)
    except (ValueError, OverflowError, OSError):
        return False
    return True


def time_text(at: int) -> str:
    """``at`` in ISO 8601, or, when no date can be, the number itself; never raises."""
    try:
        return from_epoch(at).isoformat()
    except (ValueError, OverflowError, OSError):
        return f"{at} s since 1970, out of range"
