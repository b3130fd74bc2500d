"""The children of `signserver serve` end with their supervisor: one killed (SIGKILL, the OOM
killer) leaves no worker and no metrics process serving its ports with nobody to restart or stop
them. A hang-up (SIGHUP) stops the server as SIGTERM does, its workers drained."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.grpc_api.serve_process import ServeProcess

ENDING_SECONDS = 60  # how long a child may take to drain and stop; a bound, not a measure


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command's name (None: no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet waited for, does not)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def wait_until_gone(pids: list[int]) -> list[int]:
    """Those of ``pids`` still alive after ENDING_SECONDS at most (none: all ended)."""
    deadline = time.monotonic() + ENDING_SECONDS
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def served(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=2, SIGNSERVER_METRICS_LISTEN="127.0.0.1:0").start()
    server.metrics_port = server.wait_for(r"metrics of this node on http://127\.0\.0\.1:(\d+)/metrics")
    server.children = children(server.process.pid)
    assert set(server.worker_pids()) < set(server.children)  # the metrics process besides
    yield server
    for pid in server.children:  # any the server left behind, so that they do not outlive the test
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    server.stop()


def test_the_children_end_with_a_killed_supervisor(served):
    served.process.kill()
    served.process.wait(ENDING_SECONDS)
    left = wait_until_gone(served.children)
    assert not left, f"the supervisor was killed; its children {left} still run:\n{served.text()[-2000:]}"
    assert refused(served.port) and refused(served.metrics_port)
    # Each worker stopped as on an ordinary stop: its calls in flight drained.
    assert served.text().count("stopping, draining calls in flight") == 2, served.text()[-2000:]


def test_a_hang_up_stops_the_server_drained(served):
    served.process.send_signal(signal.SIGHUP)
    assert served.process.wait(ENDING_SECONDS) == 0, served.text()[-2000:]
    assert not wait_until_gone(served.children)
    text = served.text()
    assert "supervisor: hang-up (SIGHUP); stopping as on SIGTERM" in text
    assert text.count("stopping, draining calls in flight") == 2, text[-2000:]
