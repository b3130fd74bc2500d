"""A worker that dies soon after its start is started again after a pause that doubles each time
(1, 2, 4 ... 60 s), so that a worker that cannot start fills the log a few times a minute, not
every second; one that ran a while is started again after the first pause."""

from __future__ import annotations

import os
import re
import signal

from signserver.grpc_api.supervisor import (MAX_RESTART_PAUSE_SECONDS, RESTART_PAUSE_SECONDS, STEADY_SECONDS,
                                            Restarts)
from tests.grpc_api.serve_process import ServeProcess

SERVING = r"worker 0 \(pid (\d+)\) serving on"


def test_pauses_double_for_deaths_soon_after_a_start_and_start_afresh_after_a_steady_run():
    restarts, now, pauses = Restarts(), 0.0, []
    for _ in range(9):  # each start dies at once
        restarts.started(0, now)
        pauses.append(restarts.died(0, now + 0.5))
        assert restarts.waiting(0) and not restarts.due(0, now + 0.5 + pauses[-1] - 0.01)
        assert restarts.due(0, now + 0.5 + pauses[-1])
        now += 0.5 + pauses[-1]
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert pauses[0] == RESTART_PAUSE_SECONDS and pauses[-1] == MAX_RESTART_PAUSE_SECONDS
    restarts.started(0, now)
    assert not restarts.waiting(0)
    assert restarts.died(0, now + STEADY_SECONDS) == RESTART_PAUSE_SECONDS  # it ran a while
    restarts.started("metrics", now)
    assert restarts.died("metrics", now + 1) == RESTART_PAUSE_SECONDS  # each process counts its own


def test_a_worker_killed_again_soon_after_its_restart_waits_longer(state_dir, tmp_path):
    server = ServeProcess(state_dir, tmp_path, workers=1).start()
    try:
        for death in (1, 2):
            pid = int(re.findall(SERVING, server.text())[-1])
            os.kill(pid, signal.SIGKILL)
            server.wait_for(SERVING, count=death + 1, timeout=60)
        pauses = re.findall(r"worker 0 \(pid \d+\) exited with -9; starting it again in (\d+) s", server.text())
        assert pauses == ["1", "2"], server.text()[-3000:]
    finally:
        assert server.stop() == 0, server.text()[-3000:]
