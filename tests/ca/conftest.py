"""One initialised CA (keys in the test token) shared by the CA tests of a module."""

from __future__ import annotations

import datetime
import secrets

import pytest

from signserver.accounts.repository import get_account
from signserver.ca import repository as repo
from signserver.ca.repository import IssuedCertificate
from signserver.clock import ManualClock
from tests.conftest import service_with, service_with_ca


def certificates_of(service, username: str | None = None, expiring_within_days: int | None = None
                    ) -> list[IssuedCertificate]:
    """The certificates of an account (or all), optionally only valid ones expiring within N days,
    as the repository reads them in one query: what a listing's pages must add up to, read
    otherwise than they are."""
    now = service.clock.now()
    with service.database.read() as conn:
        account_id = get_account(conn, username, now).id if username else None
        before = now + datetime.timedelta(days=expiring_within_days) if expiring_within_days is not None else None
        return repo.list_certificates(conn, now, account_id=account_id, expiring_before=before)


@pytest.fixture(scope="module")
def ca_clock() -> ManualClock:
    # Starts at the real time: OpenSSL checks OCSP responses and time-stamps against its own clock.
    return ManualClock(datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0))


@pytest.fixture(scope="module")
def ca_service(config, tmp_path_factory, ca_clock):
    return service_with_ca(config, tmp_path_factory.mktemp("ca") / "signserver.db", ca_clock)


def own_ca(config, database, clock):
    """A service whose CA is set up on keys of its own. service_with_ca's copies share their CA's
    token keys, as a restored backup would: a test whose CA removes a key it superseded (the OCSP
    responder's or the TSA's, once their grace has passed) would take it from the other copies."""
    service = service_with(config, database, clock)
    service.ca.initialise("operator:test")
    return service


MUTATING_CALLS = frozenset({"CreateAccount", "IssueCertificate", "RenewCertificate", "RevokeCertificate",
                            "UnlockAccount"})


class StampedStub:
    """A CertificateService stub that gives each change a fresh nonce and the clock's time, as
    CertificateClient does, unless the request carries its own (the tests of replays do)."""

    def __init__(self, stub, clock):
        self._stub = stub
        self._clock = clock

    def __getattr__(self, name: str):
        rpc = getattr(self._stub, name)
        if name not in MUTATING_CALLS:
            return rpc

        def call(request, **kwargs):
            stamp(request, self._clock)
            return rpc(request, **kwargs)
        return call


def stamp(request, clock):
    """Give ``request`` a fresh nonce and the clock's time where it has none; returns it."""
    if not request.nonce:
        request.nonce = secrets.token_urlsafe(24)
    if not request.HasField("requested_at"):
        request.requested_at.FromDatetime(clock.now().astimezone(datetime.timezone.utc).replace(tzinfo=None))
    return request
