"""What every answered call reports, whatever front answered it: its figures to the meter and,
when ``[logging] calls`` is on, its line in the log."""

from __future__ import annotations

import logging
from typing import Callable

from signserver.errors import SignServerError
from signserver.monitoring.logs import calls_logged, log_call, request_id
from signserver.monitoring.meter import meter

log = logging.getLogger(__name__)


def call_answered(front: str, method: str, status: str, seconds: float,
                  offered_request_id: Callable[[], str | None],
                  refused_with: type[SignServerError] | None = None) -> None:
    """Report one call of ``front`` answered with ``status`` after ``seconds``;
    ``offered_request_id`` reads the client's request id, only when a line is logged.
    ``refused_with``: for a refusal, the error class whose stable ``reason`` its answer carries (a
    class, never text: the reasons a client can make the server count are the hierarchy's).

    Never raises: a report that fails must not fail the answer.
    """
    try:
        reason = refused_with.reason if refused_with is not None else None
        meter().call_finished(front, method, status, seconds, reason)
        if calls_logged():
            log_call(method, status, seconds, request_id(offered_request_id()), reason)
    except Exception:
        log.exception("could not report the call %s", method)
