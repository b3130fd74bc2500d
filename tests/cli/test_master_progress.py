"""The re-wrap pass's progress (`hsm master rotate`, `rewrap`) is reported as the other long
commands report theirs (signserver/cli/progress.py): a line every few seconds with its rate, on a
terminal or not, and one when every package is re-wrapped; never a line per batch."""

from __future__ import annotations

import io
import uuid

from signserver.cli.master import _progress_line
from signserver.cli.progress import PROGRESS_EVERY_SECONDS
from signserver.hsm.admin import TokenAdministrator
from signserver.secret import Secret
from tests import cli_forkserver
from tests.cli.masters import service_with_first_master
from tests.conftest import SIGNSERVER, cli_env, database_url, enrol

USER_PIN = Secret("user-pin-for-progress-tests")


def test_progress_is_a_line_every_few_seconds_with_the_pass_s_rate():
    now = [100.0]
    shown = io.StringIO()
    report = _progress_line(clock=lambda: now[0], stream=shown)
    for done, seconds in ((200, 1.0), (400, 2.0), (1200, PROGRESS_EVERY_SECONDS + 0.5), (1400, 6.0),
                          (5000, 7.0)):
        now[0] = 100.0 + seconds
        report(done, 5000, done / seconds)
    assert shown.getvalue().splitlines() == ["re-wrapped 1200/5000 packages (218/s)",
                                             "re-wrapped 5000/5000 packages (714/s)"]  # the end, due or not


def test_a_rotation_off_a_terminal_prints_no_line_per_batch(config, state_dir, tmp_path):
    token = f"progress-{uuid.uuid4().hex[:8]}"
    TokenAdministrator(config.hsm.module).init_token(token, Secret("so-pin-for-progress-tests"), USER_PIN)
    with service_with_first_master(config, token, tmp_path, USER_PIN) as service:
        for _ in range(3):
            enrol(service)

    rotated = cli_forkserver.run(
        [str(SIGNSERVER), "hsm", "master", "rotate", "--grace-seconds", "0", "--batch", "1", "--token", token],
        capture_output=True, text=True, timeout=180,
        env=cli_env(state_dir, SIGNSERVER_DATABASE_URL=database_url(tmp_path / "signserver.db"),
                    SIGNSERVER_HSM_USER_PIN=USER_PIN.reveal()))
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 3 packages" in rotated.stdout
    batches = [line for line in rotated.stderr.splitlines() if "/3 packages" in line]
    assert len(batches) == 1 and batches[0].startswith("re-wrapped 3/3 packages ("), rotated.stderr  # the end only
