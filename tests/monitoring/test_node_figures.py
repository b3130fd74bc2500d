"""What one scrape of a node says, with worker processes and the metrics process as `serve` runs
them: each a process of its own, writing to (or reading) one multiprocess directory.

The background figures (outbox backlog, CRL age) come from the one process of a cluster that holds
the background lease: a figure it stopped reporting (the lease went to another node, or the work
is stuck) must not stay on the node's scrape as if it were current, and a CRL's age is its age at
the scrape. A worker that is starting must not fail the scrape of the others."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from signserver.monitoring.prometheus import MULTIPROCESS_DIRECTORY_VARIABLE
from tests.conftest import ROOT

pytestmark = pytest.mark.one_store  # touches no store

# A worker of the node: reports through the Prometheus meter as a worker of `serve` does, says so,
# then stays alive (its "live" figures stay on the scrape) until its standard input closes.
WORKER = """
import sys
from signserver.monitoring.prometheus import PrometheusMeter
meter = PrometheusMeter(worker={worker})
{reports}
print("reported", flush=True)
sys.stdin.read()
"""

# The node's metrics process, on a free port.
METRICS = """
from signserver.monitoring.prometheus import metrics_socket, serve_metrics
sock = metrics_socket("127.0.0.1:0")
print(sock.getsockname()[1], flush=True)
serve_metrics(sock{options})
"""


def _python(script: str, directory: Path) -> subprocess.Popen:
    env = {**os.environ, MULTIPROCESS_DIRECTORY_VARIABLE: str(directory)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


@pytest.fixture
def node(tmp_path):
    """Starts workers and the metrics process on one directory; stops them all at the end."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    started: list[subprocess.Popen] = []

    class Node:
        path = directory

        def worker(self, index: int, *reports: str) -> subprocess.Popen:
            process = _python(WORKER.format(worker=index, reports="\n".join(reports)), directory)
            started.append(process)
            assert process.stdout.readline().strip() == "reported"
            return process

        def serve_metrics(self, **options) -> None:
            process = _python(METRICS.format(options="".join(f", {k}={v!r}" for k, v in options.items())),
                              directory)
            started.append(process)
            self.port = int(process.stdout.readline())

        def scrape(self) -> dict[tuple[str, tuple], float]:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
                        text = answer.read().decode()
                    break
                except ConnectionRefusedError:  # the metrics process is still starting
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(text) for sample in family.samples}

    yield Node()
    for process in started:
        process.stdin.close()
        try:
            process.terminate()
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


CRL_AGE = ("signserver_crl_age_seconds", (("issuer", "issuing"),))
BACKLOG = ("signserver_outbox_backlog", ())


def test_a_crl_age_is_its_age_at_the_scrape(node):
    node.worker(0, "meter.crl_age('issuing', 100.0)")
    node.serve_metrics()
    time.sleep(2)
    age = node.scrape()[CRL_AGE]
    assert 101.5 <= age < 130, age  # the CRL was 100 s old when reported, two seconds ago


def test_background_figures_no_longer_reported_leave_the_scrape(node):
    # Worker 0 ran the background work, then stopped reporting (another node took the lease); it
    # still serves calls, so its process is live.
    node.worker(0, "meter.outbox_backlog(7)", "meter.crl_age('issuing', 100.0)")
    node.worker(1, "meter.call_finished('grpc', 'SigningService/SignHash', 'OK', 0.002)")
    # Stale after 5 s, not less: the metrics process's start and first scrape take a second or two
    # on a loaded machine, and the reports must still be fresh then.
    node.serve_metrics(stale_after=5.0)
    fresh = node.scrape()
    assert fresh[BACKLOG] == 7 and CRL_AGE in fresh, fresh
    time.sleep(6)
    later = node.scrape()
    assert BACKLOG not in later and CRL_AGE not in later, later
    assert later[("signserver_calls_total", (("front", "grpc"), ("method", "SigningService/SignHash"),
                                             ("status", "OK")))] == 1
    # A process that reports them again is on the scrape again.
    node.worker(2, "meter.outbox_backlog(3)")
    assert node.scrape()[BACKLOG] == 3


def test_a_worker_that_is_starting_does_not_fail_the_scrape(node):
    node.worker(0, "meter.call_finished('grpc', 'SigningService/SignHash', 'OK', 0.002)")
    node.serve_metrics()
    # A worker's figures file as prometheus_client leaves it for an instant when the worker first
    # reports: opened (created empty), not yet sized.
    for kind in ("counter", "histogram", "gauge_livesum", "gauge_liveall", "gauge_livemostrecent"):
        (node.path / f"{kind}_4194303.db").touch()
    samples = node.scrape()
    assert samples[("signserver_calls_total", (("front", "grpc"), ("method", "SigningService/SignHash"),
                                               ("status", "OK")))] == 1


def test_warnings_and_errors_logged_are_counted_by_level_and_logger(node):
    # As `serve` sets a worker up: logging configured, then the meter installed.
    node.worker(0, "import logging",
                "from signserver.monitoring.logs import configure_logging",
                "from signserver.monitoring.meter import install_meter",
                "configure_logging(json_lines=True)",
                "install_meter(meter)",
                "sender = logging.getLogger('signserver.notify.sender')",
                "sender.error('message %d to %s given up', 1, 'holder@example.org')",
                "sender.error('message %d to %s given up', 2, 'other@example.org')",
                "logging.getLogger('signserver.grpc_api.health').warning('HSM does not answer')",
                "logging.getLogger('signserver.calls').info('SigningService/SignHash OK')")
    node.serve_metrics()
    samples = node.scrape()
    counted = {labels: value for (name, labels), value in samples.items() if name == "signserver_log_messages_total"}
    assert counted == {(("level", "error"), ("logger", "signserver.notify.sender")): 2,
                       (("level", "warning"), ("logger", "signserver.grpc_api.health")): 1}, counted


@pytest.mark.parametrize("faster, slower", [
    (0.06, 0.09),  # an Authorize (argon2 about 25 ms, then the HSM) at its usual pace, and slowing
    (0.12, 0.18),  # an Authorize at the end of its usual range (150 ms), and beyond it
    (0.3, 0.4),  # a SignPdf of a few pages, and a slow one
    (0.6, 0.9),  # a SignPdf beyond its usual 500 ms, and much beyond
])
def test_the_call_histogram_tells_apart_the_latencies_an_operator_watches(node, faster, slower):
    node.worker(0, f"meter.call_finished('grpc', 'SigningService/Authorize', 'OK', {faster})",
                f"meter.call_finished('grpc', 'SigningService/Authorize', 'OK', {slower})")
    node.serve_metrics()
    buckets = [value for (name, labels), value in node.scrape().items() if name == "signserver_call_seconds_bucket"]
    assert 1 in buckets, f"{faster} s and {slower} s fall in the same bucket"


def test_refusals_are_summed_over_the_workers_by_their_reason(node):
    """Two reasons under one status are two series, whichever worker refused; a call answered is
    no refusal, and the figure says what it counts."""
    node.worker(0, "meter.call_finished('grpc', 'SigningService/Authorize', 'UNAUTHENTICATED', 0.03, "
                   "'AUTHENTICATION_FAILED')",
                "meter.call_finished('grpc', 'SigningService/Authorize', 'OK', 0.03)")
    node.worker(1, "meter.call_finished('grpc', 'SigningService/Authorize', 'UNAUTHENTICATED', 0.03, "
                   "'AUTHENTICATION_FAILED')",
                "meter.call_finished('grpc', 'SigningService/SignHash', 'UNAUTHENTICATED', 0.001, "
                "'APPLICATION_UNAUTHENTICATED')")
    node.serve_metrics()
    refused = {labels: value for (name, labels), value in node.scrape().items()
               if name == "signserver_refusals_total"}
    grpc = ("front", "grpc")
    assert refused == {(grpc, ("method", "SigningService/Authorize"), ("reason", "AUTHENTICATION_FAILED")): 2,
                       (grpc, ("method", "SigningService/SignHash"), ("reason", "APPLICATION_UNAUTHENTICATED")): 1}, refused
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/metrics", timeout=10) as answer:
        assert "# HELP signserver_refusals_total Calls refused, by front, method and the stable reason" in \
            answer.read().decode()


def test_the_latest_reading_of_a_certificate_end_is_served(node):
    """A certificate replaced by one that ends sooner (an issuing CA recertified, a new TLS
    certificate), read by a worker started since, is not hidden behind the end that a worker
    started earlier read: an alert on the end must see the sooner one."""
    node.worker(0, "meter.certificate_expiry('issuing-ca', 1900000000.0)")
    node.worker(1, "meter.certificate_expiry('issuing-ca', 1800000000.0)")
    node.serve_metrics()
    assert node.scrape()[("signserver_certificate_expiry_timestamp_seconds",
                          (("certificate", "issuing-ca"),))] == 1800000000.0
