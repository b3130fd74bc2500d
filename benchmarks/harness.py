"""What every benchmark needs: a throwaway SoftHSM token, a timer, and a table."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from signserver.service import SignService

RESULTS = Path(__file__).parent / "results"  # JSON and charts of each run (not kept in git)

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu_seconds(stat: str) -> float:
    """The CPU time (user and system) in a process's or thread's /proc ``stat`` line."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user and system), from /proc."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def children(pid: int) -> list[int]:
    """A process's child processes (a server's workers), from /proc."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def fresh_state_dir() -> Path:
    """A temporary state directory with a new SoftHSM token; SOFTHSM2_CONF points at it."""
    state = Path(tempfile.mkdtemp(prefix="signserver-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER")}
    env["SIGNSERVER"] = str(Path(sys.executable).parent / "signserver")
    subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(state)], env=env, check=True,
                   capture_output=True)
    os.environ["SOFTHSM2_CONF"] = str(state / "softhsm" / "softhsm2.conf")
    return state


@contextlib.contextmanager
def benchmark_service() -> Iterator[tuple[Path, "SignService"]]:
    """A service on a fresh state directory and token (:func:`fresh_state_dir`), its database
    ready; closed and removed afterwards."""
    from signserver.config import load_config
    from signserver.service import SignService

    state = fresh_state_dir()
    config = load_config(environ={"SIGNSERVER_STATE_DIR": str(state)})
    service = SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))
    try:
        service.prepare_database()
        yield state, service
    finally:
        service.close()
        shutil.rmtree(state, ignore_errors=True)


def token_environ(token_state: Path, database_url: str | None = None) -> dict[str, str]:
    """Settings for a state directory of its own that signs with ``token_state``'s token (and
    keeps its records in ``database_url``, when given)."""
    from signserver.config import env_name

    environ = {env_name("hsm.softhsm2_conf"): str(token_state / "softhsm" / "softhsm2.conf"),
               env_name("hsm.user_pin_file"): str(token_state / "hsm" / "user-pin")}
    if database_url:
        environ[env_name("database.url")] = database_url
    return environ


def service_on_token(state: Path, token_state: Path, database_url: str | None = None) -> "SignService":
    """A service on ``state`` (its database, unless ``database_url``) and ``token_state``'s
    token: several servers of one benchmark sign with one token, each with records of its own."""
    from signserver.config import env_name, load_config
    from signserver.service import SignService

    state.mkdir(parents=True, exist_ok=True)
    config = load_config(environ={env_name("state_dir"): str(state), **token_environ(token_state, database_url)})
    return SignService.from_config(config, user_pin=config.hsm.user_pin(environ={}))


@dataclass
class Rate:
    """Operations per second measured over a fixed duration."""

    name: str
    operations: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds


def measure(name: str, operation: Callable[[], object], seconds: float, warmup: int = 20) -> Rate:
    """Call ``operation`` repeatedly for about ``seconds`` and count the calls."""
    for _ in range(warmup):
        operation()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            operation()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return Rate(name, count, now - start)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
