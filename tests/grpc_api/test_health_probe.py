"""The health service follows the probe of the HSM: a probe that fails in a way nobody foresaw
says NOT_SERVING (a balancer must stop sending calls to a worker that cannot reach its HSM), is
logged once with its traceback, and the service is SERVING again once a probe passes."""

from __future__ import annotations

import logging
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from signserver.grpc_api.server import GrpcServer
from tests.grpc_api.conftest import ServerThread

HEALTH_LOGGER = "signserver.grpc_api.health"


class ProbingServer(ServerThread):
    """A ServerThread without background work: only the health probe reaches the HSM."""

    def __init__(self, config, service):
        super().__init__(config, service, health_interval=0.1)
        self._server = GrpcServer(self.config, service, health_interval=0.1, background=False)


def status(server: ProbingServer) -> str:
    with server.channel() as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def wait_for(server: ProbingServer, wanted: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    seen = status(server)
    while seen != wanted:
        assert time.monotonic() < deadline, f"still {seen}, not {wanted}"
        time.sleep(0.05)
        seen = status(server)


def test_a_probe_failing_unexpectedly_says_not_serving_until_a_probe_passes(config, fresh_service, caplog,
                                                                            monkeypatch):
    # Every failure the HSM and the PIN guard can cause is one of signserver's errors, which the
    # probe reports as the HSM not answering; a failure outside them is made here, around the
    # real probe, as a defect of a later version would make it.
    broken = {"now": False}
    real_health = fresh_service.health

    def health():
        if broken["now"]:
            raise RuntimeError("a defect in the probe")
        return real_health()
    monkeypatch.setattr(fresh_service, "health", health)
    with ProbingServer(config, fresh_service) as server, caplog.at_level(logging.INFO, logger=HEALTH_LOGGER):
        wait_for(server, "SERVING")
        broken["now"] = True
        wait_for(server, "NOT_SERVING")
        time.sleep(0.5)  # several more probes fail the same way
        assert status(server) == "NOT_SERVING"
        broken["now"] = False
        wait_for(server, "SERVING")
    failures = [record for record in caplog.records if record.name == HEALTH_LOGGER and record.levelno >= logging.ERROR]
    assert len(failures) == 1, [record.getMessage() for record in failures]
    assert "NOT_SERVING" in failures[0].getMessage() and failures[0].exc_info is not None
    assert any(record.name == HEALTH_LOGGER and "SERVING" in record.getMessage() and record.levelno == logging.INFO
               and record.created > failures[0].created for record in caplog.records)
