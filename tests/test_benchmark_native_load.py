"""The native load generator of the benchmarks, against a real two-worker server: what it counts
is what the server signed, and a refusal or a caller short of requests ends its run in an error.

What the benchmark times is never asserted; what it builds its figures on is.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from benchmarks import load
from benchmarks.native_load import run_native_load, sign_hash_requests
from signserver.store.database import Database
from signserver.store.schema import activation_token_digests
from tests.grpc_api.serve_process import ServeProcess
from tests.grpc_api.test_workers import PASSWORD, application, holder

# What the load generator counts does not depend on the server's store.
pytestmark = pytest.mark.one_store

CALLERS = 3


@pytest.fixture(scope="module")
def served(state_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("native-load")
    server = ServeProcess(state_dir, folder, workers=2,
                          SIGNSERVER_AUTHORIZATION_MAX_SIGNATURES=str(load.TOKEN_DIGESTS)).start()
    application(server, "native-app")  # its client certificate: server.client_files
    target = load.Target(f"localhost:{server.port}",
                         tuple(path.read_bytes() for path in (folder / "ca.pem", *server.client_files[::-1])),
                         "native.holder", PASSWORD, holder(server, "native.holder"), workers=2)
    yield server, target
    server.stop()


def used_digests(server: ServeProcess) -> int:
    database = Database(server.env["SIGNSERVER_DATABASE_URL"])
    try:
        with database.read() as conn:
            return conn.execute(select(func.count()).select_from(activation_token_digests)
                                .where(activation_token_digests.c.used)).scalar_one()
    finally:
        database.dispose()


def requests_for(target: load.Target, name: str, calls: int, batch: int = 1) -> list[bytes]:
    return sign_hash_requests(target, batch, calls, name, algorithm="ecdsa-sha256")


def test_every_call_it_counts_is_a_signature_the_server_made(served):
    server, target = served
    before = used_digests(server)
    requests = [requests_for(target, f"counted-{caller}", load.TOKEN_DIGESTS // 2, batch=2)
                for caller in range(CALLERS)]

    result = run_native_load("counted", target, requests, seconds=1.0, signatures_per_call=2)

    assert result.operations > 0
    assert result.operations == used_digests(server) - before  # two digests a call, each call counted
    assert len(result.latencies) == result.operations // 2
    assert all(0 < latency < 60 for latency in result.latencies)
    assert result.client_cpu > 0


def test_a_refused_call_ends_the_run_in_an_error_naming_it(served):
    server, target = served
    twice = requests_for(target, "twice", 3000)  # two callers send the same: one of each pair is refused

    with pytest.raises(RuntimeError, match="calls of the native client were refused: a digest was already signed"):
        run_native_load("twice", target, [twice, twice], seconds=0.5)


def test_a_caller_out_of_requests_before_the_window_closes_ends_the_run_in_an_error(served):
    server, target = served
    with pytest.raises(RuntimeError, match="1 of the native client's callers ran out of requests"):
        run_native_load("short", target, [requests_for(target, "few", 3), requests_for(target, "many", 3000)],
                        seconds=1.0)
