"""A call whose client gave up (its deadline passed) before the server got to it changes nothing:
the holder's OTP is not spent, the password not changed, no recovery code replaced or spent."""

from __future__ import annotations

import datetime
import threading
import time

import grpc
import pytest

from signserver.accounts import otp
from signserver.clock import ManualClock
from signserver.v1 import account_pb2, certificate_pb2
from tests.ca.conftest import ca_clock, ca_service, stamp  # noqa: F401  (the fixtures of the RA's server)
from tests.ca.test_certificate_service import create, ra, served  # noqa: F401
from tests.conftest import PASSWORD, enrol, service_with
from tests.grpc_api.conftest import ServerThread
from tests.grpc_api.test_error_details import loop_held, wait_until
from tests.grpc_api.test_signing_api import Client, code_of

GIVE_UP_SECONDS = 0.5
NEW_PASSWORD = "Another-pass-456"
ACCOUNT_THREADS = 4  # WorkerPools.create


@pytest.fixture(scope="module")
def clock():
    return ManualClock(datetime.datetime(2026, 11, 21, 2, 26, 6, tzinfo=datetime.timezone.utc))


@pytest.fixture(scope="module")
def world(config, tmp_path_factory, clock):
    service = service_with(config, tmp_path_factory.mktemp("given-up") / "signserver.db", clock)
    _, api_key = service.applications.create("given-up-app")  # requires the holder's OTP
    with ServerThread(config, service, health_interval=3600) as server, server.channel() as channel:
        client = Client(channel, api_key)
        # Known from now on without a trip to the password pool, so that a call's only wait
        # there is for its own work.
        client.accounts.GetAccountStatus(account_pb2.GetAccountStatusRequest(account="someone"),
                                         metadata=client.metadata, timeout=60)
        yield service, server, client


def given_up(server, call) -> None:
    """Make ``call`` (a function of a timeout, returning a future) so that it is handed to a
    thread of the password pool that is still busy, and let its deadline pass while the server's
    event loop is busy too (as on a loaded worker): the thread takes the call before the loop
    hears that its client gave up."""
    accounts = server._server._accounts
    release, running = threading.Event(), threading.Semaphore(0)

    def occupy() -> None:
        running.release()
        release.wait(30)

    # Straight into the pool's threads, so that the late call is handed over at once and waits
    # in the pool's own queue.
    occupying = [accounts._pool.submit(occupy) for _ in range(ACCOUNT_THREADS)]
    try:
        for _ in occupying:
            assert running.acquire(timeout=10)
        late = call(GIVE_UP_SECONDS)
        wait_until(lambda: not accounts._pool._work_queue.empty(), "the late call handed to the pool")
        with loop_held(server):
            assert code_of(late.result).code() is grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.2)  # the server's deadline, counted from the call's arrival, has passed too
            release.set()
            wait_until(lambda: accounts._pool._work_queue.empty(), "the pool taking the late call")
    finally:
        release.set()
    for done in occupying:
        done.result(10)
    wait_until(lambda: accounts.pending == 0, "the server finishing with the late call")


def test_a_password_change_whose_client_gave_up_spends_no_otp_and_changes_nothing(world, clock):
    service, server, client = world
    created, seed = enrol(service)
    name, code = created.account.username, otp.code_at(seed, clock.now())
    given_up(server, lambda timeout: client.accounts.ChangePassword.future(account_pb2.ChangePasswordRequest(
        account=name, current_password=PASSWORD, new_password=NEW_PASSWORD, confirm_new_password=NEW_PASSWORD,
        otp=code), metadata=client.metadata, timeout=timeout))
    # The OTP is still unspent and the password unchanged: the holder's retry goes through.
    client.accounts.ChangePassword(account_pb2.ChangePasswordRequest(
        account=name, current_password=PASSWORD, new_password=NEW_PASSWORD, confirm_new_password=NEW_PASSWORD,
        otp=code), metadata=client.metadata, timeout=60)


def test_a_recovery_code_replacement_whose_client_gave_up_spends_no_otp(world, clock):
    service, server, client = world
    created, seed = enrol(service)
    name, code = created.account.username, otp.code_at(seed, clock.now())
    given_up(server, lambda timeout: client.accounts.ReplaceRecoveryCode.future(
        account_pb2.ReplaceRecoveryCodeRequest(account=name, password=PASSWORD, otp=code),
        metadata=client.metadata, timeout=timeout))
    replaced = client.accounts.ReplaceRecoveryCode(account_pb2.ReplaceRecoveryCodeRequest(
        account=name, password=PASSWORD, otp=code), metadata=client.metadata, timeout=60)
    assert replaced.recovery_code


def test_an_unlock_whose_client_gave_up_leaves_the_recovery_code_working(served, ra, ca_clock):  # noqa: F811
    created = create(ra, "given-up-unlock")

    def unlock() -> certificate_pb2.UnlockAccountRequest:
        return stamp(certificate_pb2.UnlockAccountRequest(
            account="given-up-unlock", recovery_code=created.recovery_code, new_password="After-unlock-1"), ca_clock)

    given_up(served, lambda timeout: ra._stub.UnlockAccount.future(unlock(), timeout=timeout))
    # The code was not spent for an answer nobody received: the RA's retry gets the new code.
    assert ra._stub.UnlockAccount(unlock(), timeout=60).recovery_code
