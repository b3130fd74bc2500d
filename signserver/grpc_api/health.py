"""The standard gRPC health service, SERVING only while the HSM answers."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health
from grpc_health.v1 import health_pb2

from signserver.blocking_calls import BlockingCalls
from signserver.errors import ServerBusy
from signserver.service import SignService

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# What the last probe found: the HSM answered, it did not, or the probe itself failed.
_SERVING, _HSM_DOWN, _PROBE_FAILED = "serving", "hsm-down", "probe-failed"


class HsmHealthReporter:
    """Probes the HSM at an interval and sets the status of the server ("") and of each service."""

    def __init__(self, service: SignService, hsm: BlockingCalls, service_names: list[str],
                 interval: float = 5.0):
        self.servicer = health.aio.HealthServicer()
        self._service = service
        self._hsm = hsm
        self._names = ["", *service_names]
        self._interval = interval
        self._state: str | None = None  # _SERVING, _HSM_DOWN or _PROBE_FAILED: what was last published
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Set every status to NOT_SERVING, probe once, then keep probing in the background."""
        for name in self._names:
            await self.servicer.set(name, NOT_SERVING)
        await self.probe()
        self._task = asyncio.create_task(self._loop(), name="hsm-health")

    async def probe(self) -> bool:
        """Probe the HSM now and publish the result: NOT_SERVING when the HSM does not answer,
        and also when the probe itself fails in a way nobody foresaw (the worker cannot tell
        whether its HSM answers). Each change is logged once, not at every probe.

        Raises: asyncio.CancelledError only.
        """
        try:
            result = await self._hsm.run(self._service.health)
        except ServerBusy as exc:
            # The HSM's pool is full: the HSM is busy, not gone. The last status stands.
            log.info("health probe not run: %s", exc)
            return self._state == _SERVING
        except Exception:  # the reporter must outlive any single failed probe
            if self._state != _PROBE_FAILED:
                log.exception("health probe failed unexpectedly: NOT_SERVING until a probe passes")
            await self._publish(_PROBE_FAILED)
            return False
        if result.serving and self._state != _SERVING:
            log.info("HSM answers: SERVING")
        elif not result.serving and self._state != _HSM_DOWN:
            log.warning("HSM does not answer: NOT_SERVING (%s)", result.detail)
        await self._publish(_SERVING if result.serving else _HSM_DOWN)
        return result.serving

    async def _publish(self, state: str) -> None:
        self._state = state
        for name in self._names:
            await self.servicer.set(name, SERVING if state == _SERVING else NOT_SERVING)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.servicer.enter_graceful_shutdown()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.probe()
