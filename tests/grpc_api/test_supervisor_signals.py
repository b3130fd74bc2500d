"""How `signserver serve` stops: SIGTERM or SIGINT drains the workers within the grace; a second
SIGINT (Ctrl-C again) while they drain stops them at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.grpc_api.serve_process import ServeProcess


@pytest.fixture
def stuck(state_dir, tmp_path):
    """A server whose only worker is frozen (SIGSTOP): it cannot drain, so the stop waits for it."""
    server = ServeProcess(state_dir, tmp_path, workers=1).start()
    worker = server.worker_pids()[0]
    os.kill(worker, signal.SIGSTOP)
    yield server
    try:
        os.kill(worker, signal.SIGKILL)  # the test's own frozen worker, if the server left it
    except ProcessLookupError:
        pass
    server.stop()


def test_a_second_interrupt_stops_the_workers_at_once(stuck):
    stuck.process.send_signal(signal.SIGINT)
    stuck.wait_for(r"supervisor: stopping 1 worker\(s\)")
    with pytest.raises(subprocess.TimeoutExpired):
        stuck.process.wait(2)  # the first one drains: the worker has its grace
    interrupted = time.monotonic()
    stuck.process.send_signal(signal.SIGINT)
    assert stuck.process.wait(10) == 0
    assert time.monotonic() - interrupted < 5
    assert "stopping the workers now" in stuck.text()


def test_a_repeated_sigterm_leaves_the_drain_its_grace(stuck):
    """An orchestrator may send SIGTERM more than once: only an interrupt cuts the grace short."""
    stuck.process.send_signal(signal.SIGTERM)
    stuck.wait_for(r"supervisor: stopping 1 worker\(s\)")
    stuck.process.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        stuck.process.wait(3)
