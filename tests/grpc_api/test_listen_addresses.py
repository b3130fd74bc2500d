"""`signserver serve` refuses an address something already listens on, at once and in one line:
its workers share their ports (SO_REUSEPORT), which would otherwise let a second server on the same
port quietly take part of the first one's calls."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests import cli_forkserver
from tests.conftest import SIGNSERVER, cli_env
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import application, healthy

# Which addresses a server may listen on does not depend on the store.
pytestmark = pytest.mark.one_store

CONFIGURATION_ERROR = 78  # EX_CONFIG, the command's status for a configuration it cannot serve


def serve(state_dir, **settings: str) -> subprocess.CompletedProcess:
    """`signserver serve` with these settings (the others on port 0), run to its end."""
    env = cli_env(state_dir, **{"SIGNSERVER_SERVER_LISTEN": "127.0.0.1:0", "SIGNSERVER_HTTP_LISTEN": "127.0.0.1:0",
                                "SIGNSERVER_CSC_LISTEN": "127.0.0.1:0", **settings})
    # Before the change, a server that could not bind started its workers again and again: the
    # timeout ends such a run, and the test fails on it.
    return cli_forkserver.run([str(SIGNSERVER), "serve", "--workers", "2"], env=env, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture
def listening():
    """A port a plain socket listens on, as any other program's would (no SO_REUSEPORT)."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("variable, setting", [("SIGNSERVER_SERVER_LISTEN", "server.listen"),
                                               ("SIGNSERVER_HTTP_LISTEN", "http.listen"),
                                               ("SIGNSERVER_CSC_LISTEN", "csc.listen"),
                                               ("SIGNSERVER_METRICS_LISTEN", "metrics.listen")])
def test_an_address_another_program_listens_on_is_refused_at_start(state_dir, listening, variable, setting):
    result = serve(state_dir, **{variable: f"127.0.0.1:{listening}"})
    assert result.returncode == CONFIGURATION_ERROR, result.stderr[-3000:]
    assert setting in result.stderr and f"127.0.0.1:{listening}" in result.stderr
    assert "Traceback" not in result.stderr and "serving on" not in result.stderr


def test_a_second_server_on_a_served_port_is_refused_and_the_first_serves_on(state_dir, tmp_path):
    (tmp_path / "first").mkdir()
    first = ServeProcess(state_dir, tmp_path / "first", workers=2).start()
    try:
        credentials = application(first, "listen-app")
        http_port = first.wait_for(r"time-stamps and CA certificates on http://127\.0\.0\.1:(\d+)")
        for variable, port in (("SIGNSERVER_SERVER_LISTEN", first.port), ("SIGNSERVER_HTTP_LISTEN", http_port)):
            result = serve(state_dir, **{variable: f"127.0.0.1:{port}"})
            assert result.returncode == CONFIGURATION_ERROR, result.stderr[-3000:]
            assert "address already in use, another process already listens" in result.stderr and "Traceback" not in result.stderr
        assert first.process.poll() is None
        for _ in range(4):  # new connections, which both workers take in turn
            assert healthy(first, credentials)
    finally:
        first.stop()
