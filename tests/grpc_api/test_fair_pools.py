"""One application's flood of password checks does not refuse another application's calls: the
worker's pools start waiting calls one application after another, and refuse one application
beyond its share of the waiting places (signserver/blocking_calls.py, calling_for)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import uuid
from dataclasses import replace

import grpc

from signserver.clock import SystemClock
from signserver.config import ServerConfig
from signserver.v1 import signing_pb2, signing_pb2_grpc
from tests.conftest import PASSWORD, enrol, production_costs, service_with
from tests.grpc_api.conftest import ServerThread

FLOOD = 600  # well past what the accounts pool lets wait (4 threads + 256)


def test_a_flood_of_logins_from_one_application_leaves_another_its_turn(config, tmp_path):
    # The default argon2id (about 25 ms per check), so that the flood outlasts the other's call;
    # and a lockout threshold the flood's wrong names never reach.
    costly = production_costs(replace(config, server=ServerConfig("127.0.0.1:0", True), state_dir=tmp_path))
    service = service_with(costly, tmp_path / "fair.db", SystemClock(),
                           accounts=replace(costly.accounts, lock_threshold=1000))
    service.packages.ensure_master()
    holder, _ = enrol(service)
    _, flooder_key = service.applications.create("flooder", otp_required=False)
    _, other_key = service.applications.create("other", otp_required=False)
    digest = hashlib.sha256(b"fair").digest()

    async def main() -> tuple[str, collections.Counter]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = signing_pb2_grpc.SigningServiceStub(channel)

            async def authorize(key: str, account: str, password: str) -> str:
                try:
                    await stub.Authorize(signing_pb2.AuthorizeRequest(
                        account=account, password=password, hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256,
                        digests=[digest]), metadata=(("x-api-key", key),), timeout=120)
                    return "OK"
                except grpc.aio.AioRpcError as refused:
                    return refused.code().name

            flood = [asyncio.create_task(authorize(flooder_key, f"nobody-{uuid.uuid4().hex[:10]}", "Wrong-pass-123"))
                     for _ in range(FLOOD)]
            await asyncio.sleep(0.5)  # the flood holds the pool
            other = await authorize(other_key, holder.account.username, PASSWORD)
            return other, collections.Counter(await asyncio.gather(*flood))

    with ServerThread(costly, service) as server:
        other, flooded = asyncio.run(main())
    assert other == "OK", (other, flooded)
    # The flood itself: its share checked (each a wrong factor), the rest refused as busy.
    assert set(flooded) == {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"} and flooded["UNAUTHENTICATED"] < FLOOD, flooded
