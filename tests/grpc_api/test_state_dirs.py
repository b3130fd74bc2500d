"""`signserver serve` refuses at start, in one line and with status 78, a directory it would write
and cannot: the state directory, its spool, or the spool of prepared documents. It does not
serve and fail the first call that writes there."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from signserver.errors import ConfigurationError
from signserver.grpc_api.state_dirs import check_writable
from tests.conftest import ROOT, SIGNSERVER, cli_env, database_url, share_stamp_fonts
from tests.grpc_api.serve_process import ServeProcess

STARTING_SECONDS = 60  # a server that has not stopped by then is serving


def serve(state: Path, folder: Path, *, as_user: bool = False, **env: str) -> subprocess.CompletedProcess:
    """Run `signserver serve` until it exits; one still running after STARTING_SECONDS is stopped
    and the test fails. ``as_user``: without root's right to write where the modes forbid it."""
    env = cli_env(state, SIGNSERVER_SERVER_LISTEN="127.0.0.1:0", SIGNSERVER_HTTP_LISTEN="127.0.0.1:0",
                  SIGNSERVER_CSC_LISTEN="127.0.0.1:0", **env)
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if as_user and os.geteuid() == 0 else []
    process = subprocess.Popen([*drop, str(SIGNSERVER), "serve", "--workers", "1"], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=STARTING_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate()
        raise AssertionError(f"the server started:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def refused_in_one_line(run: subprocess.CompletedProcess, line: str) -> None:
    assert run.returncode == 78, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == line, run.stderr[-3000:]


def test_a_state_directory_it_cannot_write_stops_the_start(tmp_path, font_cache):
    state = tmp_path / "state"
    subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(state)],
                   env={"SIGNSERVER": str(SIGNSERVER), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
    share_stamp_fonts(state, font_cache)
    database = database_url(tmp_path / "signserver.db")
    run = tmp_path / "run"
    run.mkdir()
    first = ServeProcess(state, run, workers=1, SIGNSERVER_DATABASE_URL=database)  # set up, as a server found
    first.start()
    assert first.stop() == 0
    os.chmod(state, 0o500)
    try:
        run = serve(state, tmp_path, as_user=True, SIGNSERVER_DATABASE_URL=database)
    finally:
        os.chmod(state, 0o700)
    refused_in_one_line(run, f"signserver: configuration state_dir: cannot write in {state}: Permission denied")


def test_a_file_in_place_of_the_prepared_documents_spool_stops_the_start(state_dir, tmp_path):
    spool = tmp_path / "prepared"
    spool.write_text("not a directory")
    run = serve(state_dir, tmp_path, SIGNSERVER_PADES_SPOOL_DIR=str(spool),
                SIGNSERVER_DATABASE_URL=database_url(tmp_path / "signserver.db"))
    refused_in_one_line(run, f"signserver: configuration pades.spool_dir: {spool} is not a directory")


@pytest.mark.parametrize("make", ["file", "file above"])
def test_a_directory_that_cannot_be_made_is_refused_by_its_setting(tmp_path, make):
    (tmp_path / "taken").write_text("")
    directory = tmp_path / "taken" if make == "file" else tmp_path / "taken" / "spool"
    with pytest.raises(ConfigurationError) as refusal:
        check_writable(directory, "state_dir")
    assert refusal.value.key == "state_dir" and str(directory) in str(refusal.value)


def test_a_writable_directory_is_made_and_left_as_it_was(tmp_path):
    directory = tmp_path / "state" / "spool"
    check_writable(directory, "state_dir")
    assert directory.is_dir() and list(directory.iterdir()) == []
    assert directory.stat().st_mode & 0o777 == 0o700
