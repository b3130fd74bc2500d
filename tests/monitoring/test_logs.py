"""A log line is one line whatever text it carries: a name or field a client chose, with line
breaks or terminal controls in it, cannot start a line of its own that reads as the server's."""

from __future__ import annotations

import json
import logging
import re

import pytest

from signserver.monitoring.logs import configure_logging

# What a client may put in a name or field: line breaks of every kind, a carriage return that
# would overwrite the line on a terminal, an escape sequence, a bidirectional override.
FORGED = "2026-12-05 10:00:00,000 INFO signserver.accounts: name admin unlocked"
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
HOSTILE = "ghost" + "".join(f"{mark}{FORGED}" for mark in BREAKS) + "\x1b[2K\u202e"


@pytest.fixture
def logged(capsys):
    """Configure logging as ``serve`` does and return a function that logs and returns stderr."""
    def log(json_lines: bool, message: str, *args, exc_info=None) -> str:
        configure_logging(json_lines=json_lines)
        logging.getLogger("signserver.accounts.authentication").warning(message, *args, exc_info=exc_info)
        return capsys.readouterr().err

    yield log
    configure_logging()


def test_a_text_line_keeps_a_client_chosen_name_on_its_line(logged):
    written = logged(False, "name %s locked until %s after %d failed attempts", HOSTILE, "10:30", 5)
    lines = written.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith("locked until 10:30 after 5 failed attempts")
    assert "\x1b" not in written and "\u202e" not in written
    assert r"ghost\n2026-12-05 10:00:00,000 INFO" in written  # said, escaped, not dropped


def test_a_json_line_keeps_a_client_chosen_name_on_its_line(logged):
    written = logged(True, "name %s locked", HOSTILE)
    lines = written.splitlines()
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["message"] == f"name {HOSTILE} locked"


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_traceback_carrying_a_client_chosen_text_starts_no_line_of_its_own(logged, json_lines):
    try:
        raise ValueError(f"no credential {HOSTILE}")
    except ValueError as error:
        written = logged(json_lines, "call failed", exc_info=error)
    lines = written.splitlines()
    if json_lines:
        assert len(lines) == 1, lines
        assert f"no credential {HOSTILE}" in json.loads(lines[0])["exception"]
    else:
        # The traceback follows its event's line, every line of it indented.
        assert lines[0].endswith("call failed") and len(lines) > 2
        assert all(line.startswith(" ") for line in lines[1:]), lines
        assert not any(FORGED in line and not line.startswith(" ") for line in lines)


def test_a_text_line_says_which_worker_logged_it(state_dir, tmp_path):
    """With several workers, an operator reading the text log (the default) tells them apart, as
    the JSON lines' "worker" field does; the supervisor's lines say it is the supervisor."""
    from tests.grpc_api.serve_process import ServeProcess

    server = ServeProcess(state_dir, tmp_path, workers=2).start()
    try:
        lines = server.text().splitlines()
    finally:
        server.stop()
    serving = [re.match(r"\S+ \S+ INFO \[worker (\d+)\] signserver\.grpc_api\.server: worker (\d+) \(pid \d+\) serving on",
                        line) for line in lines if ") serving on " in line]
    assert len(serving) == 2 and all(serving), [line for line in lines if ") serving on " in line]
    assert {found.group(1) for found in serving} == {"0", "1"}
    assert all(found.group(1) == found.group(2) for found in serving)
    started = [line for line in lines if "signserver.grpc_api.supervisor:" in line]
    assert started and all(" [supervisor] signserver.grpc_api.supervisor: " in line for line in started), started
