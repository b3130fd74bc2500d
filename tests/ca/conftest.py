"""One initialised CA (keys in the test token) shared by the CA tests of a module."""

from __future__ import annotations

import datetime

import pytest

from signserver.clock import ManualClock
from tests.conftest import service_with


@pytest.fixture(scope="module")
def ca_clock() -> ManualClock:
    # Starts at the real time: OpenSSL checks OCSP responses and time-stamps against its own clock.
    return ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))


@pytest.fixture(scope="module")
def ca_service(config, tmp_path_factory, ca_clock):
    service = service_with(config, tmp_path_factory.mktemp("ca") / "signserver.db", ca_clock)
    service.ca.initialise(operator="operator:test")
    return service
