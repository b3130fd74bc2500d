"""`signserver serve` as a separate process with its own database, for multi-worker tests."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import IO

import grpc

from tests import cli_forkserver
from tests.conftest import ROOT, SIGNSERVER, cli_env, database_url, share_stamp_fonts


class ServeProcess:
    def __init__(self, state_dir: Path, folder: Path, workers: int, **env: str):
        self.folder = folder
        self.log_path = folder / "server.log"
        defaults = dict(SIGNSERVER_SERVER_LISTEN="127.0.0.1:0", SIGNSERVER_HTTP_LISTEN="127.0.0.1:0",
                        SIGNSERVER_CSC_LISTEN="127.0.0.1:0",
                        SIGNSERVER_DATABASE_URL=database_url(folder / "signserver.db"))
        self.env = cli_env(state_dir, **{**defaults, **env})
        self.workers = workers
        self.process: subprocess.Popen | cli_forkserver.ForkedProcess | None = None
        self.log: IO | None = None  # a server started with subprocess writes through it

    def start(self) -> "ServeProcess":
        self.log_path.write_text("")  # there at once for wait_for, before the server opens it
        self.process = cli_forkserver.popen([str(SIGNSERVER), "serve", "--workers", str(self.workers)], env=self.env,
                                            output=self.log_path)
        self.port = self.wait_for(r"worker \d+ \(pid \d+\) serving on 127\.0\.0\.1:(\d+)", count=self.workers)
        return self

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.text())
            if len(found) >= count:
                return int(found[-1]) if found and str(found[-1]).isdigit() else len(found)
            assert self.process.poll() is None, self.text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"worker \d+ \(pid (\d+)\) serving on", self.text())]

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return cli_forkserver.run([str(SIGNSERVER), *args], env={**self.env, **env}, capture_output=True, text=True,
                                  timeout=180)

    def client_credentials(self, name: str) -> grpc.ChannelCredentials:
        """A client certificate for application ``name`` (registered with it)."""
        issued = self.cli("ca", "issue-client", "--role", "asp", name, "--out-dir", str(self.folder))
        assert issued.returncode == 0, issued.stderr
        read = lambda suffix: (self.folder / f"{name}{suffix}").read_bytes()  # noqa: E731
        self.client_files = (self.folder / f"{name}.pem", self.folder / f"{name}-key.pem")
        return grpc.ssl_channel_credentials((self.folder / "ca.pem").read_bytes(), private_key=read("-key.pem"),
                                            certificate_chain=read(".pem"))

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
        return self.process.returncode


def with_own_token(state: Path, folder: Path, font_cache: Path, **env: str) -> ServeProcess:
    """A one-worker server (not started) on a state directory of its own, made at ``state`` with
    a SoftHSM token of its own (``state``/softhsm) and a SQLite database in it: for tests that do
    to its files what no other test may see (fill their disk, move the token away)."""
    subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(state)],
                   env={"SIGNSERVER": str(SIGNSERVER), "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
    share_stamp_fonts(state, font_cache)
    folder.mkdir(exist_ok=True)
    return ServeProcess(state, folder, workers=1, SIGNSERVER_DATABASE_URL=f"sqlite:///{state / 'signserver.db'}", **env)
