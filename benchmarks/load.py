"""A multi-process load generator: client processes, each with threads, each thread its own
stream of calls, all measuring over the same window; latencies of every call are kept."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass

import grpc

from signserver.v1 import signing_pb2, signing_pb2_grpc

_fork = multiprocessing.get_context("fork")
TOKEN_DIGESTS = 3000


@dataclass
class LoadResult:
    name: str
    operations: int  # signatures (or calls, for Authorize)
    seconds: float
    latencies: list[float]  # per call

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


@dataclass(frozen=True)
class Target:
    address: str
    credentials: tuple[bytes, bytes, bytes]  # root, key, certificate chain (PEM)
    account: str
    password: str
    credential: str

    def channel(self) -> grpc.Channel:
        root, key, chain = self.credentials
        return grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root, key, chain))


def _authorize(stub, target: Target, digests: list[bytes]) -> str:
    return stub.Authorize(signing_pb2.AuthorizeRequest(
        account=target.account, password=target.password, credential_id=target.credential,
        hash_algorithm=signing_pb2.HASH_ALGORITHM_SHA256, digests=digests), timeout=120).activation_token


def _client_process(target: Target, kind: str, batch: int, threads: int, start_at: float, seconds: float,
                    queue) -> None:
    channel = target.channel()  # made after the fork: gRPC objects never cross it
    stub = signing_pb2_grpc.SigningServiceStub(channel)
    results: list[tuple[int, list[float]]] = []
    lock = threading.Lock()

    def signer(index: int) -> None:
        prefix = f"{os.getpid()}-{index}-"
        digests = [hashlib.sha256((prefix + str(i)).encode()).digest() for i in range(TOKEN_DIGESTS)]
        token = _authorize(stub, target, digests)
        time.sleep(max(0.0, start_at - time.time()))
        done, latencies, position = 0, [], 0
        while time.time() < start_at + seconds:
            if position + batch > len(digests):  # rare: a fresh token (inside the window, counted)
                digests = [hashlib.sha256((prefix + f"r{done}-{i}").encode()).digest() for i in range(TOKEN_DIGESTS)]
                token, position = _authorize(stub, target, digests), 0
            began = time.perf_counter()
            stub.SignHash(signing_pb2.SignHashRequest(
                credential_id=target.credential, activation_token=token, signature_algorithm="rsa-pkcs1v15-sha256",
                digests=digests[position:position + batch]), timeout=60)
            latencies.append(time.perf_counter() - began)
            position += batch
            done += batch
        with lock:
            results.append((done, latencies))

    def authorizer(index: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        done, latencies = 0, []
        while time.time() < start_at + seconds:
            began = time.perf_counter()
            _authorize(stub, target, [hashlib.sha256(f"{os.getpid()}-{index}-{done}".encode()).digest()])
            latencies.append(time.perf_counter() - began)
            done += 1
        with lock:
            results.append((done, latencies))

    work = signer if kind == "sign" else authorizer
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    channel.close()
    queue.put((sum(d for d, _ in results), [x for _, lat in results for x in lat]))


def run_load(name: str, target: Target, kind: str, concurrency: int, seconds: float, batch: int = 1,
             max_processes: int = 4) -> LoadResult:
    """``concurrency`` callers spread over up to ``max_processes`` client processes."""
    processes = min(concurrency, max_processes)
    per_process = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    queue = _fork.Queue()
    start_at = time.time() + 3 + concurrency * 0.15  # every caller authorised before the window opens
    clients = [_fork.Process(target=_client_process, args=(target, kind, batch, n, start_at, seconds, queue))
               for n in per_process]
    for client in clients:
        client.start()
    gathered = [queue.get(timeout=600) for _ in clients]
    for client in clients:
        client.join()
    return LoadResult(name, sum(g[0] for g in gathered), seconds, [x for g in gathered for x in g[1]])
