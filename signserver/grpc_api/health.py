"""The standard gRPC health service, SERVING only while the HSM answers."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health
from grpc_health.v1 import health_pb2

from signserver.blocking_calls import BlockingCalls
from signserver.service import SignService

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HsmHealthReporter:
    """Probes the HSM at an interval and sets the status of the server ("") and of each service."""

    def __init__(self, service: SignService, hsm: BlockingCalls, service_names: list[str],
                 interval: float = 5.0):
        self.servicer = health.aio.HealthServicer()
        self._service = service
        self._hsm = hsm
        self._names = ["", *service_names]
        self._interval = interval
        self._serving: bool | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Set every status to NOT_SERVING, probe once, then keep probing in the background."""
        for name in self._names:
            await self.servicer.set(name, NOT_SERVING)
        await self.probe()
        self._task = asyncio.create_task(self._loop(), name="hsm-health")

    async def probe(self) -> bool:
        """Probe the HSM now and publish the result."""
        result = await self._hsm.run(self._service.health)
        if result.serving != self._serving:
            if result.serving:
                log.info("HSM answers: SERVING")
            else:
                log.warning("HSM does not answer: NOT_SERVING (%s)", result.detail)
            self._serving = result.serving
        for name in self._names:
            await self.servicer.set(name, SERVING if result.serving else NOT_SERVING)
        return result.serving

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.servicer.enter_graceful_shutdown()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.probe()
            except Exception:  # the reporter must outlive any single failed probe
                log.exception("health probe failed")
