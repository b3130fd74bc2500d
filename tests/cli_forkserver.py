"""`signserver` commands for the tests, each in a process of its own, forked from a process that has
imported the command-line tool already.

A command started as ``.venv/bin/signserver ...`` spends most of its CPU importing (about 0.6 to
0.9 s for one that opens the service: SQLAlchemy, cryptography, python-pkcs11, the service), and the
suite runs hundreds. :func:`run` takes the arguments of ``subprocess.run`` and, for a
``signserver`` command, asks the fork server instead: a process started once per test process
(never forked from pytest's, which holds a token session and threads) that imports the tool,
then forks once per command. The child takes the command's arguments, environment, working
directory and standard streams, runs ``signserver.cli.main.main`` as the console script would, and
exits with its status: the command still runs in a process of its own, on the real token and
database; only the imports are done beforehand. The fork server touches neither the token nor a
database, so nothing but imported modules crosses the fork. :func:`popen` starts a server
(`signserver serve`, `signserver ra serve`) the same way and hands back a Popen-like handle.

Tests of how the tool starts (its imports, a terminal, signals) start it with ``subprocess``."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.readable import readable

SIGNSERVER = Path(sys.executable).parent / "signserver"
ROOT = Path(__file__).resolve().parent.parent

# What the fork server imports before it forks: the tool, what opening the service needs, and what
# the commands import only when they run (the RA's commands and their client of the core, `audit
# verify`, the password list and QR codes of `account create`): each of those cost a command 10 to
# 60 ms of its own, the commands average about 100.
PRELOADED = ("signserver.cli.main", "signserver.cli.common", "signserver.cli.hsm", "signserver.cli.ca",
             "signserver.cli.accounts", "signserver.cli.audit", "signserver.cli.master", "signserver.cli.store",
             "signserver.cli.documents", "signserver.cli.ra", "signserver.service", "signserver.ra.cli",
             "signserver.client", "signserver.audit.verify", "zxcvbn.frequency_lists", "qrcode.image.pure")
# And, at the first server it starts (popen, or run given `serve`), the servers' own: about 1.7 s
# of CPU for the core's, 0.7 s for the RA's, which most test processes never start.
PRELOADED_SERVERS = ("signserver.grpc_api.server", "signserver.ra.server")
_SAME_AS_STDOUT = "&1"  # a command's stderr: where its stdout goes


def run(args, *, input=None, capture_output=False, text=False, env=None, cwd=None, timeout=None, check=False,
        stdout=None, stderr=None, **others) -> subprocess.CompletedProcess:
    """``subprocess.run(args, ...)``; a ``signserver`` command (``args[0]`` the console script)
    runs in a child of the fork server, anything else as ``subprocess.run`` runs it. A server
    (`serve`, for a test of a start that ends by itself) gets the servers' modules imported
    beforehand, as :func:`popen`'s do.

    Raises: subprocess.TimeoutExpired, subprocess.CalledProcessError (with ``check``), as
    ``subprocess.run`` does.
    """
    if others or str(args[0]) != str(SIGNSERVER) or not _forkable_streams(stdout, stderr, capture_output):
        return subprocess.run(args, input=input, capture_output=capture_output, text=text, env=env, cwd=cwd,
                              timeout=timeout, check=check, stdout=stdout, stderr=stderr, **others)
    return _server().run([str(a) for a in args], input=input, capture_output=capture_output, text=text,
                         env=dict(os.environ if env is None else env), cwd=str(cwd or os.getcwd()),
                         timeout=timeout, check=check,
                         silenced=(stdout == subprocess.DEVNULL, stderr == subprocess.DEVNULL),
                         preload=PRELOADED_SERVERS if "serve" in args else ())


def popen(args, *, env: dict, output: Path, cwd=None) -> "ForkedProcess":
    """``subprocess.Popen(args, env=env, cwd=cwd, stdout=..., stderr=subprocess.STDOUT)`` with both
    streams written to the file ``output``, for a ``signserver`` command that keeps running (a
    server): it runs in a child of the fork server, like :func:`run`'s commands, and answers as a
    Popen does (``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill``,
    ``returncode``). A server forks its workers itself, after its own imports: the fork server has
    done them."""
    return _server().start([str(a) for a in args], env=dict(env), cwd=str(cwd or os.getcwd()), stdout=str(output),
                           stderr=_SAME_AS_STDOUT, preload=PRELOADED_SERVERS)


class ForkedProcess:
    """A command running in a child of the fork server; its handler says its pid at once and its
    exit status when it ends, on the connection kept here."""

    def __init__(self, args: list[str], connection: socket.socket):
        self.args = args
        self._connection = connection
        self.pid = json.loads(self._line())["pid"]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._answered(0):
            self._ended()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Raises: subprocess.TimeoutExpired."""
        if self.returncode is None:
            if not self._answered(timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._ended()
        return self.returncode

    def _answered(self, timeout: float | None) -> bool:
        """Whether the handler's next answer (or its end) is there, within ``timeout`` seconds
        (see tests.readable: a test process that holds 1,024 descriptors must still wait for its
        commands and stop its servers)."""
        return readable(self._connection, timeout)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # as Popen: never a signal to a pid that may have been reused
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _ended(self) -> None:
        line = self._line()  # written whole by the handler once the command ended
        # No answer: the handler itself was killed (the fork server's test process is ending).
        self.returncode = json.loads(line)["returncode"] if line else -signal.SIGKILL
        self._connection.close()

    def _line(self) -> bytes:
        """One answer, read a byte at a time: nothing beyond it may wait in a buffer, where
        a wait for the connection to be readable would not see the exit status that follows the pid."""
        line = b""
        while not line.endswith(b"\n"):
            byte = self._connection.recv(1)
            if not byte:
                break
            line += byte
        return line


def _forkable_streams(stdout, stderr, capture_output: bool) -> bool:
    if capture_output:
        return stdout is None and stderr is None
    return stdout in (None, subprocess.DEVNULL) and stderr in (None, subprocess.DEVNULL)


class _ForkServer:
    def __init__(self):
        self._folder = Path(tempfile.mkdtemp(prefix="signserver-cli-"))
        self._address = str(self._folder / "forkserver.sock")
        ready = self._folder / "ready"
        program = "import sys; from tests.cli_forkserver import serve; serve(sys.argv[1], sys.argv[2])"
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen([sys.executable, "-c", program, self._address, str(ready)], cwd=ROOT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
        while not ready.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"the CLI fork server ended at start ({self._process.returncode})")
            time.sleep(0.02)
        atexit.register(self.stop)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(30)
        shutil.rmtree(self._folder, ignore_errors=True)

    def start(self, args: list[str], *, env: dict, cwd: str, stdin: str | None = None, stdout: str | None = None,
              stderr: str | None = None, preload: tuple[str, ...] = ()) -> ForkedProcess:
        """The command in a child, its streams opened from those paths (None: the fork server's;
        ``_SAME_AS_STDOUT`` for stderr), once the fork server has imported ``preload``."""
        connection = socket.socket(socket.AF_UNIX)
        try:
            connection.connect(self._address)
            connection.sendall(json.dumps({"args": args, "env": env, "cwd": cwd, "stdin": stdin, "stdout": stdout,
                                           "stderr": stderr, "preload": preload}).encode() + b"\n")
            return ForkedProcess(args, connection)
        except BaseException:
            connection.close()
            raise

    def run(self, args: list[str], *, input, capture_output: bool, text: bool, env: dict, cwd: str, timeout,
            check: bool, silenced: tuple[bool, bool] = (False, False),
            preload: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        streams = Path(tempfile.mkdtemp(dir=self._folder))
        try:
            stdin = None
            if input is not None:
                stdin = streams / "stdin"
                stdin.write_bytes(input.encode() if isinstance(input, str) else input)
            out, err = (streams / "stdout", streams / "stderr") if capture_output else (None, None)
            process = self.start(args, env=env, cwd=cwd, stdin=str(stdin) if stdin else None,
                                 stdout=str(out) if out else (os.devnull if silenced[0] else None),
                                 stderr=str(err) if err else (os.devnull if silenced[1] else None),
                                 preload=preload)
            try:
                returncode = process.wait(timeout)
            except subprocess.TimeoutExpired as expired:
                process.kill()
                process.wait()
                expired.pid = process.pid  # the killed command's, for tests of this
                raise
            output, errors = (out.read_bytes(), err.read_bytes()) if capture_output else (None, None)
        finally:
            shutil.rmtree(streams, ignore_errors=True)
        if text and capture_output:
            output, errors = output.decode(), errors.decode()
        if check and returncode:
            raise subprocess.CalledProcessError(returncode, args, output, errors)
        return subprocess.CompletedProcess(args, returncode, output, errors)


_lock = threading.Lock()
_running: _ForkServer | None = None


def _server() -> _ForkServer:
    global _running
    with _lock:
        if _running is None or _running._process.poll() is not None:
            _running = _ForkServer()
        return _running


# --- the fork server's side --------------------------------------------------------------


def serve(address: str, ready: str) -> None:
    """Import the tool, listen on ``address``, then fork a handler per connection."""
    import gc
    import importlib
    for name in PRELOADED:
        importlib.import_module(name)
    # Frozen, the imported modules are walked by no child's collection (a full one walked them
    # all: about 50 ms each, in most commands).
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    parent = os.getppid()
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(address)
        listening.listen(64)
        listening.settimeout(1.0)
        Path(ready).touch()
        while True:
            try:
                connection, _ = listening.accept()
            except TimeoutError:
                if os.getppid() != parent:  # the test process is gone without stopping this,
                    shutil.rmtree(Path(address).parent, ignore_errors=True)  # nor removing the folder made for this
                    return
                continue
            try:
                connection.settimeout(30)  # sent with the connection; never waited for long
                request = json.loads(connection.makefile("rb").readline())
                connection.settimeout(None)
                if not all(name in sys.modules for name in request.get("preload", ())):
                    for name in request.get("preload", ()):  # imported here once, for every later fork
                        importlib.import_module(name)
                    gc.collect()
                    gc.freeze()
            except (OSError, ValueError):
                connection.close()
                continue
            if os.fork() == 0:
                listening.close()
                _handle(connection, request)  # never returns
            connection.close()


def _handle(connection: socket.socket, request: dict) -> None:
    """In a handler: run the command in a child, tell its pid, wait for it, tell its status."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        child = os.fork()
        if child == 0:
            connection.close()
            _command(request)  # never returns
        connection.sendall(json.dumps({"pid": child}).encode() + b"\n")
        _, status = os.waitpid(child, 0)
        connection.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    finally:
        os._exit(0)


def _command(request: dict) -> None:
    """In the command's process: its directory, environment and streams, then the console script's
    own call."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, request["stdin"] or os.devnull, os.O_RDONLY),
                                (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            if path == _SAME_AS_STDOUT:
                os.dup2(1, fd)
            elif path is not None:
                opened = os.open(path, flags, 0o600)
                os.dup2(opened, fd)
                os.close(opened)
        sys.argv = request["args"]
        from signserver.cli.main import main
        try:
            code = main()
        except SystemExit as exc:
            code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
