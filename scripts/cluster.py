#!/usr/bin/env python3
"""`make cluster`: two signserver nodes behind nginx, on one machine, as several machines would run.

    .venv/bin/python scripts/cluster.py [--folder var/cluster] [--listen 127.0.0.1:50050]
        [--csc-listen 127.0.0.1:50443] [--http-listen 127.0.0.1:50080] [--workers 2]

- one PostgreSQL, a throw-away cluster in FOLDER/postgres (run as an unprivileged user when this
  runs as root, since PostgreSQL refuses root), the store both nodes share;
- one SoftHSM token directory both nodes use (FOLDER/hsm), standing in for a network HSM cluster;
- two nodes, `signserver serve --workers N`, each with its own state directory (FOLDER/node-a,
  FOLDER/node-b: its TLS material, fonts, ...) and its own ports, sharing the spool of prepared
  documents (FOLDER/spool), as nodes share a network file system;
- nginx (FOLDER/balancer) in front of every front of both nodes:
  - gRPC calls and the CSC API (HTTPS): TLS with client certificates from this CA towards
    clients, mutual TLS with its own client certificate towards the nodes, and the client's
    verified certificate forwarded in x-client-cert (gRPC metadata, HTTP header), which the nodes
    believe from it alone ([tls] balancer_cert_sha256 in each node's FOLDER/node-*.toml);
  - the CA's endpoints (CRLs, OCSP, time-stamps, CA certificates): plain HTTP, as the nodes serve
    them.

The first start (schema, CA, master key) happens once, before node A, then node A starts, then
node B. Everything in FOLDER is made anew on each run and left there after it (logs). Prints the
balancer's addresses; Ctrl-C (or SIGTERM) stops everything.

The tests drive the same classes (tests/cluster/), with the tests' token and database.
"""

from __future__ import annotations

import argparse
import glob
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNSERVER = Path(sys.executable).parent / "signserver"
START_SECONDS = 180
STOP_SECONDS = 60
POSTGRES_USER = "signserver"


class PortReservations:
    """Loopback ports for nginx, which needs numbers, held until nginx starts. Each is bound (not
    listening) by a socket of this process meanwhile: a port only looked up as free and let go could
    be taken by anything else on the machine (an outgoing connection's local port, another server)
    during the minute the nodes take to start, and nginx would then fail to bind it."""

    def __init__(self):
        self._sockets: list[socket.socket] = []

    def address(self) -> str:
        """A fresh ``127.0.0.1:PORT``, kept for this process until :meth:`release`."""
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self._sockets.append(probe)
        return f"127.0.0.1:{probe.getsockname()[1]}"

    def release(self) -> None:
        """Let the ports go, for nginx to bind them at once."""
        for probe in self._sockets:
            probe.close()
        self._sockets.clear()


def _unprivileged_user(*names: str) -> pwd.struct_passwd | None:
    """The first of ``names`` that exists, to run a server as when this runs as root (PostgreSQL
    refuses root; nginx's workers should not have it); None when this does not run as root."""
    if os.geteuid() != 0:
        return None
    for name in names:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise SystemExit(f"running as root, and none of the users {', '.join(names)} exists to run a server as")


def _wait_for(pattern: str, log: Path, process: subprocess.Popen, count: int = 1,
              timeout: float = START_SECONDS) -> list:
    """The matches of ``pattern`` in ``log`` once there are ``count`` of them.

    Raises: RuntimeError: the process ended first, or the time ran out (with the log's end).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(pattern, log.read_text(errors="replace")) if log.exists() else []
        if len(found) >= count:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            raise RuntimeError(f"{log.parent.name}: {state} waiting for {pattern!r}:\n{tail}")
        time.sleep(0.1)


def _clean_environ(**extra: str) -> dict[str, str]:
    """This environment without signserver's settings (each process gets its configuration file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNSERVER_") and k != "SOFTHSM2_CONF"}
    return {**env, **extra}


def _remember(folder: Path, process: subprocess.Popen) -> None:
    """Note a process group, so that a run killed without its clean-up is cleaned up by the next."""
    with (folder / "process-groups").open("a") as groups:
        groups.write(f"{process.pid}\n")


def _end_leftovers(folder: Path) -> None:
    """End what a previous run in ``folder`` left running: its process groups (nodes, nginx) and
    its PostgreSQL server."""
    groups = folder / "process-groups"
    for line in groups.read_text().split() if groups.exists() else ():
        try:
            command = Path(f"/proc/{line}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        if b"signserver" in command or b"nginx" in command:  # not a process that took the number since
            try:
                os.killpg(int(line), signal.SIGKILL)
            except ProcessLookupError:
                pass
    postmaster = folder / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        pid = int(postmaster.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            deadline = time.monotonic() + 30
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        except ProcessLookupError:
            pass


def _end(process: subprocess.Popen | None, first: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> None:
    """Stop a process started in a session of its own, and all of that session."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, first)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


class Postgres:
    """A throw-away PostgreSQL cluster in ``directory``, on a Unix socket there (no TCP port)."""

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        self._owner = _unprivileged_user("postgres", "nobody")
        self._running = False

    def start(self) -> str:
        """initdb, start the server, create the database; returns its URL.

        Raises: SystemExit: PostgreSQL is not installed; RuntimeError: a step failed (with its output).
        """
        self._bindir = self._find_bindir()
        self.directory.mkdir(parents=True)
        if self._owner is not None:
            os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "--encoding=UTF8", "--locale=C")
        self._running = True
        # Two nodes of two workers, each pooling up to pool_size + max_overflow connections.
        self._run("pg_ctl", "start", "--wait", "-D", str(data), "-l", str(self.directory / "server.log"),
                  "-o", f"-k {self.directory} -c listen_addresses='' -c max_connections=200")
        self._run("createdb", "-h", str(self.directory), "-U", POSTGRES_USER, "signserver")
        return f"postgresql+psycopg://{POSTGRES_USER}@/signserver?host={self.directory}"

    def stop(self) -> None:
        if self._running:
            self._running = False
            try:
                self._run("pg_ctl", "stop", "--wait", "-D", str(self.directory / "data"), "-m", "fast")
            except RuntimeError:
                pass  # already gone

    @staticmethod
    def _find_bindir() -> Path:
        found = shutil.which("pg_config") and subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates = [Path(found.stdout.strip())] if found and found.returncode == 0 else []
        candidates += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
                             key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
        for bindir in candidates:
            if (bindir / "initdb").is_file():
                return bindir
        raise SystemExit("PostgreSQL's server is not installed (Debian: apt-get install postgresql)")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bindir / tool), *args]
        if self._owner is not None:
            command = ["setpriv", f"--reuid={self._owner.pw_uid}", f"--regid={self._owner.pw_gid}",
                       "--clear-groups", *command]
        done = subprocess.run(command, cwd=self.directory, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL's {tool} failed: {(done.stderr or done.stdout).strip()}")


# What a worker logs as each of its fronts serves, with the port.
FRONT_LINES = {
    "grpc": r"worker \d+ \(pid \d+\) serving on 127\.0\.0\.1:(\d+)",
    "csc": r"worker \d+ \(pid \d+\) CSC API on https://127\.0\.0\.1:(\d+)/",
    "http": r"CA certificates on http://127\.0\.0\.1:(\d+)",
}


class Node:
    """One node: `signserver serve` with its own state directory and configuration file."""

    def __init__(self, name: str, folder: Path, hsm_state: Path, database_url: str, spool: Path, workers: int,
                 ca_url: str | None = None, csc_url: str | None = None):
        self.name = name
        # Where clients reach the CA's endpoints and the CSC API: the balancer (in certificates'
        # CRL and OCSP addresses, and in the URLs the CSC API's info hands out).
        self.ca_url = ca_url
        self.csc_url = csc_url
        self.state = (folder / name).resolve()
        self.config_file = (folder / f"{name}.toml").resolve()
        self.log_path = self.state / "server.log"
        self._hsm_state = hsm_state.resolve()
        self._database_url = database_url
        self._spool = spool.resolve()
        self.workers = workers
        self.process: subprocess.Popen | None = None
        self.port: int | None = None  # gRPC
        self.csc_port: int | None = None  # the CSC API (HTTPS)
        self.http_port: int | None = None  # the CA's endpoints (HTTP)

    def write_config(self, balancer_sha256: str | None) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self._spool.mkdir(parents=True, exist_ok=True)
        lines = [
            f"# {self.name} of the cluster (written by scripts/cluster.py)",
            f'state_dir = "{self.state}"',
            "[hsm]  # the token both nodes share, as a network HSM cluster would be",
            f'softhsm2_conf = "{self._hsm_state / "softhsm" / "softhsm2.conf"}"',
            f'user_pin_file = "{self._hsm_state / "hsm" / "user-pin"}"',
            "[server]",
            'listen = "127.0.0.1:0"  # a free port: the log says which',
            "[http]",
            'listen = "127.0.0.1:0"',
            "[csc]",
            'listen = "127.0.0.1:0"',
            *([f'public_url = "{self.csc_url}"'] if self.csc_url else []),
            "[database]",
            f'url = "{self._database_url}"',
            "pool_size = 4",
            "max_overflow = 4",
            "[pades]",
            f'spool_dir = "{self._spool}"  # prepared documents wait here for any node',
        ]
        if self.ca_url:
            lines += ["[ca]", f'base_url = "{self.ca_url}"']
        if balancer_sha256:
            lines += ["[tls]", f'balancer_cert_sha256 = "{balancer_sha256}"']
        self.config_file.write_text("\n".join(lines) + "\n")

    def environ(self, **extra: str) -> dict[str, str]:
        return _clean_environ(SIGNSERVER_CONFIG=str(self.config_file), **extra)

    def start(self) -> "Node":
        """Start `signserver serve` and wait until every worker serves.

        Raises: RuntimeError: it stopped or did not serve in time (with its log).
        """
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        before = {front: len(re.findall(pattern, text)) for front, pattern in FRONT_LINES.items()}  # started again
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen([str(SIGNSERVER), "serve", "--workers", str(self.workers)],
                                            env=self.environ(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        _remember(self.state.parent, self.process)
        # Each worker starts its fronts in this order: gRPC, CSC, the CA's endpoints.
        ports = {front: int(_wait_for(pattern, self.log_path, self.process, count=before[front] + self.workers)[-1])
                 for front, pattern in FRONT_LINES.items()}
        self.port, self.csc_port, self.http_port = ports["grpc"], ports["csc"], ports["http"]
        return self

    def worker_pids(self) -> list[int]:
        """The pids of the workers that reported serving, oldest first (restarted ones too)."""
        return [int(p) for p in re.findall(r"worker \d+ \(pid (\d+)\) serving on", self.log_path.read_text(errors="replace"))]

    def stop(self) -> None:
        """SIGTERM: the workers drain their calls and the background lease is released."""
        _end(self.process)

    def kill(self) -> None:
        """SIGKILL to the whole node, as when its machine dies: nothing is released."""
        _end(self.process, first=signal.SIGKILL)

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """`signserver ARGS` with this node's configuration."""
        return subprocess.run([str(SIGNSERVER), *args], env=self.environ(**env), capture_output=True, text=True,
                              timeout=180)


def issue_balancer_certificates(config_file: Path, out: Path) -> str:
    """In a process of its own (it logs in to the token): the first start's set-up (schema, master
    key, CA) and the balancer's two certificates from this CA: a TLS server certificate for
    localhost, presented to clients, and a client certificate, presented to the nodes. Returns the
    SHA-256 of the latter (the nodes' [tls] balancer_cert_sha256).

    Raises: RuntimeError: the set-up failed (with its output).
    """
    done = subprocess.run([sys.executable, __file__, "balancer-certificates", str(config_file), str(out)],
                          env=_clean_environ(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the first start's set-up failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["balancer_cert_sha256"]


def _balancer_certificates(config_file: Path, out: Path) -> None:
    """The work of :func:`issue_balancer_certificates`, in its own process."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from signserver.accounts.applications import certificate_fingerprint
    from signserver.config import load_config
    from signserver.files import write_private_key
    from signserver.grpc_api.server import bootstrap
    from signserver.service import SignService

    config = load_config(config_file)
    service = SignService.from_config(config)
    try:
        service.prepare_database()
        bootstrap(config, service)
        chain = service.ca.chain()  # the issuing CA, then the root
        out.mkdir(parents=True, exist_ok=True)
        issued = {}
        for kind, profile, names in (("server", "tls-server", dict(dns_names=("localhost",), ip_addresses=("127.0.0.1",))),
                                     ("upstream", "client-asp", {})):
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = service.ca.issue_service_certificate(profile, f"signserver balancer ({kind})", key.public_key(),
                                                               "operator:cluster", **names).certificate
            write_private_key(out / f"{kind}-key.pem", key)
            (out / f"{kind}.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in [certificate, chain[0]]))
            issued[kind] = certificate
        (out / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain))
        print(json.dumps({"balancer_cert_sha256": certificate_fingerprint(issued["upstream"])}))
    finally:
        service.close()


NGINX_CONFIG = """\
# The cluster's load balancer (written by scripts/cluster.py).
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
{user}
events {{ worker_connections 1024; }}

http {{
    # Which node answered each call: upstream=127.0.0.1:PORT.
    log_format balanced '$remote_addr [$time_local] "$request" $status upstream=$upstream_addr';
    access_log {folder}/access.log balanced;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;

    # Towards clients, on the TLS fronts (gRPC, CSC): this server certificate, and a client
    # certificate from this CA, as a node would ask.
    ssl_certificate {folder}/server.pem;
    ssl_certificate_key {folder}/server-key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate {folder}/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    # Documents are streamed through; the nodes bound them (pades.max_document_mb, csc limits).
    client_max_body_size 0;

    upstream signserver_nodes {{
{grpc_servers}
        keepalive 16;
    }}
    upstream signserver_csc {{
{csc_servers}
        keepalive 16;
        # Below the nodes' [http] request_timeout_seconds (10 s), which closes a quiet connection:
        # nginx lets go of an idle one first rather than send a request down a closing one.
        keepalive_timeout 5s;
    }}
    upstream signserver_ca {{
{http_servers}
        keepalive 16;
        keepalive_timeout 5s;
    }}

    server {{
        listen {listen} ssl http2;
        grpc_read_timeout 300s;
        grpc_send_timeout 300s;

        location / {{
            grpc_pass grpcs://signserver_nodes;
            # Towards the nodes: mutual TLS with the balancer's own client certificate, the one
            # the nodes' [tls] balancer_cert_sha256 names.
            grpc_ssl_certificate {folder}/upstream.pem;
            grpc_ssl_certificate_key {folder}/upstream-key.pem;
            grpc_ssl_trusted_certificate {folder}/ca.pem;
            grpc_ssl_verify on;
            grpc_ssl_name localhost;
            grpc_ssl_protocols TLSv1.2 TLSv1.3;
            # The client's verified certificate (URL-encoded PEM). Set here, it replaces any
            # x-client-cert a client sent; empty (no certificate), it is not sent at all.
            grpc_set_header x-client-cert $ssl_client_escaped_cert;
            # A node that refuses connections (stopped, dead) is skipped for the next one.
            grpc_next_upstream error timeout;
        }}
    }}

    server {{
        # The CSC API.
        listen {csc_listen} ssl;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;

        location / {{
            proxy_pass https://signserver_csc;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # As for gRPC: mutual TLS towards the nodes, and the client's certificate forwarded
            # (replacing any X-Client-Cert a client sent; not sent at all when empty).
            proxy_ssl_certificate {folder}/upstream.pem;
            proxy_ssl_certificate_key {folder}/upstream-key.pem;
            proxy_ssl_trusted_certificate {folder}/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_session_reuse on;
            proxy_set_header X-Client-Cert $ssl_client_escaped_cert;
            # Bodies pass as they arrive and answers as they leave (the nodes bound and time them).
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}

    server {{
        # The CA's endpoints: CRLs, OCSP, time-stamps, CA certificates, over plain HTTP.
        listen {http_listen};

        location / {{
            proxy_pass http://signserver_ca;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


class Balancer:
    """nginx with :data:`NGINX_CONFIG`, in ``folder`` (which holds its certificates): gRPC on
    ``listen``, the CSC API on ``csc_listen``, the CA's endpoints on ``http_listen``, each
    balanced over the nodes' ports of that front."""

    def __init__(self, folder: Path, listen: str, nodes: list["Node"], csc_listen: str, http_listen: str,
                 reservations: PortReservations | None = None):
        self.folder = folder.resolve()
        self.listen = listen
        self.csc_listen = csc_listen
        self.http_listen = http_listen
        self._reservations = reservations or PortReservations()
        self.port, self.csc_port, self.http_port = (_port(a) for a in (self.listen, self.csc_listen, self.http_listen))
        self._nodes = nodes
        self.process: subprocess.Popen | None = None

    def start(self) -> "Balancer":
        """Raises: SystemExit: nginx is not installed; RuntimeError: it did not start (with its log)."""
        nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
        if nginx is None:
            raise SystemExit("nginx is not installed (Debian: apt-get install nginx; make installs it)")
        worker = _unprivileged_user("www-data", "nobody")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.folder / "tmp" / sub).mkdir(parents=True, exist_ok=True)
            if worker is not None:
                os.chown(self.folder / "tmp" / sub, worker.pw_uid, worker.pw_gid)

        def servers(ports) -> str:
            return "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
        user = f"user {worker.pw_name} {grp.getgrgid(worker.pw_gid).gr_name};" if worker is not None else ""
        (self.folder / "nginx.conf").write_text(NGINX_CONFIG.format(
            folder=self.folder, user=user, listen=self.listen, csc_listen=self.csc_listen, http_listen=self.http_listen,
            grpc_servers=servers(n.port for n in self._nodes), csc_servers=servers(n.csc_port for n in self._nodes),
            http_servers=servers(n.http_port for n in self._nodes)))
        log, pid_file = self.folder / "error.log", self.folder / "nginx.pid"
        pid_file.unlink(missing_ok=True)
        self._reservations.release()
        self.process = subprocess.Popen([nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                                         "-e", str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=open(self.folder / "nginx.out", "w"), start_new_session=True)
        _remember(self.folder.parent, self.process)
        deadline = time.monotonic() + 30
        # nginx writes its pid file once it has bound every port: before that, a connection that
        # succeeds may have reached something else on the port.
        while not (pid_file.exists() and all(self._listening(port) for port in (self.port, self.csc_port, self.http_port))):
            if self.process.poll() is not None or time.monotonic() > deadline:
                out = (self.folder / "nginx.out").read_text() + (log.read_text() if log.exists() else "")
                raise RuntimeError(f"nginx did not start:\n{out[-3000:]}")
            time.sleep(0.1)
        return self

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        _end(self.process, first=signal.SIGQUIT)  # graceful: calls in flight finish


class Cluster:
    """PostgreSQL (unless given a database), two nodes and the balancer, started in that order.
    The balancer's addresses (free ports by default): ``listen`` for gRPC, ``csc_listen`` for the
    CSC API, ``http_listen`` for the CA's endpoints."""

    def __init__(self, folder: Path, listen: str | None = None, workers: int = 2, database_url: str | None = None,
                 hsm_state: Path | None = None, csc_listen: str | None = None, http_listen: str | None = None):
        self.folder = folder.resolve()
        self._reservations = PortReservations()
        self.listen = listen or self._reservations.address()
        self.csc_listen = csc_listen or self._reservations.address()
        self.http_listen = http_listen or self._reservations.address()
        self.workers = workers
        self.database_url = database_url
        self.hsm_state = hsm_state
        self.postgres: Postgres | None = None
        self.nodes: list[Node] = []
        self.balancer: Balancer | None = None

    def start(self) -> "Cluster":
        """Raises: SystemExit (a tool is missing), RuntimeError (a step failed, with its output)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.hsm_state is None:
            self.hsm_state = self.folder / "hsm"
            done = subprocess.run([str(ROOT / "softhsm-setup" / "softhsm-setup"), str(self.hsm_state)],
                                  capture_output=True, text=True, env=_clean_environ(SIGNSERVER=str(SIGNSERVER)))
            if done.returncode != 0:
                raise RuntimeError(f"softhsm-setup failed: {done.stderr.strip()}")
        if self.database_url is None:
            self.postgres = Postgres(self.folder / "postgres")
            self.database_url = self.postgres.start()
        spool = self.folder / "spool"
        self.nodes = [Node(name, self.folder, self.hsm_state, self.database_url, spool, self.workers,
                           ca_url=f"http://localhost:{_port(self.http_listen)}",
                           csc_url=f"https://localhost:{_port(self.csc_listen)}")
                      for name in ("node-a", "node-b")]
        first = self.nodes[0]
        first.write_config(balancer_sha256=None)
        fingerprint = issue_balancer_certificates(first.config_file, self.folder / "balancer")
        for node in self.nodes:  # node A, then node B: never two first starts at once
            node.write_config(balancer_sha256=fingerprint)
            node.start()
        self.balancer = Balancer(self.folder / "balancer", self.listen, self.nodes, self.csc_listen,
                                 self.http_listen, self._reservations).start()

    @property
    def ca_file(self) -> Path:
        return self.folder / "balancer" / "ca.pem"

    def stop(self) -> None:
        """Balancer, nodes, PostgreSQL: each stopped even if another failed to."""
        self._reservations.release()
        if self.balancer is not None:
            self.balancer.stop()
        for node in reversed(self.nodes):
            node.stop()
        if self.postgres is not None:
            self.postgres.stop()


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "balancer-certificates":
        _balancer_certificates(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "var" / "cluster")
    parser.add_argument("--listen", default=os.environ.get("CLUSTER_LISTEN", "127.0.0.1:50050"),
                        help="the balancer's address (default 127.0.0.1:50050)")
    parser.add_argument("--csc-listen", default=os.environ.get("CLUSTER_CSC_LISTEN", "127.0.0.1:50443"),
                        help="the balancer's address for the CSC API (default 127.0.0.1:50443)")
    parser.add_argument("--http-listen", default=os.environ.get("CLUSTER_HTTP_LISTEN", "127.0.0.1:50080"),
                        help="the balancer's address for the CA's endpoints (default 127.0.0.1:50080)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per node (default 2)")
    args = parser.parse_args()
    if args.folder.exists():
        _end_leftovers(args.folder)
        shutil.rmtree(args.folder)
    cluster = Cluster(args.folder, args.listen, args.workers, csc_listen=args.csc_listen, http_listen=args.http_listen)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"starting PostgreSQL, node A, node B and nginx in {args.folder} ...", flush=True)
        cluster.start()
        demo = cluster.nodes[0].cli("ca", "issue-client", "--role", "asp", "cluster-demo",
                                    "--out-dir", str(args.folder / "clients"))
        for node in cluster.nodes:
            print(f"  {node.name}: gRPC 127.0.0.1:{node.port}, CSC https://127.0.0.1:{node.csc_port}/csc/v2/, "
                  f"CA http://127.0.0.1:{node.http_port}/ (workers {node.worker_pids()}, log {node.log_path})")
        print(f"  PostgreSQL: {cluster.database_url}")
        balancer = cluster.balancer
        print(f"\nbalancer (nginx, log {balancer.folder / 'access.log'}):")
        print(f"  gRPC over mutual TLS:       localhost:{balancer.port}")
        print(f"  CSC API over mutual TLS:    https://localhost:{balancer.csc_port}/csc/v2/")
        print(f"  CRLs, OCSP, time-stamps, CA certificates: http://localhost:{balancer.http_port}/")
        print(f"  trust {cluster.ca_file}")
        if demo.returncode == 0:
            print(f"  a client certificate of application cluster-demo: {cluster.folder / 'clients' / 'cluster-demo.pem'} "
                  f"(key beside it)")
        print(f"  more: SIGNSERVER_CONFIG={cluster.nodes[0].config_file} {SIGNSERVER} ca issue-client --role asp NAME")
        print("Ctrl-C stops everything.", flush=True)
        while all(node.process.poll() is None for node in cluster.nodes) and cluster.balancer.process.poll() is None:
            time.sleep(0.5)
        print("a node or the balancer stopped; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except RuntimeError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
