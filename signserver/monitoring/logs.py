"""Log lines as text (the default) or as JSON lines, and the per-call line.

A JSON line has one field each for time, level, logger, worker, message, and, on a call's line,
method, status, latency_ms and request_id (the client's ``x-request-id`` when it sent a usable
one, else one made here), so that a log pipeline filters without parsing sentences. Nothing here
reads a request's content: secrets never reach a log line through it.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
import sys

CALL_LOGGER = "signserver.calls"
CALL_FIELDS = ("method", "status", "latency_ms", "request_id")
_USABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_worker: str = "supervisor"
_calls_logged = False


def configure_logging(json_lines: bool = False, verbose: bool = False, calls: bool = False) -> None:
    """Log to stderr as text or JSON lines; with ``calls``, one line per call answered (INFO).

    Chatty libraries (alembic, fontTools: a line per table or glyph) are kept to warnings.
    """
    global _calls_logged
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if json_lines
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for chatty in ("alembic", "fontTools"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    _calls_logged = calls


def set_worker(name: int | str) -> None:
    """Name the worker this process is (its index, or "metrics"), for every line it logs from now on."""
    global _worker
    _worker = str(name)


def calls_logged() -> bool:
    """Whether a line is logged per call answered (``[logging] calls``)."""
    return _calls_logged


def request_id(offered: str | None) -> str:
    """The client's request id when it is short and plain, else a new one."""
    if offered and _USABLE_REQUEST_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


def log_call(method: str, status: str, seconds: float, request: str) -> None:
    """The line of one call answered."""
    latency_ms = round(seconds * 1000, 3)
    logging.getLogger(CALL_LOGGER).info(
        "%s %s %.3f ms [%s]", method, status, latency_ms, request,
        extra={"method": method, "status": status, "latency_ms": latency_ms, "request_id": request})


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "worker": _worker,
            "message": record.getMessage(),
        }
        for field in CALL_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
