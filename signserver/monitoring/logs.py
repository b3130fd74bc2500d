r"""Log lines as text (the default) or as JSON lines, and the per-call line.

A text line reads ``time LEVEL [worker] logger: message`` (``[worker 0]``, ``[supervisor]``,
``[metrics]``; no brackets in a command's lines). A JSON line has one field each for time, level,
logger, worker (in the server's processes), message, and, on a call's line, method, status, for a
refusal reason (the stable reason its answer carries), latency_ms and request_id (the client's
``x-request-id`` when it sent a usable one, else one made here), so that a log pipeline filters
without parsing sentences. Nothing here reads a request's content: secrets never reach a log line
through it.

A message may carry text a client chose (an account name, a field, a path), so each event stays one
line whatever it carries: line breaks of every kind, other control characters and the characters
that reorder or hide text are written as escapes (``\n``, ``\x85``, ``\u2028``; in JSON,
``\u0085``). In text, a traceback follows its event's line with each of its lines indented, so
that only an event starts a line at its first column.

Every line at WARNING or above is also counted by the meter, by level and logger (the logger is a
module's name, never text a client chose), so that an operator sees from the figures how often an
e-mail was given up or the HSM stopped answering, without reading the logs.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
import sys

from signserver.monitoring.meter import meter

CALL_LOGGER = "signserver.calls"
CALL_FIELDS = ("method", "status", "reason", "latency_ms", "request_id")
_USABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Control characters (C0, DEL, C1), the line and paragraph separators, and the format characters
# that hide text or change its direction on a terminal: none belongs in a log line as it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                     "\u2028-\u202e\u2060-\u206f\u3164\ufeff\ufff9-\ufffb]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# The worker (see _worker_in_text) stands between the level and the logger, as the JSON lines' "worker".
TEXT_FORMAT = "%(asctime)s %(levelname)s %(worker)s%(name)s: %(message)s"
TRACEBACK_INDENT = "    "

_worker: str | None = None  # set by `signserver serve`'s processes: their lines say which
_calls_logged = False


def configure_logging(json_lines: bool = False, verbose: bool = False, calls: bool = False) -> None:
    """Log to stderr as text or JSON lines; with ``calls``, one line per call answered (INFO).

    Chatty libraries (alembic, fontTools: a line per table or glyph) are kept to warnings.
    """
    global _calls_logged
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if json_lines else TextLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(CountingHandler())
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for chatty in ("alembic", "fontTools"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    _calls_logged = calls


def set_worker(name: int | str) -> None:
    """Name the server's process this is (a worker's index, "supervisor" or "metrics"), for every
    line it logs from now on. Other commands' lines name none."""
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


def log_call(method: str, status: str, seconds: float, request: str, reason: str | None = None) -> None:
    """The line of one call answered; ``reason``: a refusal's stable reason (after its status)."""
    latency_ms = round(seconds * 1000, 3)
    outcome = f"{status} {reason}" if reason else status
    logging.getLogger(CALL_LOGGER).info(
        "%s %s %.3f ms [%s]", method, outcome, latency_ms, request,
        extra={"method": method, "status": status, "reason": reason, "latency_ms": latency_ms,
               "request_id": request})


def one_line(text: str) -> str:
    """``text`` with every character that could break or disguise a log line escaped."""
    return text if _UNSAFE.search(text) is None else _UNSAFE.sub(_escaped, text)


def _escaped(found: re.Match) -> str:
    char = found.group()
    return _NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _indented(block: str) -> str:
    """A traceback (or stack) under its event's line: every line of it indented and kept whole."""
    return "\n".join(TRACEBACK_INDENT + one_line(line) for line in block.split("\n"))


class CountingHandler(logging.Handler):
    """Counts each line at WARNING or above with the process's meter (the one installed when the
    line is logged: a worker's, once it has one)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        meter().message_logged(record.levelname.lower(), record.name)


def _worker_in_text() -> str:
    """The process's name in a text line: "[worker 0] " for a worker's index, "[supervisor] ", or
    nothing in a process that is no server's."""
    if _worker is None:
        return ""
    return f"[worker {_worker}] " if _worker.isdigit() else f"[{_worker}] "


class TextLineFormatter(logging.Formatter):
    """``time LEVEL [worker] logger: message``, one line per event (see the module's notes)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The record is shared with the other handlers: the worker goes into the format's values only.
        return one_line(TEXT_FORMAT % {**record.__dict__, "worker": _worker_in_text()})

    def formatException(self, ei) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _worker is not None:
            entry["worker"] = _worker
        for field in CALL_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json escapes C0 controls only: the other unsafe characters, which only a string can hold
        # here, become \u escapes too (a reader that splits lines at U+2028 or NEL, as Python's
        # str.splitlines does, would break the line).
        line = json.dumps(entry, ensure_ascii=False)
        return _UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", line)
